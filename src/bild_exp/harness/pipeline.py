"""One sweep end to end: data, models, execution, records, summary, plots, W&B."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import transformers
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from bild_exp.data.tasks import DataError, Example, TaskSpec, load_examples, task_from_config
from bild_exp.decoding.compiled import compile_stats
from bild_exp.errors import Interrupted
from bild_exp.harness.checks import check_paper_device, engine_cpu_kernels
from bild_exp.harness.execute import EncodedExample, encode, execute_run
from bild_exp.harness.execution import execute_records, execution_limits
from bild_exp.harness.fingerprint import baselines_folder, compatibility, dataset_fingerprint
from bild_exp.harness.manifest import build_manifest, machine_load, peak_memory_gb
from bild_exp.harness.models import LoadedPair, load_pair, load_tokenizer, resolve_device
from bild_exp.harness.placement import placed
from bild_exp.harness.plan import RunConfig
from bild_exp.harness.report import format_summary, notes, points_table, write_outputs
from bild_exp.harness.scoring import scored_texts
from bild_exp.harness.settings import SweepSettings, resolve_settings
from bild_exp.harness.store import BusyError, RecordStore, read_json
from bild_exp.harness.summary import operating_points, quality_column, summarize
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
    records = execute_records(
        records, problems, prefix, execution_limits(task.extra.get("execution"))
    )
    columns = ["config_id", "example_id", "method", "execution", "execution_detail"]
    run_dir.mkdir(parents=True, exist_ok=True)
    records[columns].to_csv(run_dir / "executions.csv", index=False)
    return records


def run_sweep(cfg: DictConfig, runs: list[RunConfig]) -> SweepOutcome:
    task = task_from_config(cfg.task)
    torch_device = resolve_device(cfg.pair.device)
    check_paper_device(cfg, task, torch_device)  # before any download
    # one timed job per GPU; parallel CPU jobs share the cores (bild_exp.harness.placement)
    with placed(torch_device) as torch_device:
        cfg.pair.device = str(torch_device)
        return sweep_on_device(cfg, runs, task, torch_device)


def sweep_on_device(
    cfg: DictConfig, runs: list[RunConfig], task: TaskSpec, torch_device: torch.device
) -> SweepOutcome:
    """Load, decode, score and report, on the device this job holds."""
    if not cfg.progress:  # progress=false silences the libraries' loading bars too
        import datasets

        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()
    settings = resolve_settings(cfg)
    examples, n_skipped = select_examples(task, settings, cfg.scoring.empty_sources)
    device = device_description(torch_device)
    fingerprint = compatibility(cfg, task, device, runs)
    run_dir = (
        Path(cfg.results_dir) / cfg.experiment_name / (cfg.run or f"{task.name}_{cfg.pair.name}")
    )
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
    variants = sorted({run.small_variant for run in runs if run.small_variant != "-"})
    kernels = engine_cpu_kernels(cfg)
    pair = load_pair(
        cfg.pair, variants, need_calm=any(run.method == "calm" for run in runs), cpu_kernels=kernels
    )
    store.claim(fingerprint)  # only once the models load: a typo in a path locks nothing
    baselines.claim(fingerprint)
    items = encode(examples, pair.tokenizer, task, pair.device, cfg.pair.architecture)
    context = {"task": task.name, "pair": cfg.pair.name, "split": settings.split}
    load_before, n_done = machine_load(), len(store.done_keys()) + len(baselines.done_keys())
    try:
        execute_all(runs, items, pair, (store, baselines), context, cfg)
    except KeyboardInterrupt:
        raise Interrupted(
            f"{len(store.done_keys())} records in {str(store.parts_dir)!r} and "
            f"{len(baselines.done_keys())} in {str(baselines.parts_dir)!r} are saved; "
            "the same command resumes where this one stopped"
        ) from None
    records = collect_records(runs, examples, store, baselines)
    records = scored_texts(records, pair.tokenizer, cfg.scoring)
    if task.metric == "pass_at_1":  # run the problems' tests on every answer, untimed
        records = executed(records, examples, task, run_dir)
    quality = quality_column(task.metric, task.extra.get("quality"))
    scoring = OmegaConf.to_container(cfg.scoring, resolve=True)
    stats_settings = OmegaConf.to_container(cfg.stats, resolve=True) if "stats" in cfg else None
    summary = summarize(records, task.metric, quality, scoring, stats_settings)
    points = operating_points(summary, quality)
    manifest = build_manifest(
        cfg, examples, items, n_skipped, device, dataset_fingerprint(examples)
    )
    manifest["cpu_kernels"] = kernels
    computed = len(store.done_keys()) + len(baselines.done_keys()) > n_done
    # a rerun that timed nothing keeps the load and memory of the run that did
    previous = previous_manifest(run_dir)
    manifest["machine_load"] = (
        {"cores": os.cpu_count(), "before": load_before, "after": machine_load()}
        if computed
        else previous.get("machine_load")
    )
    manifest["peak_memory_gb"] = peak_memory_gb() if computed else previous.get("peak_memory_gb")
    if settings.decode.compile_mode is not None:  # kept out of every timed example: here
        manifest["compile"] = compile_report(pair)
    record_dirs = store.data_dirs + baselines.data_dirs
    write_outputs(run_dir, summary, points, manifest, quality, cfg, record_dirs)
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


def execute_all(
    runs: list[RunConfig],
    items: list[EncodedExample],
    pair: LoadedPair,
    stores: tuple[RecordStore, RecordStore],
    context: dict[str, Any],
    cfg: DictConfig,
) -> None:
    """Every run's missing records. A configuration that another process is computing
    (its lock is held) is left for last and then waited for, so parallel sweeps on one
    folder split the work and never compute a record twice."""
    store, baselines = stores
    decode = resolve_settings(cfg).decode
    pending, wait = list(runs), False
    with tqdm(total=len(runs) * len(items), disable=not cfg.progress, unit="example") as bar:
        while pending:
            deferred = []
            for run in pending:
                target = baselines if run.is_baseline else store
                try:
                    with target.lock(run.config_id, wait=wait):
                        bar.set_description(f"config {run.config_id} {run.study}")
                        execute_run(
                            run, items, pair, target, context, decode, lambda: bar.update(1)
                        )
                except BusyError as busy:
                    log.info("%s: computing the other configurations first", busy)
                    deferred.append(run)
            pending, wait = deferred, True


def collect_records(
    runs: list[RunConfig], examples: list[Example], *stores: RecordStore
) -> pd.DataFrame:
    """The planned configurations' records for this slice, from the run and baseline stores."""
    wanted_configs = {run.config_id for run in runs}
    wanted_examples = {example.id for example in examples}
    frames = [store.read() for store in stores]
    records = pd.concat([f for f in frames if len(f)], ignore_index=True)
    keep = records["config_id"].isin(wanted_configs) & records["example_id"].isin(wanted_examples)
    return records[keep].reset_index(drop=True)
