"""Per-example decoding state: the shared token sequence and each model's cached decoder.

The sequence is the decoder's whole input: the prefix (decoder start token for
encoder-decoders, the prompt for decoder-only models) followed by generated tokens.
Each model keeps a Hugging Face ``Cache`` holding its first ``n_cached`` positions;
feeding it means running the decoder on ``sequence[n_cached:]``; rollback means
cropping the cache (:func:`crop_cache`, the one place that does it).

An early-exit small model (the large model's first ``k`` decoder layers) shares the large
runner's encoder output and cache: its steps fill layers ``< k``; a large pass first drops
what only the small model wrote there, then runs every layer over the pending tokens, so
the skipped layers get real keys and values and the shared layers stay consistent.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache

from bild_exp.decoding.compiled import compiled_model, set_cached_length
from bild_exp.decoding.layers import decoder_depth


def self_attention_layers(cache: Cache) -> list:
    """The per-layer self-attention caches (cross-attention keys never need cropping)."""
    if isinstance(cache, EncoderDecoderCache):
        cache = cache.self_attention_cache
    return cache.layers


def crop_cache(cache: Cache, keep_length: int) -> None:
    """Crop every layer of a Hugging Face cache in place to at most ``keep_length`` positions.

    Layer by layer, because with an early-exit small model the layers hold different lengths.
    """
    for layer in self_attention_layers(cache):
        n_remove = layer.get_seq_length() - keep_length
        if n_remove > 0:
            layer.crop(-n_remove)  # a negative count: positions to drop


def empty_cache(model: PreTrainedModel) -> Cache:
    """A cache that grows one layer at a time, for ``model.generate(cache=...)``.

    HF generate otherwise pre-sizes the cache from ``num_hidden_layers``, which T5 maps to
    the *encoder* depth: a model with more decoder than encoder layers then fails.
    """
    if model.config.is_encoder_decoder:
        return EncoderDecoderCache(DynamicCache(), DynamicCache())
    return DynamicCache()


@dataclass
class CallRecord:
    """Shape of one decoder forward call (for cost models): tokens fed and positions cached before."""

    n_fed: int
    n_cached_before: int


class DecoderRunner:
    """One model's decoder for one example: runs its encoder once, then feeds new tokens.

    With ``use_cache=False`` every call recomputes the whole sequence from scratch:
    the slow reference the cached path is tested against. ``share_with`` makes this
    runner use another runner's encoder output and cache (an early-exit small model
    inside its large model).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        input_ids: torch.Tensor,
        use_cache: bool = True,
        *,
        share_with: DecoderRunner | None = None,
        static_length: int | None = None,
        compile_mode: str | None = None,
    ):
        self.model = model
        self.use_cache = use_cache
        # The compiled path (compile_mode set): a static cache of at least static_length
        # positions and a compiled forward, shared with every other example; eager runners
        # ignore static_length.
        self.compiled = (
            compiled_model(model, static_length, compile_mode) if compile_mode is not None else None
        )
        self.is_seq2seq = bool(model.config.is_encoder_decoder)
        # Logits of prompt positions predict prompt tokens and are never read: a decoder-only
        # model's head runs only from the prompt's last position on (as HF generate's prefill).
        self.first_needed = 0 if self.is_seq2seq else input_ids.shape[1] - 1
        self.trims_logits = (
            not self.is_seq2seq and "logits_to_keep" in inspect.signature(model.forward).parameters
        )
        self.n_cached = 0
        self.calls: list[CallRecord] = []
        if share_with is None:
            self.encoder_outputs = (
                model.get_encoder()(input_ids=input_ids) if self.is_seq2seq else None
            )
            self.cache: Cache | None = (
                self.compiled.example_cache()
                if self.compiled is not None
                else empty_cache(model)
                if use_cache
                else None
            )
            self.peers: list[DecoderRunner] = [self]
            self.depth: int | None = None
        else:
            self.encoder_outputs, self.cache = share_with.encoder_outputs, share_with.cache
            self.peers = share_with.peers
            self.peers.append(self)
            for peer in self.peers:
                peer.depth = decoder_depth(peer.model)

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        """Feed ``sequence[:, n_cached:]``; return logits ``(n_new, vocab)`` predicting each
        next position (for a decoder-only prompt, only from its last position on: callers
        index from the end)."""
        n_total = sequence.shape[1]
        self.calls.append(CallRecord(n_fed=n_total - self.n_cached, n_cached_before=self.n_cached))
        if self.use_cache:
            if len(self.peers) > 1:  # drop what shallower peers wrote past our own valid length
                crop_cache(self.cache, self.n_cached)
            keep = n_total - max(self.n_cached, self.first_needed)
            tokens = sequence[:, self.n_cached :]
            if self.compiled is not None:
                first = self.n_cached == 0
                logits = self.compiled.run(tokens, self.cache, first, keep, self.encoder_outputs)
            else:
                logits = self._run(tokens, self.cache, keep)
        else:
            logits = self._run(sequence, None)[self.n_cached :]
        self.n_cached = n_total
        for peer in self.peers:  # every layer a shallower peer runs now holds n_total positions
            if peer.depth is not None and peer.depth <= self.depth:
                peer.n_cached = n_total
        return logits

    def _run(self, tokens: torch.Tensor, cache: Cache | None, keep: int = 0) -> torch.Tensor:
        if self.is_seq2seq:
            out = self.model(
                encoder_outputs=self.encoder_outputs,
                decoder_input_ids=tokens,
                cache=cache,
                use_cache=self.use_cache,
            )
        elif self.trims_logits and 0 < keep < tokens.shape[1]:
            out = self.model(input_ids=tokens, cache=cache, use_cache=True, logits_to_keep=keep)
        else:
            out = self.model(input_ids=tokens, cache=cache, use_cache=self.use_cache)
        return out.logits[0]

    def truncate(self, valid_length: int) -> None:
        """Forget every position at or after ``valid_length`` (rollback or rejected drafts).

        A shared cache is cropped in every layer, so peers forget those positions too.
        """
        if all(peer.n_cached <= valid_length for peer in self.peers):
            return  # nothing cached at or after valid_length: skip the per-layer walk
        if self.compiled is not None:
            set_cached_length(self.compiled.cache, valid_length)
        elif self.cache is not None:
            crop_cache(self.cache, valid_length)
        for peer in self.peers:
            peer.n_cached = min(peer.n_cached, valid_length)

    @property
    def n_calls(self) -> int:
        return len(self.calls)
