"""The analysis package on hand-made summaries and records: one comparison with vanilla
large and one operating-point chooser, whichever of the sweep, the bench and
``bild_exp.paper`` asks; each configuration's reference found by its sampling settings."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bild_exp import paper
from bild_exp.analysis.comparison import (
    add_comparisons,
    default_stats,
    reference_config_ids,
    stats_settings,
    vanilla_row,
)
from bild_exp.analysis.operating_points import (
    POINT_COLUMNS,
    best_quality_at_speedup,
    choose_point,
    family_rows,
    operating_points,
)
from bild_exp.analysis.summary import summarize
from bild_exp.bench.methods import contenders
from bild_exp.bench.run import method_row
from bild_exp.harness.config.plan import PARAM_COLUMNS
from bild_exp.harness.scoring.metrics import Scoring
from tests.harness_fixtures import compose_sweep

QUALITY = "pass_at_1"
TOLERANCES = (0.0, 1.0, 5.0)


def summary_row(config_id: str, study: str, quality: float, speedup: float, **more) -> dict:
    row = dict.fromkeys(PARAM_COLUMNS)
    row.update(
        config_id=config_id,
        study=study,
        method=more.pop("method", study),
        small_variant=more.pop("small_variant", "-" if study == "large" else "base"),
        sampling="greedy",
        pass_at_1=quality,
        speedup=speedup,
        normalized_latency=1 / speedup,
        **more,
    )
    row["family"] = study if row["small_variant"] == "-" else f"{study}/{row['small_variant']}"
    return row


def a_summary() -> pd.DataFrame:
    """Vanilla large at 90; BiLD points trading pass@1 for speed; the quality difference's
    lower bound wider than the point loss (the ci rule is stricter); speculative windows."""
    rows = [summary_row("L", "large", 90.0, 1.0)]
    for i, (fallback, rollback, quality, speedup, diff_low) in enumerate(
        [
            (0.3, 1.0, 90.0, 1.4, -0.5),
            (0.5, 2.0, 89.5, 1.8, -3.0),
            (0.7, 3.0, 88.0, 2.1, -4.5),
            (0.9, 5.0, 80.0, 2.6, -15.0),
        ]
    ):
        rows.append(
            summary_row(
                f"B{i}",
                "bild",
                quality,
                speedup,
                fallback_threshold=fallback,
                rollback_threshold=rollback,
                max_small_steps=10,
                quality_diff=quality - 90.0,
                quality_diff_low=diff_low,
                quality_diff_high=quality - 90.0 - diff_low,
            )
        )
    for window, speedup in ((3, 1.5), (5, 1.7)):
        rows.append(summary_row(f"S{window}", "speculative", 90.0, speedup, window=window))
    return pd.DataFrame(rows)


def test_stats_defaults_have_one_home_the_sweep_config():
    cfg = compose_sweep([])
    assert default_stats() == dict(cfg.stats)
    assert stats_settings({"bootstrap": 7}) == {**dict(cfg.stats), "bootstrap": 7}


def test_each_configuration_is_compared_with_the_vanilla_run_of_its_sampling_settings():
    greedy = summary_row("Lg", "large", 90.0, 1.0)
    nucleus = {**summary_row("Ln", "large", 85.0, 1.0), "sampling": "nucleus", "top_p": 0.8}
    bild = {**summary_row("B", "bild", 84.0, 2.0), "sampling": "nucleus", "top_p": 0.8}
    summary = pd.DataFrame([greedy, nucleus, bild])
    assert reference_config_ids(summary) == {"Lg": "Lg", "Ln": "Ln", "B": "Ln"}
    assert vanilla_row(summary, "B")["config_id"] == "Ln"
    assert vanilla_row(summary)["config_id"] == "Lg"  # without a configuration: the greedy one
    assert vanilla_row(summary[summary["method"] != "large"]) is None
    # the chooser measures "within" against that reference, not the first large row
    row, rule = choose_point(summary, "bild/base", QUALITY, 1.0, ["point"])
    assert (row["config_id"], rule) == ("B", "point")
    assert choose_point(summary, "bild/base", QUALITY, 0.5, ["point"]) == (None, None)


def test_the_choosers_rules_by_hand():
    summary = a_summary()
    # point: within 1 of 90 -> 89.5 at 1.8x; ci: the lower bound -0.5 >= -1 -> 1.4x
    assert choose_point(summary, "bild/base", QUALITY, 1.0, ["point"])[0]["config_id"] == "B1"
    assert choose_point(summary, "bild/base", QUALITY, 1.0, ["ci"])[0]["config_id"] == "B0"
    # rules tried in order: none within 0.1 by ci, then point finds 90.0 at 1.4x
    row, rule = choose_point(summary, "bild/base", QUALITY, 0.1, ["ci", "point"])
    assert (row["config_id"], rule) == ("B0", "point")
    assert choose_point(summary, "nothing/*", QUALITY, 1.0) == (None, None)
    assert list(family_rows(summary, "speculative/*")["config_id"]) == ["S3", "S5"]
    assert best_quality_at_speedup(family_rows(summary, "bild/*"), QUALITY, 2.0)["config_id"] == (
        "B2"
    )
    assert best_quality_at_speedup(family_rows(summary, "bild/*"), QUALITY, 3.0) is None


def test_an_operating_point_records_every_parameter_of_its_run():
    assert set(PARAM_COLUMNS) <= set(POINT_COLUMNS)
    summary = pd.DataFrame(
        [
            summary_row("L", "large", 90.0, 1.0),
            summary_row("H4", "hf_assisted", 90.0, 1.3, num_assistant_tokens=4),
            summary_row("P10", "prompt_lookup", 90.0, 1.6, prompt_lookup_num_tokens=10),
        ]
    )
    points = operating_points(summary, QUALITY, [1.0]).set_index(["family", "rule"])
    assert points.loc[("hf_assisted/base", "point"), "num_assistant_tokens"] == 4
    assert points.loc[("prompt_lookup/base", "point"), "prompt_lookup_num_tokens"] == 10


def write_run_folder(folder, summary: pd.DataFrame) -> None:
    """A results folder as the sweep writes it, as far as ``bild_exp.paper`` reads it."""
    folder.mkdir(parents=True)
    summary.to_csv(folder / "summary.csv", index=False)
    operating_points(summary, QUALITY, TOLERANCES).to_csv(
        folder / "operating_points.csv", index=False
    )
    task = {"name": "hand_made", "metric": "pass_at_1", "quality": None}
    (folder / "manifest.json").write_text(json.dumps({"config": {"task": task}}))


def test_the_sweep_the_bench_and_the_paper_choose_the_same_operating_point(tmp_path):
    """One summary, three readers: the sweep's operating_points.csv, the bench's contenders
    and the paper's Table 5 rows name the same configuration at every tolerance."""
    summary = a_summary()
    points = operating_points(summary, QUALITY, TOLERANCES)
    bild = points[(points["family"] == "bild/base") & (points["rule"] == "point")]
    sweep_choice = bild.set_index("tolerance")["config_id"]

    chosen, _ = contenders(summary, QUALITY, list(TOLERANCES), 0.4, ["base"], ["point"])
    thresholds = summary.set_index(["fallback_threshold", "rollback_threshold"])["config_id"]
    bench_choice = {}
    for contender in chosen:
        if contender.name.startswith("BiLD unaligned (within "):
            tolerance = float(contender.name.split("within ")[1].rstrip(")"))
            key = (contender.params["fallback_threshold"], contender.params["rollback_threshold"])
            bench_choice[tolerance] = thresholds[key]

    write_run_folder(tmp_path / "run", summary)
    by_id = summary.set_index("config_id")
    paper_rows = {row["row"]: row for row in paper.table5_rows(tmp_path / "run")}

    assert dict(sweep_choice) == bench_choice == {0.0: "B0", 1.0: "B1", 5.0: "B2"}
    for tolerance in (0.0, 1.0):  # Table 5's tolerances
        row = paper_rows[f"bild (within {tolerance:g})"]
        mine = by_id.loc[sweep_choice[tolerance]]
        assert row["speedup"] == mine["speedup"]
        assert row["thresholds (RB, FB)"] == paper.thresholds(mine)


def hand_made_records(n: int = 12) -> pd.DataFrame:
    """Vanilla large and one faster configuration on ``n`` problems in two timing blocks;
    the faster one fails two problems vanilla passes."""
    rng = np.random.default_rng(3)
    rows = []
    for i in range(n):
        block = "A" if i < n // 2 else "B"
        vanilla = rng.uniform(1.0, 3.0)
        for config, latency, passed in (
            ("L", vanilla, True),
            ("B", vanilla / rng.uniform(1.5, 2.5), i not in (2, 9)),
        ):
            rows.append(
                {
                    "config_id": config,
                    "method": "large" if config == "L" else "bild",
                    "study": "large" if config == "L" else "bild",
                    "small_variant": "-" if config == "L" else "base",
                    "example_id": f"e{i}",
                    "block_id": block,
                    "block_started": "2026-12-07T00:00:00"
                    if block == "A"
                    else "2026-12-07T01:00:00",
                    "cpu_cores": 2,
                    "load_before": 0.5,
                    "load_after": 0.5,
                    "latency_s": latency,
                    "n_tokens": 40,
                    "passed": passed,
                    "execution": "passed" if passed else "failed",
                    "n_large_calls": 40 if config == "L" else 6,
                    "accepted_lengths": None if config == "L" else [5, 6, 7],
                    "drafted_lengths": None if config == "L" else [7, 7, 7],
                    "n_fallbacks": 0 if config == "L" else 3,
                    "n_rollbacks": 0 if config == "L" else 1,
                    "n_oracle_replacements": 0,
                    "hypothesis": f"answer {i}" if passed else "wrong",
                    "tokens": [i] if passed else [-1],
                }
            )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("bootstrap", [200, 1000])
def test_the_bench_and_the_sweep_compare_with_vanilla_identically(bootstrap):
    """The bench's row for a contender is the sweep's comparison on the same records, with
    the same seed: same speedup, interval and quality difference to the last digit."""
    records = hand_made_records()
    settings = stats_settings({"bootstrap": bootstrap})
    summary = pd.DataFrame(
        [summary_row("L", "large", 100.0, 1.0), summary_row("B", "bild", 100 * 10 / 12, 1.0)]
    )
    swept = add_comparisons(summary, records, Scoring("pass_at_1", QUALITY), settings)
    swept = swept.set_index("config_id").loc["B"]
    groups = dict(tuple(records.groupby("config_id")))
    bench = method_row(groups["B"], groups["L"], "pass_at_1", QUALITY, settings, None)
    for column in (
        "speedup",
        "speedup_low",
        "speedup_high",
        "quality_diff",
        "quality_diff_low",
        "quality_diff_high",
        "quality_p_value",
    ):
        assert bench[column] == swept[column], column
    assert bench[QUALITY] == pytest.approx(100 * 10 / 12)
    assert swept["quality_diff"] == pytest.approx(-100 * 2 / 12)
    assert 1.5 <= swept["speedup_low"] < swept["speedup"] < swept["speedup_high"] <= 2.5


def test_a_summary_row_per_configuration_from_records():
    """summarize: quality, rates per 100 tokens, acceptance, agreement with vanilla's
    answers, the comparison and the Pareto flag, one row per configuration."""
    records = hand_made_records()
    summary = summarize(records, Scoring("pass_at_1", QUALITY), stats_settings({"bootstrap": 200}))
    summary = summary.set_index("config_id")
    vanilla, bild = summary.loc["L"], summary.loc["B"]
    assert (vanilla[QUALITY], bild[QUALITY]) == (100.0, pytest.approx(100 * 10 / 12))
    assert (vanilla["n_examples"], bild["n_tokens"]) == (12, 12 * 40)
    assert bild["large_call_pct"] == pytest.approx(100 * 6 / 40)
    assert bild["fallback_pct"] == pytest.approx(100 * 3 / 40)
    assert bild["rollback_pct"] == pytest.approx(100 * 1 / 40)
    assert bild["acceptance_rate"] == pytest.approx(18 / 21)
    assert json.loads(bild["acceptance_by_position"]) == [1.0] * 5 + [0.6667, 0.3333]
    assert vanilla["acceptance_rate"] is None or pd.isna(vanilla["acceptance_rate"])
    assert bild["exact_match_vs_large"] == pytest.approx(100 * 10 / 12)
    assert vanilla["exact_match_vs_large"] == 100.0
    assert vanilla["speedup"] == pytest.approx(1.0)
    assert bild["speedup"] > 1.5 and bild["n_timing_blocks"] == 2
    assert bild["family"] == "bild/base" and bild["pareto"]
