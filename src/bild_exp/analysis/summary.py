"""One summary row per configuration from tidy records: quality, latency, policy rates,
acceptance, costs, the comparison with vanilla large (:mod:`bild_exp.analysis.comparison`)
and Pareto flags (:mod:`bild_exp.analysis.operating_points`). Records are the source of
truth; nothing here is stored that cannot be recomputed from them."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from bild_exp.analysis import stats
from bild_exp.analysis.comparison import add_comparisons, exact_share, reference_config_ids
from bild_exp.analysis.operating_points import add_pareto
from bild_exp.harness.config.plan import PARAM_COLUMNS
from bild_exp.harness.run.blocks import latest_outputs
from bild_exp.harness.scoring.code_execution import pass_at_1
from bild_exp.harness.scoring.metrics import Scoring, metric_options, score

CONFIG_COLUMNS = ["config_id", "study", "method", "small_variant", *PARAM_COLUMNS]


def summarize_config(group: pd.DataFrame, metric: str, scoring: dict[str, Any]) -> dict[str, Any]:
    """Quality, latency and policy rates of one configuration over its examples."""
    first = group.iloc[0]
    n_tokens = group["n_tokens"].sum()
    accepted = [n for lengths in group["accepted_lengths"].dropna() for n in lengths]
    # .get: records written before a parameter column existed simply lack it
    row = {column: first.get(column) for column in CONFIG_COLUMNS}
    row = {column: None if pd.isna(value) else value for column, value in row.items()}
    if metric == "pass_at_1":  # executed answers (bild_exp.harness.scoring.code_execution)
        row.update(pass_at_1(group))
    else:
        row.update(
            score(
                metric,
                list(group["scored_hypothesis"]),
                list(group["scored_reference"]),
                **metric_options(scoring),
            )
        )
    row.update(
        n_examples=len(group),
        n_tokens=int(n_tokens),
        total_latency_s=group["latency_s"].sum(),
        mean_latency_s=group["latency_s"].mean(),
        tokens_per_s=n_tokens / group["latency_s"].sum(),
        fallback_pct=100 * group["n_fallbacks"].sum() / max(n_tokens, 1),
        rollback_pct=100 * group["n_rollbacks"].sum() / max(n_tokens, 1),
        large_call_pct=100 * group["n_large_calls"].sum() / max(n_tokens, 1),
        mean_accepted_length=float(np.mean(accepted)) if accepted else None,
        n_oracle_replacements=int(group["n_oracle_replacements"].sum()),
    )
    row.update(latency_spread(group["latency_s"]))
    row.update(acceptance_summary(group))
    row.update(source_summary(group, n_tokens))
    row.update(cost_summary(group, n_tokens))
    exits = [
        d for depths in group.get("exit_layers", pd.Series(dtype=object)).dropna() for d in depths
    ]
    row["mean_exit_layer"] = float(np.mean(exits)) if exits else None
    return row


def latency_spread(latency: pd.Series) -> dict[str, float]:
    """The per-example latency distribution next to the totals."""
    p10, median, p90 = np.percentile(latency.to_numpy(float), [10, 50, 90])
    return {"latency_p10_s": p10, "latency_median_s": median, "latency_p90_s": p90}


def acceptance_summary(group: pd.DataFrame) -> dict[str, Any]:
    """Acceptance rate (draft tokens kept / checked) and per-position acceptance, where the
    method drafts (BiLD, speculative) and the records say how many tokens each large pass
    checked; None elsewhere (vanilla, HF assisted, records written before the column)."""
    empty = dict.fromkeys(
        ("acceptance_rate", "acceptance_by_position", "position_accepted", "position_drafted")
    )
    if "drafted_lengths" not in group:
        return empty
    calls = group.dropna(subset=["drafted_lengths", "accepted_lengths"])
    if len(calls) < len(group) or not any(len(d) for d in calls["drafted_lengths"]):
        return empty
    accepted, drafted = stats.acceptance_by_position(
        list(calls["accepted_lengths"]), list(calls["drafted_lengths"])
    )
    return {
        "acceptance_rate": sum(accepted) / sum(drafted) if sum(drafted) else None,
        "acceptance_by_position": json.dumps(
            [round(a / d, 4) for a, d in zip(accepted, drafted, strict=True)]
        ),
        "position_accepted": json.dumps(accepted),
        "position_drafted": json.dumps(drafted),
    }


SOURCE_COLUMNS = (
    "n_ngram_tokens",
    "ngram_token_pct",
    "ngram_drafted",
    "ngram_accepted",
    "ngram_acceptance_rate",
    "small_acceptance_rate",
    "ngram_large_calls",
    "small_large_calls",
    "ngram_acceptance_by_position",
    "small_acceptance_by_position",
)


def source_summary(group: pd.DataFrame, n_tokens: int) -> dict[str, Any]:
    """Per draft source (``draft_source="ngram+small"``): output tokens each wrote, draft
    tokens proposed and kept, the large passes each sent, and per-position acceptance
    (positions counted from the start of that source's part of a pass); None where no
    record has an n-gram draft (other draft sources, methods that do not draft, records
    written before the columns)."""
    empty = dict.fromkeys(SOURCE_COLUMNS)
    needed = ["draft_sources", "ngram_drafted_lengths", "ngram_accepted_lengths"]
    if any(column not in group for column in needed):
        return empty
    calls = group.dropna(subset=[*needed, "drafted_lengths", "accepted_lengths"])
    if len(calls) < len(group) or not any("ngram" in list(s) for s in calls["draft_sources"]):
        return empty
    parts: dict[str, tuple[list[list[int]], list[list[int]]]] = {
        "ngram": ([], []),
        "small": ([], []),
    }
    for _, row in calls.iterrows():
        drafted, accepted = list(row["drafted_lengths"]), list(row["accepted_lengths"])
        ngram_drafted, ngram_kept = (
            list(row["ngram_drafted_lengths"]),
            list(row["ngram_accepted_lengths"]),
        )
        small_drafted = [d - n for d, n in zip(drafted, ngram_drafted, strict=True)]
        small_kept = [min(a, d) for a, d in zip(accepted, small_drafted, strict=True)]
        parts["ngram"][0].append(ngram_kept)
        parts["ngram"][1].append(ngram_drafted)
        parts["small"][0].append(small_kept)
        parts["small"][1].append(small_drafted)
    out: dict[str, Any] = {}
    for source, (kept, drafted) in parts.items():
        n_kept, n_drafted = sum(map(sum, kept)), sum(map(sum, drafted))
        out[f"{source}_acceptance_rate"] = n_kept / n_drafted if n_drafted else None
        by_position = stats.acceptance_by_position(kept, drafted)
        out[f"{source}_acceptance_by_position"] = json.dumps(
            [round(a / d, 4) for a, d in zip(*by_position, strict=True) if d]
        )
        if source == "ngram":
            out.update(ngram_drafted=int(n_drafted), ngram_accepted=int(n_kept))
    sources = [source for row in calls["draft_sources"] for source in row]
    n_ngram_tokens = int(group["n_ngram_tokens"].sum())
    return {
        **out,
        "n_ngram_tokens": n_ngram_tokens,
        "ngram_token_pct": 100 * n_ngram_tokens / max(n_tokens, 1),
        "ngram_large_calls": sources.count("ngram"),
        "small_large_calls": sources.count("small"),
    }


def cost_summary(group: pd.DataFrame, n_tokens: int) -> dict[str, float | None]:
    """Analytical FLOPs and bytes per generated token, and their ratio (paper Figure 8).

    None when any example lacks them (HF assisted, or records written before they existed)."""
    names = ("flops_per_token", "mops_bytes_per_token", "arithmetic_intensity")
    if "flops" not in group or group["flops"].isna().any() or not n_tokens:
        return dict.fromkeys(names)
    flops, moved = group["flops"].sum(), group["mops_bytes"].sum()
    return dict(zip(names, (flops / n_tokens, moved / n_tokens, flops / moved), strict=True))


def summarize(
    records: pd.DataFrame,
    scoring: Scoring,
    settings: dict[str, Any] | None = None,
    timings: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per configuration, with speedups, intervals and Pareto flags. ``records``:
    the outputs (where an example was re-timed in another block and has one record per
    block, the latest is used); ``timings``: every timed record (default ``records``).
    Quality comes from one record per (configuration, example), speedups from the
    same-block pairs of the timings."""
    outputs = latest_outputs(records)
    timings = records if timings is None else timings
    rows = [
        summarize_config(group, scoring.metric, scoring.options)
        for _, group in outputs.groupby("config_id", sort=False)
    ]
    summary = pd.DataFrame(rows)
    summary = add_comparisons(summary, outputs, scoring, settings, timings)
    summary = add_agreement(summary, outputs, scoring.metric, scoring.options)
    return add_pareto(summary, scoring.quality)


def add_agreement(
    summary: pd.DataFrame, records: pd.DataFrame, metric: str, scoring: dict[str, Any]
) -> pd.DataFrame:
    """``agreement_vs_large``: each configuration's outputs scored against vanilla large's
    (BLEU, or ROUGE-L for ROUGE and pass@1 tasks) on the same examples: a lossy method is
    judged against both the references and the model it approximates; and
    ``exact_match_vs_large``, the percentage of examples whose output is vanilla's token
    for token (:func:`exact_share`)."""
    name = "bleu" if metric == "bleu" else "rougeL"
    agreement_metric = "bleu" if metric == "bleu" else "rouge"
    groups = dict(tuple(records.groupby("config_id", sort=False)))
    references = reference_config_ids(summary)
    values, exact = [], []
    for config in summary["config_id"]:
        reference = groups.get(references[config], records.iloc[:0])
        joined = groups[config].merge(
            reference[["example_id", "hypothesis", "tokens"]],
            on="example_id",
            suffixes=("", "_large"),
        )
        if joined.empty:
            values.append(None)
            exact.append(None)
            continue
        exact.append(exact_share(joined["tokens"], joined["tokens_large"]))
        scores = score(
            agreement_metric,
            list(joined["hypothesis"]),
            list(joined["hypothesis_large"]),
            **metric_options(scoring),
        )
        values.append(scores[name])
    summary = summary.copy()
    summary["agreement_vs_large"] = values
    summary["exact_match_vs_large"] = exact
    return summary
