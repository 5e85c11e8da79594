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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache

from bild_exp.decoding.compiled import compiled_model, set_cached_length
from bild_exp.decoding.early_exit import EarlyExit
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
    ):
        self.model = model
        self.use_cache = use_cache
        # The compiled path (generate(..., compile=True)): a static cache of at least
        # static_length positions and a compiled forward, shared with every other example.
        self.compiled = compiled_model(model, static_length) if static_length else None
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


def runner_pair(
    large: PreTrainedModel,
    small: PreTrainedModel | EarlyExit,
    input_ids: torch.Tensor,
    use_cache: bool = True,
    static_length: int | None = None,
) -> tuple[DecoderRunner, DecoderRunner]:
    """Runners for both models; an :class:`EarlyExit` small model shares the large one's
    encoder and cache. ``static_length``: the compiled path (see :class:`DecoderRunner`)."""
    large_runner = DecoderRunner(large, input_ids, use_cache, static_length=static_length)
    if isinstance(small, EarlyExit):
        return large_runner, DecoderRunner(
            small.model, input_ids, use_cache, share_with=large_runner
        )
    return large_runner, DecoderRunner(small, input_ids, use_cache, static_length=static_length)


@dataclass(frozen=True)
class StopStrings:
    """Text that ends an output (e.g. ``"\n"`` for one-line answers), checked on the decoded
    generated tokens only. The output keeps the token that completes the first occurrence
    (as it keeps an EOS); the stored text is cut before it (:meth:`cut`)."""

    strings: tuple[str, ...]
    tokenizer: Any  # decodes generated ids to text (special tokens kept)

    @classmethod
    def of(cls, strings: Sequence[str] | None, tokenizer: Any) -> StopStrings | None:
        return cls(tuple(strings), tokenizer) if strings else None

    def contained(self, tokens: list[int]) -> bool:
        text = self.tokenizer.decode(tokens, skip_special_tokens=False)
        return any(stop in text for stop in self.strings)

    def end(self, tokens: list[int]) -> int | None:
        """The smallest n such that ``tokens[:n]`` contains a stop string, else None."""
        if not tokens or not self.contained(tokens):
            return None
        low, high = 1, len(tokens)  # containment only grows with the prefix: bisect
        while low < high:
            middle = (low + high) // 2
            if self.contained(tokens[:middle]):
                high = middle
            else:
                low = middle + 1
        return low

    def cut(self, text: str) -> str:
        """``text`` up to the first stop string."""
        positions = [text.find(stop) for stop in self.strings if stop in text]
        return text[: min(positions)] if positions else text


@dataclass
class TokenSequence:
    """The decoder input shared by both models, kept on the device, and who wrote each token.

    It ends at the first EOS (any of the model's end tokens), when a stop string appears in
    the generated text, or at ``max_new_tokens``: every method asks it, so all stop alike.
    """

    buffer: torch.Tensor  # (1, prefix_length + max_new_tokens + 1)
    prefix_length: int
    max_new_tokens: int
    eos_token_ids: frozenset[int]
    length: int = 0
    tokens: list[int] = field(default_factory=list)
    from_large: list[bool] = field(default_factory=list)
    stop_strings: StopStrings | None = None

    @classmethod
    def start(
        cls,
        prefix: torch.Tensor,
        max_new_tokens: int,
        eos_token_ids: frozenset[int],
        stop_strings: StopStrings | None = None,
    ) -> TokenSequence:
        prefix_length = prefix.shape[1]
        buffer = prefix.new_zeros((1, prefix_length + max_new_tokens + 1))
        buffer[:, :prefix_length] = prefix
        return cls(
            buffer,
            prefix_length,
            max_new_tokens,
            eos_token_ids,
            length=prefix_length,
            stop_strings=stop_strings,
        )

    def view(self) -> torch.Tensor:
        """``(1, length)`` the current decoder input (a view, no copy)."""
        return self.buffer[:, : self.length]

    def write(self, token: torch.Tensor) -> None:
        """Append a token that is still on the device (drafts: no host sync)."""
        self.buffer[0, self.length] = token
        self.length += 1

    def keep_written(self, token_ids: list[int], from_large: list[bool]) -> None:
        """Keep tokens already written to the buffer after the kept ones (accepted drafts)."""
        self.tokens.extend(token_ids)
        self.from_large.extend(from_large)
        self.length = self.prefix_length + len(self.tokens)

    def append(self, token_id: int, from_large: bool) -> None:
        """Append a token known on the host."""
        self.buffer[0, self.length] = token_id
        self.tokens.append(token_id)
        self.from_large.append(from_large)
        self.length += 1

    def truncate(self, n_generated: int) -> None:
        """Keep only the first ``n_generated`` generated tokens."""
        del self.tokens[n_generated:]
        del self.from_large[n_generated:]
        self.length = self.prefix_length + n_generated

    @property
    def n_generated(self) -> int:
        return self.length - self.prefix_length

    @property
    def done(self) -> bool:
        ended = bool(self.tokens) and self.tokens[-1] in self.eos_token_ids
        if not ended and self.stop_strings is not None:
            ended = self.stop_strings.contained(self.tokens)
        return ended or self.n_generated >= self.max_new_tokens

    def clip_after_stop(self) -> None:
        """Cut tokens after the first EOS or stop string and beyond ``max_new_tokens``
        (multi-token appends)."""
        for index, token in enumerate(self.tokens):
            if token in self.eos_token_ids:
                self.truncate(index + 1)
                break
        if self.stop_strings is not None:
            end = self.stop_strings.end(self.tokens)
            if end is not None:
                self.truncate(end)
        if self.n_generated > self.max_new_tokens:
            self.truncate(self.max_new_tokens)
