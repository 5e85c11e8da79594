"""One sweep end to end: data, models, execution, records, summary, plots, W&B."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import transformers
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from bild_exp.analysis.by_length import by_length
from bild_exp.analysis.operating_points import operating_points
from bild_exp.analysis.report import format_summary, notes, points_table, write_outputs
from bild_exp.analysis.summary import summarize
from bild_exp.data.tasks import (
    DataError,
    Example,
    TaskSpec,
    load_examples,
    stratified_sample,
    task_from_config,
)
from bild_exp.decoding.compiled import compile_stats
from bild_exp.errors import Interrupted
from bild_exp.harness.config.checks import check_paper_device
from bild_exp.harness.config.plan import RunConfig, reference_runs
from bild_exp.harness.config.settings import SweepSettings, resolve_settings
from bild_exp.harness.records.fingerprint import (
    baselines_folder,
    compatibility,
    dataset_fingerprint,
    run_folder,
)
from bild_exp.harness.records.manifest import build_manifest, machine_load, peak_memory_gb
from bild_exp.harness.records.store import BusyError, RecordStore, atomic_write_bytes, read_json
from bild_exp.harness.run.blocks import (
    BLOCK_COLUMNS,
    TIMING_COLUMNS,
    TimingBlock,
    latest_outputs,
    start_block,
    timing_work,
)
from bild_exp.harness.run.decode import EncodedExample, encode, execute_interleaved
from bild_exp.harness.run.long_run import (
    RunProgress,
    complete_examples,
    shard_label,
    shard_of,
    stop_on_signal,
)
from bild_exp.harness.run.modelled_latency import (
    block_table,
    costs_to_json,
    measure_block_costs,
    with_modelled_latency,
)
from bild_exp.harness.run.placement import placed
from bild_exp.harness.scoring.code_execution import (
    execute_records,
    execution_limits,
    resolve_sandbox,
)
from bild_exp.harness.scoring.metrics import Scoring, quality_column
from bild_exp.harness.scoring.texts import scored_texts
from bild_exp.models.pair import LoadedPair, LoadSettings, load_pair, load_tokenizer, resolve_device
from bild_exp.timing import device_description

log = logging.getLogger(__name__)


@dataclass
class SweepOutcome:
    run_dir: Path
    records: pd.DataFrame
    summary: pd.DataFrame
    operating_points: pd.DataFrame


def chosen_examples(examples: list[Example], ids: list[str]) -> list[Example]:
    """The examples named by ``data.example_ids``, in that order; an unknown id is one line."""
    by_id = {example.id: example for example in examples}
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise DataError(
            f"data.example_ids={unknown[:3]!r} are not in the split: accepted ids such as "
            f"{list(by_id)[:3]!r} ({len(by_id)} examples)"
        )
    return [by_id[i] for i in ids]


def select_examples(
    task: TaskSpec, settings: SweepSettings, empty_sources: str
) -> tuple[list[Example], dict[str, int]]:
    """The data slice; examples with an empty (or null) source or reference are skipped and
    counted, or refused, as ``empty_sources`` (``scoring.empty_sources``) says."""
    if settings.example_ids:  # chosen examples, in the order given (then the limit)
        examples = chosen_examples(load_examples(task, settings.split), settings.example_ids)
        examples = examples[: settings.limit] if settings.limit else examples
    else:
        examples = load_examples(task, settings.split, settings.limit)
    empty = {
        "n_empty_sources_skipped": sum(not has_source(e) for e in examples),
        "n_empty_references_skipped": sum(has_source(e) and not e.target.strip() for e in examples),
    }
    kept = [e for e in examples if has_source(e) and e.target.strip()]
    if len(kept) < len(examples) and empty_sources == "error":
        raise DataError(
            f"{len(examples) - len(kept)} examples of task {task.name!r} have an empty or null "
            "source or reference: set scoring.empty_sources=skip to skip them"
        )
    if not kept:
        raise DataError(
            f"task {task.name!r} has no example with both a source and a reference in the first "
            f"{len(examples)} rows of split {settings.split!r}"
        )
    if settings.sample is not None:  # a subset that spans the slice's lengths (make demo)
        kept = stratified_sample(kept, settings.sample, settings.sample_seed)
    if settings.shard is not None:  # one cluster job's range of the slice
        sliced = shard_of(kept, settings.shard)
        if not sliced:
            index, count = settings.shard
            raise DataError(
                f"data.shard='{index}/{count}' is invalid: it holds none of the {len(kept)} "
                "examples of the slice; accepted fewer shards than examples"
            )
        kept = sliced
    return kept, empty


def has_source(example: Example) -> bool:
    return bool(example.source.strip())


def compile_report(pair: LoadedPair, mode: str | None = None) -> dict[str, dict[str, float]]:
    """Graphs compiled, compile seconds and compiled calls of each model of the pair (in
    compile ``mode``; None: every mode)."""
    models = {"large": pair.large, **{f"small/{name}": m for name, m in pair.smalls.items()}}
    return {name: compile_stats(model, mode) for name, model in models.items() if model is not None}


def executed(
    records: pd.DataFrame, examples: list[Example], task: TaskSpec, run_dir: Path
) -> pd.DataFrame:
    """Records with their execution outcomes; per example in ``executions.csv``."""
    problems = {example.id: example for example in examples}
    prefix = task.prompt_format().response_prefix
    limits = execution_limits(task.execution)
    records = execute_records(records, problems, prefix, limits)
    sandbox = records["sandbox"].iloc[0] if len(records) else resolve_sandbox(limits.sandbox)
    print(f"answers scored in sandbox: {sandbox} (task.execution.sandbox={limits.sandbox})")
    columns = ["config_id", "example_id", "method", "execution", "execution_detail"]
    run_dir.mkdir(parents=True, exist_ok=True)
    records[columns].to_csv(run_dir / "executions.csv", index=False)
    return records


def run_sweep(cfg: DictConfig, runs: list[RunConfig]) -> SweepOutcome:
    task = task_from_config(cfg.task)
    torch_device = resolve_device(cfg.pair.device)
    check_paper_device(cfg, task, torch_device)  # before any download
    # one timed job per GPU; parallel CPU jobs share the cores (bild_exp.harness.run.placement)
    with placed(torch_device) as torch_device:
        cfg.pair.device = str(torch_device)
        return sweep_on_device(cfg, runs, task, torch_device)


def sweep_on_device(
    cfg: DictConfig, runs: list[RunConfig], task: TaskSpec, torch_device: torch.device
) -> SweepOutcome:
    """Load, decode, score and report, on the device this job holds."""
    started = time.monotonic()  # sweep.run_for counts from here: loading is part of it
    if not cfg.progress:  # progress=false silences the libraries' loading bars too
        import datasets

        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()
    settings = resolve_settings(cfg)
    examples, n_skipped = select_examples(task, settings, cfg.scoring.empty_sources)
    device = device_description(torch_device)
    fingerprint = compatibility(cfg, task, device, runs)
    run_dir = run_folder(cfg, task)
    store, baselines = (
        RecordStore(run_dir),
        RecordStore(baselines_folder(Path(cfg.baselines_dir), fingerprint)),
    )
    store.check(fingerprint)  # before any model loads
    baselines.check(fingerprint)
    store.verify()
    baselines.verify()
    if cfg.pair.architecture == "decoder-only":  # a chat prompt needs a chat template: check first
        task.prompt_format().check_tokenizer(load_tokenizer(cfg.pair), cfg.pair.tokenizer)
    load_settings = LoadSettings.of(cfg)
    load_before = machine_load()  # before the models load: what else was running
    context = {"task": task.name, "pair": cfg.pair.name, "split": settings.split}
    pair, computed = None, 0
    if settings.summary_only:  # the stored records only: the tokenizer, no model
        tokenizer = load_tokenizer(cfg.pair)
        items = encode(examples, tokenizer, task, torch_device, cfg.pair.architecture)
    else:
        variants = sorted({run.small_variant for run in runs if run.small_variant != "-"})
        pair = load_pair(
            cfg.pair,
            variants,
            need_calm=any(run.method == "calm" for run in runs),
            settings=load_settings,
        )
        tokenizer = pair.tokenizer
        store.claim(fingerprint)  # only once the models load: a typo in a path locks nothing
        baselines.claim(fingerprint)
        items = encode(examples, tokenizer, task, pair.device, cfg.pair.architecture)
        block = start_block()
        deadline = None if settings.run_for_s is None else started + settings.run_for_s
        progress = RunProgress(len(items), 0, deadline, settings.run_for_s)
        try:
            with stop_on_signal(progress):  # SIGTERM: stop after this example, as the budget does
                computed = execute_all(
                    runs, items, pair, (store, baselines), context, cfg, block, progress
                )
        except KeyboardInterrupt:
            raise Interrupted(
                f"{len(store.done_keys())} records in {str(store.parts_dir)!r} and "
                f"{len(baselines.done_keys())} in {str(baselines.parts_dir)!r} are saved; "
                "the same command resumes where this one stopped"
            ) from None
        print(progress.closing_line())
        if computed:  # this block's machine and per-call costs, next to its records
            save_block(block, pair, items, (store, baselines), cfg, settings)
    blocks = {**baselines.blocks(), **store.blocks()}
    stored = collect_records(runs, examples, store, baselines)
    if settings.record_parts == "per_example" and not stored.empty:  # a long run's table
        stored, n_partial = complete_examples(stored, [run.config_id for run in runs])
        n_complete = stored["example_id"].nunique()
        print(
            f"summary over the {n_complete} of {len(examples)} examples that every "
            f"configuration has finished ({n_partial} partly finished left out until a run "
            "finishes them)"
        )
    if stored.empty:  # stopped before its first example: nothing to summarise yet
        print(f"no records in {str(run_dir)!r} yet: no summary written")
        empty = pd.DataFrame()
        return SweepOutcome(run_dir, empty, empty, empty)
    timings = with_modelled_latency(stored, blocks)
    records = scored_texts(latest_outputs(timings), tokenizer, cfg.scoring)
    if task.metric == "pass_at_1":  # run the problems' tests on every answer, untimed
        records = executed(records, examples, task, run_dir)
    quality = quality_column(task.metric, task.quality)
    scoring = OmegaConf.to_container(cfg.scoring, resolve=True)
    stats_settings = OmegaConf.to_container(cfg.stats, resolve=True) if "stats" in cfg else None
    summary = summarize(records, Scoring(task.metric, quality, scoring), stats_settings, timings)
    points = operating_points(summary, quality)
    manifest = build_manifest(
        cfg, examples, items, n_skipped, device, dataset_fingerprint(examples)
    )
    manifest["cpu_kernels"] = load_settings.cpu_kernels
    if "sandbox" in records:  # what contained the model-written programs
        manifest["sandbox"] = sorted(set(records["sandbox"].dropna()))
    # a rerun that timed nothing keeps the load, memory and block of the run that did
    previous = previous_manifest(run_dir)
    manifest["weights"] = pair.weights_report() if pair is not None else previous.get("weights")
    manifest["machine_load"] = (
        {"cores": os.cpu_count(), "before": load_before, "after": machine_load()}
        if computed
        else previous.get("machine_load")
    )
    manifest["peak_memory_gb"] = peak_memory_gb() if computed else previous.get("peak_memory_gb")
    manifest["timing_block"] = block.columns() if computed else previous.get("timing_block")
    manifest["timing_blocks"] = blocks_in(summary)
    if settings.decode.compile_mode is not None and pair is not None:  # outside timed examples
        manifest["compile"] = compile_report(pair)
    record_dirs = store.data_dirs + baselines.data_dirs
    lengths = by_length(latest_outputs(records), timings, summary, stats_settings)
    write_outputs(run_dir, summary, points, manifest, quality, cfg, record_dirs, lengths)
    blocks_csv = block_table(timings, blocks).to_csv(index=False)
    atomic_write_bytes(run_dir / "blocks.csv", blocks_csv.encode())
    print(format_summary(summary, quality, device, notes(summary, manifest)))
    print(
        "\nOperating points (best speedup with quality within the tolerance of vanilla large;"
        " rule point: on point estimates, ci: the 95% interval's lower bound):"
    )
    print(points_table(points).to_string(index=False))
    return SweepOutcome(run_dir, records, summary, points)


def previous_manifest(run_dir: Path) -> dict[str, Any]:
    """The manifest of the run that timed this folder's records (empty if none)."""
    path = run_dir / "manifest.json"
    if not path.exists():
        return {}
    return read_json(path, "delete it; the next sweep rewrites it")


def save_block(
    block: TimingBlock,
    pair: LoadedPair,
    items: list[EncodedExample],
    stores: tuple[RecordStore, ...],
    cfg: DictConfig,
    settings: SweepSettings,
) -> None:
    """Measure this block's per-call costs (``sweep.call_cost_repeats``; after its timed
    examples, in the same process) and write the block's file into every store."""
    repeats = cfg.sweep.call_cost_repeats
    costs = {}
    if repeats:
        mine = pd.concat([s.read_records() for s in stores], ignore_index=True)
        mine = mine[mine.get("block_id", pd.Series(dtype=object)) == block.block_id]
        costs = measure_block_costs(
            pair, mine, items[0].input_ids, repeats, settings.decode.compile_mode
        )
    for store in stores:
        store.save_block({**block.columns(), "call_costs": costs_to_json(costs)})


def blocks_in(summary: pd.DataFrame) -> dict[str, int]:
    """How many timing blocks the summary's speedups span (most over any configuration)."""
    blocks = summary.get("n_timing_blocks", pd.Series(dtype=float)).dropna()
    return {"max_per_configuration": int(blocks.max()) if len(blocks) else 0}


def hold_locks(
    runs: list[RunConfig],
    target: Callable[[RunConfig], RecordStore],
    wait: bool,
    shard: str = "",
) -> tuple[dict[str, ExitStack], list[RunConfig]]:
    """Each run's lock in its store, for this ``shard`` of the examples (``wait``: until
    free; else skipped when another process holds it): the held locks by configuration,
    and the runs left out."""
    held, busy = {}, []
    for run in runs:
        stack = ExitStack()
        try:
            stack.enter_context(target(run).lock(run.config_id, wait=wait, shard=shard))
        except BusyError as error:
            log.info("%s: computing the other configurations first", error)
            busy.append(run)
            continue
        held[run.config_id] = stack
    return held, busy


def execute_all(
    runs: list[RunConfig],
    items: list[EncodedExample],
    pair: LoadedPair,
    stores: tuple[RecordStore, RecordStore],
    context: dict[str, Any],
    cfg: DictConfig,
    block: TimingBlock,
    progress: RunProgress | None = None,
) -> int:
    """Every run's missing records and the re-timings its pairs need, interleaved per
    example in one timing block (:func:`bild_exp.harness.run.blocks.timing_work`); returns the
    records written. A configuration that another process is computing (its lock is held)
    is left for last and then waited for, with every configuration that is timed against
    it, so parallel sweeps on one folder never compute a record twice (jobs of different
    ``data.shard`` ranges hold their own locks and run side by side). ``progress`` counts
    the examples done and stops the run when its time budget is spent."""
    store, baselines = stores

    def target(run: RunConfig) -> RecordStore:
        return baselines if run.is_baseline else store

    settings = resolve_settings(cfg)
    decode, per_example = settings.decode, settings.record_parts == "per_example"
    shard = shard_label(settings.shard)
    references = reference_runs(runs)
    example_ids = [item.example.id for item in items]
    pending, wait, written = list(runs), False, 0
    with tqdm(total=0, disable=not cfg.progress, unit="record") as bar:
        while pending:
            held, deferred = hold_locks(pending, target, wait, shard)
            # a run is timed in the same block as its reference, or waits with it
            here = [r for r in pending if r.config_id in held]
            waiting = [r for r in here if references[r.config_id] not in (None, *held)]
            for run in waiting:
                held.pop(run.config_id).close()
            here = [r for r in here if r.config_id in held]
            try:
                stored = pd.concat(
                    [
                        s.read_records(["config_id", "example_id", *BLOCK_COLUMNS, *TIMING_COLUMNS])
                        for s in stores
                    ],
                    ignore_index=True,
                )
                ids = [r.config_id for r in here]
                work = timing_work(ids, references, example_ids, stored, cfg.sweep.retime_loaded)
                if progress is not None and not progress.n_this_block and len(here) == len(runs):
                    progress.n_done = len(example_ids) - len(work.by_example)
                bar.total += work.n_calls
                bar.refresh()
                written += execute_interleaved(
                    here,
                    items,
                    pair,
                    {r.config_id: target(r) for r in here},
                    work.by_example,
                    context,
                    decode,
                    block,
                    lambda: bar.update(1),
                    progress,
                    per_example,
                    tqdm.write,
                )
                if not per_example:  # committed parts are never rewritten
                    for run in here:
                        target(run).compact(run.config_id)
            finally:
                for stack in held.values():
                    stack.close()
            if progress is not None and progress.stopped_early:
                break
            # the runs left, with their references (timed again beside them), in run order:
            # every process takes the locks in one order
            left = {r.config_id for r in (*deferred, *waiting)}
            left |= {references[c] for c in left if references[c] is not None}
            pending, wait = [r for r in runs if r.config_id in left], True
    return written


def collect_records(
    runs: list[RunConfig], examples: list[Example], *stores: RecordStore
) -> pd.DataFrame:
    """The planned configurations' records for this slice, from the run and baseline stores."""
    wanted_configs = {run.config_id for run in runs}
    wanted_examples = {example.id for example in examples}
    frames = [frame for frame in (store.read() for store in stores) if len(frame)]
    if not frames:
        return pd.DataFrame(columns=["config_id", "example_id"])
    records = pd.concat(frames, ignore_index=True)
    keep = records["config_id"].isin(wanted_configs) & records["example_id"].isin(wanted_examples)
    return records[keep].reset_index(drop=True)
