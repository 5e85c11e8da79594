"""How a source text becomes model input: an encoder input (with the task's
``source_prefix``) for encoder-decoder pairs, a prompt for decoder-only pairs.

A task's ``prompt`` says how to build the prompt: ``template`` with ``{source}``, an
optional ``system`` text, and ``chat: true`` to wrap it in the tokenizer's chat template
with the generation prompt. Sources longer than ``max_source_length`` tokens are cut
(the template is never cut), and the cut is counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bild_exp.errors import InvalidParameterError

SOURCE_FIELD = "{source}"
PROMPT_KEYS = ("template", "system", "chat", "response_prefix")


@dataclass(frozen=True)
class PromptFormat:
    """A decoder-only task's prompt: ``template`` with ``{source}``, optional system text,
    whether to wrap it in the tokenizer's chat template, and ``response_prefix``: the start
    of the answer, written into the prompt (e.g. the opening of a code block, so that the
    model's output is code and a stop string can end the block)."""

    template: str = SOURCE_FIELD
    system: str | None = None
    chat: bool = False
    response_prefix: str = ""

    @classmethod
    def from_config(cls, values: dict[str, Any] | None, task_name: str) -> PromptFormat:
        values = dict(values or {})
        unknown = sorted(set(values) - set(PROMPT_KEYS))
        if unknown:
            raise InvalidParameterError(
                f"task.prompt.{unknown[0]} is unknown for task {task_name!r}: accepted "
                f"{', '.join(PROMPT_KEYS)}"
            )
        template = values.get("template") or SOURCE_FIELD
        if SOURCE_FIELD not in template:
            raise InvalidParameterError(
                f"task.prompt.template={template!r} is invalid for task {task_name!r}: accepted "
                "a text containing {source} (where the source goes)"
            )
        chat = values.get("chat", False)
        if not isinstance(chat, bool):
            raise InvalidParameterError(
                f"task.prompt.chat={chat!r} is invalid: accepted true or false"
            )
        prefix = values.get("response_prefix") or ""
        if not isinstance(prefix, str):
            raise InvalidParameterError(
                f"task.prompt.response_prefix={prefix!r} is invalid: accepted a string"
            )
        return cls(template, values.get("system"), chat, prefix)

    def check_tokenizer(self, tokenizer: Any, tokenizer_name: str) -> None:
        """A chat prompt needs a tokenizer with a chat template."""
        if self.chat and not getattr(tokenizer, "chat_template", None):
            raise InvalidParameterError(
                f"task.prompt.chat=true but pair.tokenizer={tokenizer_name!r} has no chat "
                "template: accepted a chat (instruct) tokenizer, or task.prompt.chat=false"
            )

    def text(self, source: str, tokenizer: Any) -> str:
        """The prompt as text (chat template applied, generation prompt included)."""
        user = self.template.replace(SOURCE_FIELD, source)
        if not self.chat:
            return user + self.response_prefix
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages.append({"role": "user", "content": user})
        chat = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return chat + self.response_prefix

    def ids(self, source: str, tokenizer: Any) -> list[int]:
        """Prompt token ids: a chat template writes its own special tokens; a plain prompt
        gets the tokenizer's usual ones (e.g. BOS)."""
        return tokenizer(self.text(source, tokenizer), add_special_tokens=not self.chat)[
            "input_ids"
        ]


@dataclass(frozen=True)
class EncodedInput:
    ids: list[int]
    n_source_tokens: int  # the source alone, before any cut
    truncated: bool


def encoder_input(text: str, tokenizer: Any, max_source_length: int) -> EncodedInput:
    """Encoder input ids; a cut keeps the end marker the models were trained with."""
    full = tokenizer(text)["input_ids"]
    ids = list(full[:max_source_length])
    if len(ids) < len(full) and tokenizer.eos_token_id is not None:
        ids[-1] = tokenizer.eos_token_id
    return EncodedInput(ids, len(full), len(ids) < len(full))


def prompt_input(
    source: str, prompt: PromptFormat, tokenizer: Any, max_source_length: int
) -> EncodedInput:
    """Prompt ids for a decoder-only model, the source cut to ``max_source_length`` tokens."""
    source_ids = tokenizer(source, add_special_tokens=False)["input_ids"]
    truncated = len(source_ids) > max_source_length
    if truncated:
        source = tokenizer.decode(source_ids[:max_source_length])
    return EncodedInput(prompt.ids(source, tokenizer), len(source_ids), truncated)
