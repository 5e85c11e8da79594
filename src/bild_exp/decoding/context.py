"""The settings one ``generate`` call decodes under, built once and passed to every method.

Each method's decode function takes ``(large, small, input_ids, params, context)``: its
own parameters and this shared context, from which it starts its sequence and its runners,
so the set-up (prefix, stop rule, eager or compiled runners) lives here only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from bild_exp.decoding.early_exit import EarlyExit
from bild_exp.decoding.runner import DecoderRunner
from bild_exp.decoding.sampling import Sampler
from bild_exp.decoding.sequence import StopStrings, TokenSequence, start_sequence


@dataclass(frozen=True)
class DecodeContext:
    """What every method shares in one call.

    sampler: greedy or sampling, with the call's seed.
    max_new_tokens: upper bound on generated tokens.
    use_cache: False runs the no-cache reference (every call recomputes the sequence).
    stop_strings: text that ends the output, or None.
    compile_mode: None for the eager path, else the compiled path in that mode
        (:data:`bild_exp.decoding.compiled.COMPILE_MODES`).
    """

    sampler: Sampler
    max_new_tokens: int
    use_cache: bool = True
    stop_strings: StopStrings | None = None
    compile_mode: str | None = None

    def start(self, model: PreTrainedModel, input_ids: torch.Tensor) -> TokenSequence:
        """A fresh sequence holding only ``model``'s decoder prefix."""
        return start_sequence(model, input_ids, self.max_new_tokens, self.stop_strings)

    def lookup_prefix(
        self, model: PreTrainedModel, input_ids: torch.Tensor, sequence: TokenSequence
    ) -> list[int]:
        """What n-gram proposals search before the output: the prompt, i.e. a decoder-only
        model's prefix or an encoder-decoder's source tokens."""
        if model.config.is_encoder_decoder:
            return input_ids[0].tolist()
        return sequence.prompt_ids()

    def runner(
        self, model: PreTrainedModel, input_ids: torch.Tensor, sequence: TokenSequence
    ) -> DecoderRunner:
        """``model``'s runner for this example (compiled: a static cache for the sequence's
        whole buffer)."""
        return DecoderRunner(
            model,
            input_ids,
            self.use_cache,
            static_length=sequence.buffer.shape[1],
            compile_mode=self.compile_mode,
        )

    def runners(
        self,
        large: PreTrainedModel,
        small: PreTrainedModel | EarlyExit,
        input_ids: torch.Tensor,
        sequence: TokenSequence,
    ) -> tuple[DecoderRunner, DecoderRunner]:
        """Runners for both models; an :class:`EarlyExit` small model shares the large one's
        encoder and cache."""
        large_runner = self.runner(large, input_ids, sequence)
        if isinstance(small, EarlyExit):
            shared = DecoderRunner(small.model, input_ids, self.use_cache, share_with=large_runner)
            return large_runner, shared
        return large_runner, self.runner(small, input_ids, sequence)
