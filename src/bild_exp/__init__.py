"""bild_exp: Big Little Decoder (BiLD) research harness."""
