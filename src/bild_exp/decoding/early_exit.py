"""BiLD with an early-exit small model (paper Section 4.4): the large model's first layers."""

from __future__ import annotations

from transformers import PreTrainedModel

from bild_exp.decoding.layers import decoder_depth, truncated_model


class EarlyExit:
    """The large model's first ``layers`` decoder layers plus its final norm and head.

    Pass it as ``small`` to :func:`bild_exp.decoding.generate` together with the same
    ``large`` model: the encoder runs once, both share one key/value cache (see
    :mod:`bild_exp.decoding.runner`), and no weight is copied.

        generate("bild", large=model, small=EarlyExit(model, layers=1), input_ids=ids)
    """

    def __init__(self, large: PreTrainedModel, layers: int):
        self.large = large
        self.layers = layers
        self.model = truncated_model(large, layers)  # checks 1 <= layers < depth

    @property
    def config(self):
        return self.model.config

    @property
    def device(self):
        return self.large.device

    def __repr__(self) -> str:
        return f"EarlyExit({type(self.large).__name__}, layers={self.layers}/{decoder_depth(self.large)})"
