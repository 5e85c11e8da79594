"""Running planned configurations over examples with honest timing.

Per example only ``generate`` is timed (tokenisation, decoding to text and scoring are
outside), the device is synchronised around it, and each configuration first decodes
``warmup`` examples untimed. Configurations are interleaved per example in a rotating
order, and every record carries its timing block (bild_exp.harness.run.blocks). Records are
flushed every few examples (or seconds).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from bild_exp.data.prompts import encoder_input, prompt_input
from bild_exp.data.tasks import Example, TaskSpec
from bild_exp.decoding.early_exit import EarlyExit
from bild_exp.decoding.sequence import StopStrings
from bild_exp.flops import ModelShape, generation_cost
from bild_exp.harness.config.plan import RunConfig
from bild_exp.harness.config.settings import DecodeSettings
from bild_exp.harness.records.store import RecordStore
from bild_exp.harness.run.blocks import TimingBlock, load_average, rotated
from bild_exp.harness.run.long_run import RunProgress
from bild_exp.models.pair import LoadedPair
from bild_exp.timing import timed

FLUSH_EVERY = 8  # examples
FLUSH_SECONDS = 60.0
STAT_COLUMNS = (
    "n_small_calls",
    "n_large_calls",
    "n_fallbacks",
    "n_rollbacks",
    "n_rolled_back_tokens",
    "n_small_tokens",
    "n_large_tokens",
    "n_ngram_tokens",
    "n_forced_verifications",
    "n_tail_verifications",
    "n_oracle_replacements",
)
LIST_STAT_COLUMNS = (
    "accepted_lengths",
    "drafted_lengths",
    "draft_sources",
    "ngram_drafted_lengths",
    "ngram_accepted_lengths",
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


def timed_call(fn: Callable[[], Any], device: torch.device) -> tuple[Any, dict[str, Any]]:
    """``fn`` timed (device synchronised), with the timing columns of its record
    (bild_exp.harness.run.blocks.TIMING_COLUMNS): wall and process CPU seconds, and the
    one-minute load before and after."""
    load_before, cpu_start = load_average(), time.process_time()
    result, seconds = timed(fn, device)
    cpu_seconds = time.process_time() - cpu_start
    timing = {
        "latency_s": seconds,
        "cpu_s": cpu_seconds,
        "load_before": load_before,
        "load_after": load_average(),
    }
    return result, timing


def timed_decode(
    run: RunConfig, pair: LoadedPair, item: EncodedExample, settings: DecodeSettings
) -> tuple[Any, dict[str, Any]]:
    """One timed example: only ``generate`` is timed."""
    return timed_call(
        lambda: decode_once(
            run,
            pair,
            item.input_ids,
            settings.max_new_tokens,
            settings.stop_strings,
            settings.compile_mode,
        ),
        pair.device,
    )


def warm_up(
    run: RunConfig, pair: LoadedPair, items: list[EncodedExample], settings: DecodeSettings
) -> None:
    """``settings.warmup`` untimed examples (at least one on the compiled path, so that
    compilation never falls inside a timed example), capped at
    ``settings.warmup_max_new_tokens`` on the eager path (one-off costs need a short
    decode; a compiled model's static cache is sized by the full limit)."""
    compile_mode, tokens = settings.compile_mode, settings.max_new_tokens
    if settings.warmup_max_new_tokens is not None and compile_mode is None:
        tokens = min(tokens, settings.warmup_max_new_tokens)
    for item in items[: max(settings.warmup, 0 if compile_mode is None else 1)]:
        decode_once(run, pair, item.input_ids, tokens, settings.stop_strings, compile_mode)


class RecordBuffer:
    """Finished records per configuration, written as one part per configuration every
    ``FLUSH_EVERY`` examples or ``FLUSH_SECONDS`` (an example of a large model can take
    minutes: a kill loses at most that much), and on exit."""

    def __init__(self, stores: dict[str, RecordStore]):
        self.stores, self.rows = stores, {config: [] for config in stores}
        self.examples, self.last_flush = 0, time.monotonic()

    def add(self, config_id: str, row: dict[str, Any]) -> None:
        self.rows[config_id].append(row)

    def example_done(self, flush: bool = False) -> None:
        """One example's records are complete (``flush``: write them now)."""
        self.examples += 1
        due = self.examples % FLUSH_EVERY == 0 or time.monotonic() - self.last_flush > FLUSH_SECONDS
        if flush or due:
            self.flush()

    def flush(self) -> None:
        for config, rows in self.rows.items():
            self.stores[config].append(rows)
            self.rows[config] = []
        self.last_flush = time.monotonic()


def execute_interleaved(
    runs: list[RunConfig],
    items: list[EncodedExample],
    pair: LoadedPair,
    stores: dict[str, RecordStore],
    work: dict[str, list[str]],
    context: dict[str, Any],
    settings: DecodeSettings,
    block: TimingBlock,
    on_record: Callable[[], None] = lambda: None,
    progress: RunProgress | None = None,
    per_example: bool = False,
    on_example: Callable[[str], None] = lambda line: None,
) -> int:
    """Time ``work`` (example id -> configuration ids, :func:`timing_work`): example after
    example, every configuration of an example before the next example, in an order that
    rotates from example to example, so that the machine's drifts hit every configuration
    alike. Each configuration's warm-up runs once, before the first timed example. Records
    carry ``block``; ``stores``: each configuration's store (its lock held by the caller).
    ``progress``: counts finished examples (``on_example`` gets its line) and stops before
    an example its time budget cannot hold; ``per_example``: each example's records are
    written as soon as it ends (``sweep.record_parts=per_example``). Returns the number of
    records written."""
    by_id = {run.config_id: run for run in runs}
    active = [run for run in runs if any(run.config_id in ids for ids in work.values())]
    if not active:
        return 0
    for run in active:
        stores[run.config_id].save_examples([example_row(item.example) for item in items])
    for run in active:
        warm_up(run, pair, items, settings)
    if progress is not None:  # the rate counts timed examples, not warm-ups
        progress.started = time.monotonic()
    buffer, written = RecordBuffer({run.config_id: stores[run.config_id] for run in active}), 0
    try:
        for index, item in enumerate(item for item in items if item.example.id in work):
            if progress is not None and progress.out_of_time():
                break
            for config_id in rotated(work[item.example.id], index):
                run = by_id[config_id]
                result, timing = timed_decode(run, pair, item, settings)
                hypothesis = output_text(pair.tokenizer, result.tokens, settings.stop_strings)
                costs = cost_columns(run, pair, item.input_ids.shape[1], result.stats)
                row = record(run, item, result, timing["latency_s"], hypothesis, costs)
                buffer.add(config_id, {**context, **row, **timing, **block.columns()})
                written += 1
                on_record()
            buffer.example_done(flush=per_example)
            if progress is not None:
                on_example(progress.example_done())
    finally:  # finished examples are complete records, even when Ctrl-C stops the next one
        buffer.flush()
    return written


def example_row(example: Example) -> dict[str, str]:
    return {"example_id": example.id, "source": example.source, "reference": example.target}
