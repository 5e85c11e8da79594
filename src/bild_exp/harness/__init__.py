"""The experiment harness, one subpackage per concern:

- ``config``: what to run (settings resolved once, the plan of runs, checks, dry run);
- ``run``: decoding and timing (the pipeline, timed decoding, timing blocks, modelled
  latency, long runs, placement);
- ``records``: the results store (parquet parts, fingerprint, manifest);
- ``scoring``: quality (cleaned texts, metrics, running model-written code).

Models are loaded by :mod:`bild_exp.models`; summaries, intervals and operating points
live in :mod:`bild_exp.analysis`."""
