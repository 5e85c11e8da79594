"""One BiLD output of a run folder, for the per-token notebook (paper Figure 9).

Raw records are git-ignored, so a fresh clone has a run's summaries but not its tokens:
then one of the run's own examples is decoded now, with the run's best-speedup BiLD
configuration, so the notebook works on what a fresh clone has.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from bild_exp.data.tasks import DataError, load_examples, task_from_config
from bild_exp.decoding.registry import parameter_types
from bild_exp.harness.config.plan import PARAM_COLUMNS, RunConfig
from bild_exp.harness.config.settings import resolve_settings
from bild_exp.harness.records.store import RecordStore
from bild_exp.harness.run.decode import EncodedExample, decode_once, encode, output_text, record
from bild_exp.models.pair import LoadSettings, load_pair

INTEGER_PARAMS = tuple(name for name, kind in parameter_types().items() if kind is int)


def bild_example(run_dir: Path, n_candidates: int = 8) -> pd.Series:
    """The run's BiLD record with the most rollbacks, from its records or decoded now."""
    records = RecordStore(run_dir).read()
    if "method" in records and (records["method"] == "bild").any():
        bild = records[records["method"] == "bild"]
        return bild.sort_values("n_rollbacks", ascending=False).iloc[0]
    return decode_bild_example(run_dir, n_candidates)


def decode_bild_example(run_dir: Path, n_candidates: int) -> pd.Series:
    summary = pd.read_csv(run_dir / "summary.csv")
    bild = summary[summary["method"] == "bild"]
    if bild.empty:
        raise DataError(f"run folder {str(run_dir)!r} has no BiLD configuration in summary.csv")
    best = bild.sort_values("speedup", ascending=False).iloc[0]
    run = RunConfig(best["study"], "bild", best["small_variant"], row_params(best))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    config = OmegaConf.create(manifest["config"])
    task, settings = task_from_config(config.task), resolve_settings(config)
    # the kernels the run's records were decoded with (folders from before: plain)
    kernels = manifest.get("cpu_kernels", "plain")
    pair = load_pair(
        config.pair, [run.small_variant], settings=LoadSettings.for_pair(config.pair, kernels)
    )
    examples = load_examples(task, settings.split, n_candidates)
    items = encode(examples, pair.tokenizer, task, pair.device, config.pair.architecture)
    max_new_tokens, stops = settings.decode.max_new_tokens, settings.decode.stop_strings
    rows = [decode_row(run, pair, item, max_new_tokens, stops) for item in items]
    return pd.Series(max(rows, key=lambda row: row["n_rollbacks"]))


def decode_row(
    run: RunConfig,
    pair: Any,
    item: EncodedExample,
    max_new_tokens: int,
    stop_strings: list[str] | None,
) -> dict:
    result = decode_once(run, pair, item.input_ids, max_new_tokens, stop_strings)
    hypothesis = output_text(pair.tokenizer, result.tokens, stop_strings)
    return record(run, item, result, float("nan"), hypothesis)


def row_params(row: pd.Series) -> dict[str, Any]:
    """A summary row's decoding parameters, typed as the engine takes them."""
    params = {}
    for name in PARAM_COLUMNS:
        value = row.get(name)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if name in INTEGER_PARAMS:
            value = int(value)
        elif hasattr(value, "item"):
            value = value.item()
        params[name] = value
    return params
