"""`make bench` machinery on a tiny pair: it runs and writes well-formed output (speed is
never asserted)."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from bild_exp.analysis import stats
from bild_exp.bench.cost_model import CallTimes, ideal_bild_speedup, predicted_latency
from bild_exp.bench.run import run
from bild_exp.errors import InvalidParameterError
from bild_exp.sweep import with_default_task
from tests.harness_fixtures import CONF_DIR, tiny_overrides


def test_cost_model_by_hand():
    large = CallTimes(by_n_fed={1: 0.010, 11: 0.020}, encoder=0.005)
    small = CallTimes(by_n_fed={1: 0.002, 11: 0.004}, encoder=0.001)
    assert large.call(6) == pytest.approx(0.015)  # linear between measured sizes
    assert predicted_latency([(2, 0), (1, 2)], [(1, 0)], large, small) == pytest.approx(
        0.005 + 0.011 + 0.010 + 0.001 + 0.002
    )
    # 11 tokens: vanilla 11 x 10 ms; BiLD 10 x 2 ms + one 11-token pass of 20 ms.
    assert ideal_bild_speedup(large, small, 10) == pytest.approx(0.110 / 0.040)


def test_bootstrap_interval_contains_the_point_estimate():
    reference = pd.Series([2.0, 2.2, 1.8, 2.1] * 5).to_numpy()
    mine = pd.Series([1.0, 1.2, 0.9, 1.1] * 5).to_numpy()
    speedup = stats.ratio_interval(reference, mine, stats.bootstrap_indices(20, 500, seed=0))
    assert speedup.low <= reference.sum() / mine.sum() == speedup.estimate <= speedup.high
    assert speedup.low < speedup.high


# The bench end to end is slow (its settings checks stay in `make test`); max-autotune's
# generated kernels take minutes more to tune on a cold machine.
@pytest.mark.slow
@pytest.mark.parametrize(
    "compile_mode", ["default", pytest.param("max-autotune", marks=pytest.mark.slow)]
)
def test_bench_runs_end_to_end_on_a_tiny_pair(tiny_assets, tmp_path, compile_mode):
    overrides = tiny_overrides(tiny_assets, tmp_path, "pair.small_variants=[base,aligned]")
    overrides = [o for o in overrides if not o.startswith("data.limit")]
    overrides += [
        "data.limit=4",
        "grid.fallback_threshold=[0.5]",
        "grid.rollback_threshold=[2.0]",
        "grid.window=[2,3]",
        "grid.num_assistant_tokens=[2]",
        "bench.n_examples=4",
        "bench.warmup=1",
        "bench.bootstrap_samples=50",
        "bench.call_repeats=2",
        "bench.scale_workers=[1]",
        "bench.scale_examples=2",
        "bench.engine_section=false",
        f"bench.output_dir={tmp_path / 'bench'}",
        f"bench.compile_mode={compile_mode}",
        "task.split=test",
        "+task.data_files.test=${task.data_files.validation}",
    ]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = with_default_task(compose(config_name="bench", overrides=overrides))
    output_dir = run(cfg)
    table = pd.read_csv(output_dir / "bench.csv")
    assert table["method"].iloc[0] == "vanilla large (engine)"
    assert "vanilla large (HF generate)" in set(table["method"])
    assert {"HF assisted heuristic", "HF assisted confidence 0.4"} <= set(table["method"])
    # Speculative greedy is exact, so within 0.1 of vanilla it always has a candidate.
    assert table["method"].str.startswith("speculative (window=").any()
    assert table.loc[0, "speedup"] == 1.0
    for column in (
        "bleu",
        "total_latency_s",
        "speedup_ci95",
        "quality_diff_ci95",
        "quality_p_value",
        "acceptance_rate",
        "tokens_per_s",
        "large_calls_per_token",
    ):
        assert column in table
    report = (output_dir / "bench.md").read_text()
    # the contenders run on the sweeps' kernels (engine.cpu_kernels: auto, float32 on a CPU)
    assert "prepacked CPU kernels (engine.cpu_kernels)" in report
    for heading in (
        "Machine:",
        "Operating-point selection",
        "Cost model",
        "Ideal BiLD speedup",
        "output length",
        "joblib workers",
        f"compile mode `{compile_mode}`",  # bench.compile_mode's twins
        "default: compiled one-token step ms",  # and the default mode's per-call times
        f"{compile_mode}: eager / compiled",
    ):
        assert heading in report
    compiled = table[table["method"].str.endswith("(compiled)")]
    assert len(compiled) and compiled["achieved_over_predicted"].notna().all()


@pytest.mark.slow  # over ~25 s cold on the 2-core CI machine: `make test-slow`
def test_eager_and_compiled_call_times_are_measured_in_alternating_blocks(monkeypatch):
    """Both paths of every n_fed are timed round after round, back to back, so a drift in
    the machine's speed reaches both; each path keeps repeats x rounds calls per n_fed."""
    from bild_exp.bench import cost_model
    from tests.tiny_models import prompt, tiny_pair

    model = tiny_pair("llama", seed=0)[1]
    order: list[tuple[str | None, int]] = []
    real_forwards = cost_model.CallProbe.forwards

    def recording_forwards(self, k, repeats):
        order.append((self.mode, k))
        return real_forwards(self, k, repeats)

    monkeypatch.setattr(cost_model.CallProbe, "forwards", recording_forwards)
    paths = (None, "default", "max-autotune")
    times = cost_model.measure_paths(model, prompt("llama", 0), [1, 3], 6, 2, 3, paths)
    assert order == [(path, k) for _ in range(3) for k in (1, 3) for path in paths]
    assert set(times) == set(paths)
    for call_times in times.values():
        assert sorted(call_times.by_n_fed) == [1, 3]
        assert all(seconds > 0 for seconds in call_times.by_n_fed.values())
        assert call_times.encoder > 0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("bench.n_examples=-5", "bench.n_examples=-5 is invalid: accepted an integer >= 1"),
        ("bench.warmup=-1", "bench.warmup=-1 is invalid: accepted an integer >= 0"),
        ("bench.bootstrap_samples=0", "bench.bootstrap_samples=0 is invalid"),
        ("bench.tolerances=[]", "bench.tolerances=[] is invalid: accepted a non-empty list"),
        ("bench.scale_workers=[0]", "bench.scale_workers=[0] is invalid: accepted a list of"),
        ("bench.length_buckets=[a]", "bench.length_buckets=['a'] is invalid"),
    ],
)
def test_bad_bench_settings_are_refused_before_the_selection_sweep(override, message, monkeypatch):
    import bild_exp.bench.run as bench_run

    def no_work(*args, **kwargs):
        raise AssertionError("the selection sweep started before the settings were checked")

    monkeypatch.setattr(bench_run, "run_sweep", no_work)
    monkeypatch.setattr(bench_run, "plan_runs", no_work)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = with_default_task(compose(config_name="bench", overrides=[override]))
    with pytest.raises(InvalidParameterError, match="^" + re.escape(message)):
        run(cfg)
