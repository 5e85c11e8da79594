"""``dry_run=true``: what a sweep would run and how long it would take, loading nothing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from bild_exp.data.tasks import task_from_config
from bild_exp.harness.config.plan import RunConfig, reference_runs
from bild_exp.harness.config.settings import resolve_settings
from bild_exp.harness.records.fingerprint import baselines_folder, compatibility, run_folder
from bild_exp.harness.records.store import RecordStore
from bild_exp.harness.run.blocks import BLOCK_COLUMNS, TIMING_COLUMNS, timing_work
from bild_exp.harness.scoring.metrics import quality_column
from bild_exp.models.pair import resolve_device
from bild_exp.timing import device_description


def print_plan(cfg: DictConfig, runs: list[RunConfig]) -> None:
    """``dry_run=true``: what would run, loading nothing: the data, scoring and lengths the
    runs use (to check them against the paper's pipeline), the configurations and the number
    of ``generate`` calls when the split's size is known."""
    task, settings = cfg.task, resolve_settings(cfg)
    split = settings.split
    print(f"task={task.name} pair={cfg.pair.name} split={split} limit={cfg.data.limit}")
    files = (task.get("hub_data_files") or {}).get(split)
    source = task.data_files[split] if task.get("data_files") else files
    print(
        f"data: hub_id={task.hub_id} config={task.hub_config} revision={task.get('revision')} "
        f"files={source}"
    )
    quality = quality_column(task.metric, task.get("quality"))
    scoring = cfg.scoring
    print(
        f"scoring: {quality} truncate_references={scoring.truncate_references} "
        f"clean_up_tokenization_spaces={scoring.get('clean_up_tokenization_spaces', False)} "
        f"max_new_tokens={settings.decode.max_new_tokens} "
        f"max_source_length={task.max_source_length} bild_schedule={cfg.get('bild_schedule')}"
    )
    known = [n for n in ((task.get("split_sizes") or {}).get(split), cfg.data.limit) if n]
    n_examples = min(known) if known else None  # the split's size, cut by data.limit
    if n_examples is not None:
        print(
            f"generate calls: {len(runs)} configurations x {n_examples} examples = "
            f"{len(runs) * n_examples:,} (plus {cfg.data.warmup} untimed warm-up each)"
        )
        print(time_estimate(cfg, runs, len(runs) * n_examples))
    print(stored_work(cfg, runs))
    print(f"{len(runs)} configurations:")
    for run in runs:
        print(f"  {run.config_id} {run.study:<18} small={run.small_variant:<8} {run.params}")


def time_estimate(cfg: DictConfig, runs: list[RunConfig], n_calls: int) -> str:
    """The sweep's time at vanilla large's per-token latency, measured by earlier runs on
    this device and libraries (the baselines folder this sweep would use); loads no model."""
    task = task_from_config(cfg.task)
    device = device_description(resolve_device(cfg.pair.device))
    fingerprint = compatibility(cfg, task, device, runs)
    baselines = RecordStore(baselines_folder(Path(cfg.baselines_dir), fingerprint, migrate=False))
    large = baselines.read(columns=["config_id", "example_id", "method", "latency_s", "n_tokens"])
    large = large[large["method"] == "large"] if len(large) else large
    if large.empty:
        return (
            f"estimated time: not yet measured: no vanilla-large records in "
            f"{str(baselines.directory)!r} (run once with data.limit=20 to measure)"
        )
    per_token = large["latency_s"].sum() / max(large["n_tokens"].sum(), 1)
    tokens_per_call = large["n_tokens"].mean()
    hours = n_calls * tokens_per_call * per_token / 3600
    return (
        f"estimated time: {hours:,.1f} h = {n_calls:,} calls x {tokens_per_call:.1f} tokens x "
        f"{1000 * per_token:.2f} ms/token (vanilla large, {len(large)} records on "
        f"{device['device_name']}; methods faster than vanilla large take less)"
    )


def stored_work(cfg: DictConfig, runs: list[RunConfig]) -> str:
    """What the stored records leave to time, on the examples they cover: new records, and
    re-timings (a record whose pair with vanilla large was not timed in one block is timed
    again with vanilla in this run's block; bild_exp.harness.run.blocks)."""
    task = task_from_config(cfg.task)
    device = device_description(resolve_device(cfg.pair.device))
    fingerprint = compatibility(cfg, task, device, runs)
    folders = [
        run_folder(cfg, task),
        baselines_folder(Path(cfg.baselines_dir), fingerprint, migrate=False),
    ]
    columns = ["config_id", "example_id", *BLOCK_COLUMNS, *TIMING_COLUMNS]
    frames = [RecordStore(folder).read_records(columns) for folder in folders]
    stored = pd.concat([f for f in frames if len(f)] or [frames[0]], ignore_index=True)
    planned = {run.config_id for run in runs}
    stored = stored[stored["config_id"].isin(planned)]
    if stored.empty:
        return "stored records: none (every call above is new)"
    examples = list(dict.fromkeys(stored["example_id"]))
    work = timing_work(
        [run.config_id for run in runs],
        reference_runs(runs),
        examples,
        stored,
        cfg.sweep.retime_loaded,
    )
    n_done = len(stored.drop_duplicates(["config_id", "example_id"]))
    return (
        f"stored records: {n_done:,} of the planned configurations; on the {len(examples):,} "
        f"examples they cover, {work.n_new:,} new and {work.n_retimed:,} re-timed calls "
        "(a stored record whose vanilla pair was timed in another run is timed again beside it)"
    )
