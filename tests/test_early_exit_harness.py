"""Early-exit BiLD, CALM and the cost columns through the sweep and the paper targets."""

from __future__ import annotations

import sys

import pandas as pd
import pytest

from bild_exp import paper, sweep
from bild_exp.analysis.summary import summarize
from bild_exp.data.tasks import task_from_config
from bild_exp.harness.config.plan import plan_runs
from bild_exp.harness.records.fingerprint import compatibility
from bild_exp.harness.scoring.metrics import Scoring
from bild_exp.timing import device_description
from tests.harness_fixtures import ONE_BILD_POINT, compose_sweep, tiny_overrides

EARLY_EXIT_GRID = (
    "grid.fallback_threshold=[0.5]",
    "grid.rollback_threshold=[2.0]",
    "grid.exit_threshold=[0.5]",
    "grid.decay_temperature=[0]",
    "data.limit=3",
)


def early_exit_overrides(assets, results, experiment: str) -> list[str]:
    pair, _ = assets
    return tiny_overrides(
        assets,
        results,
        f"+experiment={experiment}",
        f"pair.early_exit_model={pair['large']}",
        "pair.early_exit_layers=1",
        f"pair.calm_model={pair['small_aligned'].replace('small_aligned', 'large')}",
        *EARLY_EXIT_GRID,
    )


def run_paper(monkeypatch, experiment: str, results) -> pd.DataFrame:
    monkeypatch.setattr(sys, "argv", ["paper", experiment, "--results-dir", str(results)])
    paper.main()
    return pd.read_csv(results / experiment / f"{experiment}.csv")


def test_fig7_runs_early_exit_bild_and_calm_with_cost_columns(tiny_assets, tmp_path, monkeypatch):
    outcome = sweep.run(compose_sweep(early_exit_overrides(tiny_assets, tmp_path, "fig7")))
    summary = pd.read_csv(outcome.run_dir / "summary.csv")
    assert set(summary["family"]) == {"large", "bild/early_exit", "calm", "calm_full"}
    calm = summary[summary["study"] == "calm"].iloc[0]
    full = summary[summary["study"] == "calm_full"].iloc[0]
    assert 1 <= calm["mean_exit_layer"] <= 2 and full["mean_exit_layer"] == 2
    records = outcome.records
    assert records["flops"].gt(0).all() and records["mops_bytes"].gt(0).all()
    assert summary["arithmetic_intensity"].gt(0).all()
    table = run_paper(monkeypatch, "fig7", tmp_path)
    assert {"bild", "calm", "calm_full", "large"} <= set(table["study"])
    assert (outcome.run_dir / "fig7_pareto.png").exists()


def test_fig6_exit_layers_alone_cost_less_per_token_than_the_full_model(
    tiny_assets, tmp_path, monkeypatch
):
    outcome = sweep.run(compose_sweep(early_exit_overrides(tiny_assets, tmp_path, "fig6")))
    summary = pd.read_csv(outcome.run_dir / "summary.csv").set_index("family")
    assert set(summary.index) == {"large", "small/early_exit", "bild/early_exit"}
    assert (
        summary.loc["small/early_exit", "flops_per_token"] < summary.loc["large", "flops_per_token"]
    )
    run_paper(monkeypatch, "fig6", tmp_path)
    assert (outcome.run_dir / "fig6_pareto.pdf").exists()


def test_fig8_draws_costs_normalised_to_vanilla(tiny_assets, tmp_path, monkeypatch):
    overrides = tiny_overrides(tiny_assets, tmp_path, "+experiment=fig8", *EARLY_EXIT_GRID)
    outcome = sweep.run(compose_sweep(overrides))
    table = run_paper(monkeypatch, "fig8", tmp_path)
    vanilla = table[table["config"] == "vanilla large"].iloc[0]
    assert vanilla["flops_per_token_normalized"] == pytest.approx(1.0)
    assert any(table["config"].str.startswith("BiLD"))
    assert (outcome.run_dir / "fig8_costs.png").exists()


def test_early_exit_variant_needs_its_depth(tiny_assets, tmp_path):
    overrides = tiny_overrides(
        tiny_assets,
        tmp_path,
        "pair.small_variants=[early_exit]",
        "method=bild",
        "pair.early_exit_layers=null",
    )
    with pytest.raises(ValueError, match=r"^pair.early_exit_layers=None is invalid"):
        sweep.run(compose_sweep(overrides))


@pytest.mark.parametrize(
    ("experiment", "expected"),
    [(None, set()), ("fig6", {"early_exit_layers"}), ("fig7", {"early_exit_layers", "calm_model"})],
)
def test_folder_fingerprint_names_early_exit_settings_only_when_runs_use_them(
    tmp_path, experiment, expected
):
    """Sweeps without early exit or CALM keep the fingerprint folders were written with."""
    overrides = ["+task=demo"] + ([f"+experiment={experiment}"] if experiment else [])
    cfg = compose_sweep(overrides)
    device = device_description("cpu")
    fingerprint = compatibility(cfg, task_from_config(cfg.task), device, plan_runs(cfg))
    used = {key for key in ("early_exit_layers", "calm_model") if fingerprint[key] is not None}
    assert used == expected


def test_early_exit_depth_beyond_the_model_fails_before_weights_load(
    tiny_assets, tmp_path, monkeypatch
):
    import bild_exp.models.pair as models

    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded")

    overrides = early_exit_overrides(tiny_assets, tmp_path, "fig6")
    monkeypatch.setattr(models.AutoModelForSeq2SeqLM, "from_pretrained", refuse)
    with pytest.raises(
        ValueError, match=r"^pair.early_exit_layers=2 is invalid: accepted an integer in 1\.\.1"
    ):
        sweep.run(compose_sweep([*overrides, "pair.early_exit_layers=2"]))


def test_records_written_before_the_new_columns_still_summarize(tiny_assets, tmp_path):
    """Record parts from earlier versions lack CALM's parameters and the cost columns."""
    outcome = sweep.run(compose_sweep(tiny_overrides(tiny_assets, tmp_path, *ONE_BILD_POINT)))
    old = outcome.records.drop(
        columns=["exit_threshold", "decay_temperature", "min_exit_layer", "flops", "mops_bytes"]
    )
    summary = summarize(old, Scoring("bleu", "bleu"))
    assert summary["exit_threshold"].isna().all() and summary["flops_per_token"].isna().all()
    assert len(summary) == len(outcome.summary)
