"""Loading a model pair and what is done to it at load time: GGUF conversion (``gguf``,
``gguf_parts``), smalls sharing their large model's weights (``shared_weights``), int8/int4
weight-only quantised twins (``weight_only``) and prepacked CPU kernels (``cpu_kernels``),
all chosen by one :class:`bild_exp.models.pair.LoadSettings`. Used by the sweep, the bench
and training; decodes nothing itself."""
