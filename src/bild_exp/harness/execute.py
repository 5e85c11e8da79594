"""Running planned configurations over examples with honest timing.

Per example only ``generate`` is timed (tokenisation, decoding to text and scoring are
outside), the device is synchronised around it, and each configuration first decodes
``warmup`` examples untimed. Records are flushed every few examples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from bild_exp.data.prompts import encoder_input, prompt_input
from bild_exp.data.tasks import Example, TaskSpec
from bild_exp.decoding.early_exit import EarlyExit
from bild_exp.decoding.sequence import StopStrings
from bild_exp.flops import ModelShape, generation_cost
from bild_exp.harness.models import LoadedPair
from bild_exp.harness.plan import RunConfig
from bild_exp.harness.settings import DecodeSettings
from bild_exp.harness.store import RecordStore
from bild_exp.timing import timed

FLUSH_EVERY = 8
STAT_COLUMNS = (
    "n_small_calls",
    "n_large_calls",
    "n_fallbacks",
    "n_rollbacks",
    "n_rolled_back_tokens",
    "n_small_tokens",
    "n_large_tokens",
    "n_forced_verifications",
    "n_tail_verifications",
    "n_oracle_replacements",
)
LIST_STAT_COLUMNS = (
    "accepted_lengths",
    "drafted_lengths",
    "large_call_shapes",
    "small_call_shapes",
    "call_exit_layers",
    "exit_layers",
)


@dataclass
class EncodedExample:
    example: Example
    input_ids: torch.Tensor  # (1, L): the encoder input, or the whole prompt
    n_source_tokens: int  # the source alone, before any cut
    truncated: bool

    @property
    def n_prompt_tokens(self) -> int:
        return self.input_ids.shape[1]


def encode(
    examples: list[Example],
    tokenizer: Any,
    task: TaskSpec,
    device: torch.device,
    architecture: str = "seq2seq",
) -> list[EncodedExample]:
    """Tokenise once, outside any timed region: the encoder input (with the task's prefix)
    for encoder-decoder pairs, the task's prompt for decoder-only pairs; count cuts."""
    prompt = task.prompt_format()
    encoded = []
    for example in examples:
        if architecture == "seq2seq":
            model_input = encoder_input(
                task.encoder_text(example.source), tokenizer, task.max_source_length
            )
        else:
            model_input = prompt_input(example.source, prompt, tokenizer, task.max_source_length)
        ids = torch.tensor([model_input.ids], dtype=torch.long, device=device)
        encoded.append(
            EncodedExample(example, ids, model_input.n_source_tokens, model_input.truncated)
        )
    return encoded


def output_text(tokenizer: Any, tokens: list[int], stop_strings: list[str] | None) -> str:
    """The generated text only (never the prompt): special tokens dropped, cut before the
    first stop string."""
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    stops = StopStrings.of(stop_strings, tokenizer)
    return (stops.cut(text) if stops else text).strip()


def decode_once(
    run: RunConfig,
    pair: LoadedPair,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    stop_strings: list[str] | None = None,
    compile_mode: str | None = None,
):
    """One example decoded by ``run`` (``compile_mode``: None for the eager engine, else
    the compiled path in that mode)."""
    return pair.decode(
        run.method,
        run.small_variant,
        run.params,
        input_ids,
        max_new_tokens,
        stop_strings,
        compile_mode,
    )


def model_shape(model: Any) -> ModelShape | None:
    """The FLOPs model's view of a model (an early-exit small keeps only its layers)."""
    if model is None:
        return None
    if isinstance(model, EarlyExit):
        return ModelShape.from_config(model.large.config, model.layers, model_bytes(model.large))
    return ModelShape.from_config(model.config, bytes_per_element=model_bytes(model))


def model_bytes(model: Any) -> int:
    return next(model.parameters()).element_size()


def cost_columns(run: RunConfig, pair: LoadedPair, encoder_length: int, stats: dict) -> dict:
    """Analytical FLOPs and bytes moved by one example's generate call (paper Figure 8);
    ``encoder_length`` is the input's length: the encoder's, or a decoder-only prompt's."""
    if run.method in ("hf_assisted", "prompt_lookup"):  # HF does not expose its calls' shapes
        return {"flops": None, "mops_bytes": None}
    large, small = pair.models_for(run.method, run.small_variant)
    seq2seq = (large or small).config.is_encoder_decoder
    cost = generation_cost(
        stats,
        encoder_length if seq2seq else 0,
        model_shape(large),
        model_shape(small),
        small_shares_large=isinstance(small, EarlyExit),
        prompt_length=0 if seq2seq else encoder_length,
    )
    return {"flops": cost.flops, "mops_bytes": cost.bytes}


def record(
    run: RunConfig,
    item: EncodedExample,
    result: Any,
    seconds: float,
    hypothesis: str,
    costs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    stats = result.stats
    row = {
        **run.columns(),
        "example_id": item.example.id,  # source and reference: RecordStore.save_examples
        "hypothesis": hypothesis,
        "latency_s": seconds,
        "n_tokens": len(result.tokens),
        "n_source_tokens": item.n_source_tokens,
        "n_prompt_tokens": item.n_prompt_tokens,
        "source_truncated": item.truncated,
        "tokens": list(result.tokens),
        "from_large": None if result.from_large is None else list(result.from_large),
        **(costs or {}),
    }
    row.update({name: stats.get(name) for name in STAT_COLUMNS})
    for name in LIST_STAT_COLUMNS:
        value = stats.get(name)
        row[name] = (
            None if value is None else [list(v) if isinstance(v, tuple) else v for v in value]
        )
    return row


def execute_run(
    run: RunConfig,
    items: list[EncodedExample],
    pair: LoadedPair,
    store: RecordStore,
    context: dict[str, Any],
    settings: DecodeSettings,
    on_example: Callable[[], None] = lambda: None,
) -> int:
    """Decode every example of ``items`` not yet in ``store``; return how many were decoded.
    Call it holding ``store.lock(run.config_id)``: once every example is stored, it compacts
    the configuration's parts into one.

    ``settings.compile_mode``: the compiled engine path in that mode (None: eager); at least
    one untimed warm-up example runs, so that compilation never falls inside a timed example.
    ``settings.warmup_max_new_tokens`` caps the warm-up's decodes on the eager path (one-off
    costs need a short decode; a compiled model's static cache is sized by the full limit)."""
    max_new_tokens, stop_strings = settings.max_new_tokens, settings.stop_strings
    compile_mode, warmup_cap = settings.compile_mode, settings.warmup_max_new_tokens
    done = store.done_keys(run.config_id)
    todo = [item for item in items if (run.config_id, item.example.id) not in done]
    for _ in range(len(items) - len(todo)):
        on_example()
    if not todo:
        store.compact(run.config_id)  # a run killed after its last part was not compacted
        return 0
    store.save_examples([example_row(item.example) for item in items])
    warmup_tokens = max_new_tokens
    if warmup_cap is not None and compile_mode is None:
        warmup_tokens = min(max_new_tokens, warmup_cap)
    for item in items[: max(settings.warmup, 0 if compile_mode is None else 1)]:
        decode_once(run, pair, item.input_ids, warmup_tokens, stop_strings, compile_mode)
    buffer = []
    try:
        for item in todo:
            result, seconds = timed(
                lambda item=item: decode_once(
                    run, pair, item.input_ids, max_new_tokens, stop_strings, compile_mode
                ),
                pair.device,
            )
            hypothesis = output_text(pair.tokenizer, result.tokens, stop_strings)
            costs = cost_columns(run, pair, item.input_ids.shape[1], result.stats)
            buffer.append({**context, **record(run, item, result, seconds, hypothesis, costs)})
            on_example()
            if len(buffer) >= FLUSH_EVERY:
                store.append(buffer)
                buffer = []
    finally:  # finished examples are complete records, even when Ctrl-C stops the next one
        store.append(buffer)
    store.compact(run.config_id)
    return len(todo)


def example_row(example: Example) -> dict[str, str]:
    return {"example_id": example.id, "source": example.source, "reference": example.target}
