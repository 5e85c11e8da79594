"""Decoding and timing: one sweep end to end, timed decoding with configurations
interleaved, timing blocks, modelled latency, long runs and placement."""
