"""Speedups measured side by side: a sweep interleaves its configurations per example in a
rotating order, every record carries its timing block, and a speedup divides only timings
of one example taken in one block (bild_exp.harness.run.blocks)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bild_exp import sweep
from bild_exp.analysis import stats
from bild_exp.analysis.comparison import compare_with_vanilla
from bild_exp.bench.cost_model import CallTimes
from bild_exp.errors import Interrupted
from bild_exp.harness.records.store import RecordStore
from bild_exp.harness.run import decode as execute
from bild_exp.harness.run.blocks import rotated, same_block_pairs, timing_work
from bild_exp.harness.run.modelled_latency import modelled_latency, with_modelled_latency
from tests.harness_fixtures import compose_sweep, tiny_overrides

GRID = (
    "method=bild",
    "grid.fallback_threshold=[0.3,0.7]",
    "grid.rollback_threshold=[2.0]",
    "pair.small_variants=[base]",
    "data.limit=5",
)


def all_records(results) -> pd.DataFrame:
    stores = [RecordStore(results / "sweep" / "custom_tiny")]
    stores += [RecordStore(d) for d in (results / "_baselines").iterdir()]
    return pd.concat([s.read() for s in stores], ignore_index=True)


@pytest.fixture
def call_log(monkeypatch):
    """Every warm-up and timed decode of a sweep, in order: (kind, config_id, example_id)."""
    calls = []
    warm_up, timed_decode = execute.warm_up, execute.timed_decode

    def logged_warm_up(run, pair, items, settings):
        calls.append(("warmup", run.config_id, None))
        return warm_up(run, pair, items, settings)

    def logged_timed_decode(run, pair, item, settings):
        calls.append(("timed", run.config_id, item.example.id))
        return timed_decode(run, pair, item, settings)

    monkeypatch.setattr(execute, "warm_up", logged_warm_up)
    monkeypatch.setattr(execute, "timed_decode", logged_timed_decode)
    return calls


def test_configurations_are_interleaved_per_example_in_a_rotating_order(
    tiny_assets, tmp_path, call_log
):
    outcome = sweep.run(compose_sweep(tiny_overrides(tiny_assets, tmp_path, *GRID)))
    configs = list(outcome.summary["config_id"])
    assert len(configs) == 3  # large and two BiLD points
    warmups = [c for kind, c, _ in call_log if kind == "warmup"]
    timed = [(c, e) for kind, c, e in call_log if kind == "timed"]
    # one warm-up per configuration, all before the first timed example
    assert sorted(warmups) == sorted(configs)
    assert [kind for kind, _, _ in call_log[: len(configs)]] == ["warmup"] * len(configs)
    # every configuration of an example runs before the next example
    examples = [e for _, e in timed]
    assert examples == sorted(examples, key=examples.index)
    blocks = [timed[i : i + len(configs)] for i in range(0, len(timed), len(configs))]
    assert all(len({e for _, e in block}) == 1 for block in blocks)
    assert all(sorted(c for c, _ in block) == sorted(configs) for block in blocks)
    # the order rotates: no configuration always goes first
    firsts = [block[0][0] for block in blocks]
    assert len(set(firsts)) == len(configs)
    assert [c for c, _ in blocks[1]] == rotated([c for c, _ in blocks[0]], 1)
    # one block, recorded on every record with the machine and the load around each call
    records = all_records(tmp_path)
    assert records["block_id"].nunique() == 1
    assert records["cpu_model"].notna().all() and (records["cpu_cores"] >= 1).all()
    assert (records["cpu_s"] >= 0).all() and records["load_before"].notna().all()
    summary = outcome.summary
    assert (summary["n_timing_blocks"] == 1).all()
    assert (summary["n_timing_pairs"] == 5).all()
    assert summary["speedup_p10"].le(summary["speedup_p90"]).all()
    # the modelled-latency column, from this block's per-call costs
    assert summary["modelled_speedup"].notna().all()
    assert summary["measured_over_modelled"].gt(0).all()
    blocks_csv = pd.read_csv(outcome.run_dir / "blocks.csv")
    assert len(blocks_csv) == len(configs) and blocks_csv["has_call_costs"].all()


def test_a_resumed_sweep_finishes_the_example_and_retimes_vanilla_beside_it(
    tiny_assets, tmp_path, monkeypatch
):
    overrides = tiny_overrides(tiny_assets, tmp_path, *GRID)
    timed_decode, calls = execute.timed_decode, []

    def interrupted(run, pair, item, settings):
        calls.append(run.config_id)
        # the third example runs (BiLD 0.7, large, BiLD 0.3): stop before its last
        if len(calls) == 9:
            raise KeyboardInterrupt
        return timed_decode(run, pair, item, settings)

    monkeypatch.setattr(execute, "timed_decode", interrupted)
    with pytest.raises(Interrupted):
        sweep.run(compose_sweep(overrides))
    before = all_records(tmp_path)
    assert len(before) == 8 and before["block_id"].nunique() == 1
    monkeypatch.setattr(execute, "timed_decode", timed_decode)
    outcome = sweep.run(compose_sweep(overrides))
    after = all_records(tmp_path)
    assert after["block_id"].nunique() == 2
    # every output once, except vanilla large, timed again on the interrupted example
    outputs = after.drop_duplicates(["config_id", "example_id"])
    assert len(outputs) == 3 * 5
    repeated = after[after.duplicated(["config_id", "example_id"], keep=False)]
    assert set(repeated["example_id"]) == {"validation-2"}
    assert set(repeated["method"]) == {"large"}
    # identical outputs in both blocks; every speedup from one block
    assert repeated.groupby("block_id")["hypothesis"].first().nunique() == 1
    assert (outcome.summary["n_timing_pairs"] == 5).all()
    assert (outcome.summary["n_timing_blocks"] == 2).all()


def block_records(config_id: str, block: str, started: str, latencies, examples) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "config_id": config_id,
            "example_id": examples,
            "block_id": block,
            "block_started": started,
            "cpu_cores": 2,
            "load_before": 0.5,
            "load_after": 0.5,
            "latency_s": latencies,
        }
    )


def test_a_speedup_is_never_formed_across_blocks():
    examples = ["e0", "e1"]
    vanilla = block_records("large", "A", "2026-01-01T00:00:00", [2.0, 2.0], examples)
    mine = block_records("bild", "B", "2026-01-02T00:00:00", [0.5, 0.5], examples)
    assert same_block_pairs(mine, vanilla).empty
    quality = stats.mean_of([1.0, 1.0])
    row = compare_with_vanilla(
        mine, vanilla, quality, quality, {**stats_settings(), "bootstrap": 50}
    )
    assert row["speedup"] is None and row["n_timing_pairs"] == 0
    assert row["n_paired_examples"] == 2  # the quality comparison still holds
    # and the next sweep times vanilla again beside the stored records
    stored = pd.concat([vanilla, mine], ignore_index=True)
    work = timing_work(["large", "bild"], {"large": "large", "bild": "large"}, examples, stored)
    assert work.by_example == {"e0": ["large", "bild"], "e1": ["large", "bild"]}
    assert (work.n_new, work.n_retimed) == (0, 4)


def test_retime_loaded_times_both_sides_of_a_loaded_pair_again():
    examples = ["e0", "e1"]
    vanilla = block_records("large", "A", "2026-01-01T00:00:00", [2.0, 2.0], examples)
    mine = block_records("bild", "A", "2026-01-01T00:00:00", [1.0, 1.0], examples)
    mine.loc[0, "load_after"] = 2.3  # the sweep's own two threads on two cores: not loaded
    mine.loc[1, "load_after"] = 3.5  # another process's busy thread besides them
    stored = pd.concat([vanilla, mine], ignore_index=True)
    references = {"large": "large", "bild": "large"}
    assert timing_work(["large", "bild"], references, examples, stored).n_calls == 0
    work = timing_work(["large", "bild"], references, examples, stored, retime_loaded=True)
    assert work.by_example == {"e1": ["large", "bild"]}
    pairs = same_block_pairs(mine, vanilla)
    assert list(pairs["loaded"]) == [False, True]


def stats_settings() -> dict:
    return {"bootstrap": 1000, "randomizations": 1000, "seed": 12345, "confidence": 0.95}


def test_stratified_bootstrap_covers_the_true_ratio_across_blocks_at_two_speeds():
    """Two blocks, the second on a machine twice as fast; the true speedup is 2 in both.
    Vanilla was timed on every example in the slow block and again beside the method in the
    fast block; a naive ratio that divides vanilla's slow timings by the method's fast ones
    is far off, the same-block estimate and its stratified interval are not."""
    rng = np.random.default_rng(0)
    n = 40
    slow, fast = [f"e{i}" for i in range(n // 2)], [f"e{i}" for i in range(n // 2, n)]
    base = rng.uniform(1.0, 3.0, n)
    noise = rng.uniform(0.7, 1.3, n)  # per-example ratios spread around 2 ...
    for half in (slice(0, n // 2), slice(n // 2, n)):  # ... whose ratio of sums is 2 in each block
        noise[half] *= base[half].sum() / (base[half] * noise[half]).sum()
    vanilla = pd.concat(
        [
            block_records("large", "A", "2026-01-01", 2 * base, slow + fast),
            block_records("large", "B", "2026-01-02", base[n // 2 :], fast),
        ],
        ignore_index=True,
    )
    mine = pd.concat(
        [
            block_records("bild", "A", "2026-01-01", base[: n // 2] * noise[: n // 2], slow),
            block_records("bild", "B", "2026-01-02", base[n // 2 :] * noise[n // 2 :] / 2, fast),
        ],
        ignore_index=True,
    )
    outputs = vanilla.drop_duplicates("example_id"), mine
    quality = stats.mean_of([1.0] * n)
    row = compare_with_vanilla(
        outputs[1], outputs[0], quality, quality, stats_settings(), mine, vanilla
    )
    assert row["n_timing_blocks"] == 2 and row["n_timing_pairs"] == n
    assert row["speedup_low"] <= 2.0 <= row["speedup_high"]
    naive = vanilla.drop_duplicates("example_id")["latency_s"].sum() / mine["latency_s"].sum()
    assert not row["speedup_low"] <= naive <= row["speedup_high"]
    # the draw keeps each block's size in every resample
    indices = stats.stratified_bootstrap_indices(["A"] * 3 + ["B"] * 2, 200, 0)
    assert (indices[:, :3] < 3).all() and (indices[:, 3:] >= 3).all()
    one = stats.stratified_bootstrap_indices(["A"] * 5, 10, 7)
    assert (one == stats.bootstrap_indices(5, 10, 7)).all()


def test_modelled_latency_from_hand_made_call_shapes():
    costs = {
        "large": CallTimes({1: 0.10, 8: 0.20}, encoder=0.0),
        "base": CallTimes({1: 0.02, 8: 0.05}, encoder=0.0),
    }
    # vanilla: 10 one-token large calls; BiLD: 8 small steps and one 8-token large call
    vanilla = pd.Series({"large_call_shapes": [(1, i) for i in range(10)], "small_variant": "-"})
    bild = pd.Series(
        {
            "large_call_shapes": [(8, 0)],
            "small_call_shapes": [(1, i) for i in range(8)],
            "small_variant": "base",
        }
    )
    assert modelled_latency(vanilla, costs) == pytest.approx(1.0)
    assert modelled_latency(bild, costs) == pytest.approx(0.20 + 8 * 0.02)
    assert modelled_latency(pd.Series({"small_variant": "base"}), costs) is None  # HF's
    assert modelled_latency(bild, {"large": costs["large"]}) is None  # small unmeasured
    frame = pd.DataFrame([vanilla, bild]).assign(block_id=["b", "b"])
    blocks = {
        "b": {
            "call_costs": {
                n: {"by_n_fed": {str(k): v for k, v in t.by_n_fed.items()}, "encoder": 0.0}
                for n, t in costs.items()
            }
        }
    }
    modelled = with_modelled_latency(frame, blocks)["modelled_latency_s"]
    assert list(modelled.round(6)) == [1.0, 0.36]


def test_dry_run_counts_the_retimings(tiny_assets, tmp_path, monkeypatch, capsys):
    overrides = tiny_overrides(tiny_assets, tmp_path, *GRID)
    sweep.run(compose_sweep(overrides))
    run_store = RecordStore(tmp_path / "sweep" / "custom_tiny")
    bild = run_store.read_records()
    first = bild["config_id"].iloc[0]
    # one configuration's records as if another run had timed them
    moved = bild[bild["config_id"] == first].assign(block_id="elsewhere")
    for path in run_store.part_files(first):
        path.unlink()
    run_store.append(moved.to_dict("records"))
    capsys.readouterr()
    sweep.run(compose_sweep([*overrides, "dry_run=true"]))
    out = capsys.readouterr().out
    assert "0 new and 10 re-timed calls" in out  # 5 examples x (that config + vanilla)
