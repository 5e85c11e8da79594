"""The token sequence every method decodes into, and when it ends.

The sequence is the decoder's whole input: the prefix (the decoder start token for
encoder-decoders, the prompt for decoder-only models) followed by generated tokens, kept
on the device. It ends at the first EOS (any of the model's end tokens), when a stop string
appears in the generated text, or at ``max_new_tokens``: every method asks it, so all stop
alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedModel


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
    # per token, True where an n-gram proposal drafted it (draft_source="ngram+small")
    from_ngram: list[bool] = field(default_factory=list)
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

    def write(self, token: torch.Tensor | int) -> None:
        """Append a token that is still on the device (drafts: no host sync), or a host int
        not yet kept (an n-gram draft)."""
        self.buffer[0, self.length] = token
        self.length += 1

    def keep_written(
        self, token_ids: list[int], from_large: list[bool], from_ngram: bool = False
    ) -> None:
        """Keep tokens already written to the buffer after the kept ones (accepted drafts;
        ``from_ngram``: drafted by an n-gram proposal)."""
        self.tokens.extend(token_ids)
        self.from_large.extend(from_large)
        self.from_ngram.extend([from_ngram] * len(token_ids))
        self.length = self.prefix_length + len(self.tokens)

    def append(self, token_id: int, from_large: bool, from_ngram: bool = False) -> None:
        """Append a token known on the host."""
        self.buffer[0, self.length] = token_id
        self.tokens.append(token_id)
        self.from_large.append(from_large)
        self.from_ngram.append(from_ngram)
        self.length += 1

    def truncate(self, n_generated: int) -> None:
        """Keep only the first ``n_generated`` generated tokens."""
        del self.tokens[n_generated:]
        del self.from_large[n_generated:]
        del self.from_ngram[n_generated:]
        self.length = self.prefix_length + n_generated

    def prompt_ids(self) -> list[int]:
        """The decoder prefix as host ints (a decoder-only model's prompt)."""
        return self.buffer[0, : self.prefix_length].tolist()

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


def decoder_prefix(model: PreTrainedModel, input_ids: torch.Tensor) -> torch.Tensor:
    """``(1, L)`` the decoder's first input: the decoder start token, or the prompt."""
    if not model.config.is_encoder_decoder:
        return input_ids
    start = model.generation_config.decoder_start_token_id
    if start is None:
        start = getattr(model.config, "decoder_start_token_id", None)
    if start is None:
        raise ValueError(f"{type(model).__name__} has no decoder_start_token_id in its config")
    return torch.tensor([[start]], dtype=torch.long, device=input_ids.device)


def eos_token_ids(model: PreTrainedModel) -> frozenset[int]:
    """The token ids that end a sequence for this model (possibly none)."""
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = getattr(model.config, "eos_token_id", None)
    if eos is None:
        return frozenset()
    return frozenset([eos] if isinstance(eos, int) else eos)


def start_sequence(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    stop_strings: StopStrings | None = None,
) -> TokenSequence:
    """A fresh sequence holding only the decoder prefix."""
    return TokenSequence.start(
        decoder_prefix(model, input_ids), max_new_tokens, eos_token_ids(model), stop_strings
    )
