"""One sweep end to end: data, models, execution, records, summary, plots, W&B."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from bild_exp.data.tasks import DataError, Example, TaskSpec, load_examples, task_from_config
from bild_exp.harness.execute import encode, execute_run
from bild_exp.harness.manifest import build_manifest
from bild_exp.harness.models import load_pair
from bild_exp.harness.plan import RunConfig
from bild_exp.harness.report import format_summary, write_outputs
from bild_exp.harness.store import RecordStore
from bild_exp.harness.summary import operating_points, quality_column, summarize
from bild_exp.timing import device_description

log = logging.getLogger(__name__)
EMPTY_SOURCE_POLICIES = ("skip", "error")


@dataclass
class SweepOutcome:
    run_dir: Path
    records: pd.DataFrame
    summary: pd.DataFrame
    operating_points: pd.DataFrame


def print_plan(cfg: DictConfig, runs: list[RunConfig]) -> None:
    """``dry_run=true``: what would run, loading nothing."""
    print(
        f"task={cfg.task.name} pair={cfg.pair.name} split={cfg.data.split or cfg.task.split} limit={cfg.data.limit}"
    )
    print(f"{len(runs)} configurations:")
    for run in runs:
        print(f"  {run.config_id} {run.study:<18} small={run.small_variant:<8} {run.params}")


def select_examples(task: TaskSpec, cfg: DictConfig) -> tuple[list[Example], int]:
    """The data slice; empty sources are skipped (and counted) or refused, as configured."""
    policy = cfg.scoring.empty_sources
    if policy not in EMPTY_SOURCE_POLICIES:
        raise DataError(
            f"scoring.empty_sources={policy!r} is invalid: accepted {', '.join(EMPTY_SOURCE_POLICIES)}"
        )
    examples = load_examples(task, cfg.data.split or task.split, cfg.data.limit)
    kept = [e for e in examples if e.source.removeprefix(task.source_prefix).strip()]
    if len(kept) < len(examples) and policy == "error":
        raise DataError(
            f"{len(examples) - len(kept)} examples have an empty source: set scoring.empty_sources=skip"
        )
    if not kept:
        raise DataError(f"task {task.name!r} has no examples with a source in this slice")
    return kept, len(examples) - len(kept)


def dataset_fingerprint(examples: list[Example]) -> str:
    digest = hashlib.sha256()
    for example in examples:
        digest.update(f"{example.id}\x00{example.source}\x00{example.target}\x01".encode())
    return digest.hexdigest()


def compatibility(
    cfg: DictConfig, task: TaskSpec, device: str, runs: list[RunConfig]
) -> dict[str, Any]:
    """What must match for records to share a folder (the data limit may grow).

    The early-exit depth and CALM's model count only when a planned run uses them, so
    folders of sweeps without them keep their fingerprint.
    """
    uses = {
        "early_exit_layers": any(run.small_variant == "early_exit" for run in runs),
        "calm_model": any(run.method == "calm" for run in runs),
    }
    return {
        "task": task.name,
        "dataset": task.hub_id or str(task.data_files),
        "split": cfg.data.split or task.split,
        "source_prefix": task.source_prefix,
        "large": cfg.pair.large,
        "small": cfg.pair.small,
        "small_aligned": cfg.pair.get("small_aligned"),
        "dtype": cfg.pair.dtype,
        "device": device,
        "max_new_tokens": cfg.max_new_tokens or task.max_new_tokens,
        "max_source_length": task.max_source_length,
        **{name: cfg.pair.get(name) for name, used in uses.items() if used},
    }


def truncate_references(references: pd.Series, tokenizer: Any, n_tokens: int | None) -> pd.Series:
    """The official code scored against references cut to 128 tokens; optional here."""
    if not n_tokens:
        return references
    return references.map(
        lambda text: tokenizer.decode(
            tokenizer(text, add_special_tokens=False)["input_ids"][:n_tokens]
        )
    )


def run_sweep(cfg: DictConfig, runs: list[RunConfig]) -> SweepOutcome:
    task = task_from_config(cfg.task)
    examples, n_empty = select_examples(task, cfg)
    variants = sorted({run.small_variant for run in runs if run.small_variant != "-"})
    pair = load_pair(cfg.pair, variants, need_calm=any(run.method == "calm" for run in runs))
    device = device_description(pair.device)
    fingerprint = compatibility(cfg, task, device["device_name"], runs)
    run_dir = (
        Path(cfg.results_dir) / cfg.experiment_name / (cfg.run or f"{task.name}_{cfg.pair.name}")
    )
    store, baselines = (
        RecordStore(run_dir),
        RecordStore(Path(cfg.baselines_dir) / short_hash(fingerprint)),
    )
    store.claim(fingerprint)
    baselines.claim(fingerprint)
    items = encode(examples, pair.tokenizer, task.max_source_length, pair.device)
    context = {"task": task.name, "pair": cfg.pair.name, "split": cfg.data.split or task.split}
    max_new_tokens = cfg.max_new_tokens or task.max_new_tokens
    with tqdm(total=len(runs) * len(items), disable=not cfg.progress, unit="example") as bar:
        for index, run in enumerate(runs):
            bar.set_description(f"config {index + 1}/{len(runs)} {run.study}")
            target = baselines if run.is_baseline else store
            execute_run(
                run,
                items,
                pair,
                target,
                context,
                max_new_tokens,
                cfg.data.warmup,
                lambda: bar.update(1),
            )
    records = collect_records(runs, examples, store, baselines)
    records["scored_reference"] = truncate_references(
        records["reference"], pair.tokenizer, cfg.scoring.truncate_references
    )
    quality = quality_column(task.metric, task.extra.get("quality"))
    scoring = OmegaConf.to_container(cfg.scoring, resolve=True)
    summary = summarize(records, task.metric, quality, scoring)
    points = operating_points(summary, quality)
    manifest = build_manifest(cfg, examples, items, n_empty, device, dataset_fingerprint(examples))
    write_outputs(run_dir, summary, points, manifest, quality, cfg)
    print(format_summary(summary, quality, device))
    print("\nOperating points (best speedup with quality within the tolerance of vanilla large):")
    print(points.round(3).to_string(index=False))
    return SweepOutcome(run_dir, records, summary, points)


def short_hash(value: dict[str, Any]) -> str:
    return hashlib.sha1(repr(sorted(value.items())).encode()).hexdigest()[:16]


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
