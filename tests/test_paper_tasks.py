"""The paper tasks' headline metrics and grids match the paper's Table 1."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from bild_exp.data.tasks import task_from_config
from bild_exp.harness.scoring.metrics import quality_column
from bild_exp.paper import published_table1
from tests.harness_fixtures import compose_sweep

HEADLINE = {"iwslt17": "bleu", "wmt14": "bleu", "xsum": "rougeL", "cnndm": "rougeLsum"}


@pytest.mark.parametrize(("task", "metric"), HEADLINE.items())
def test_each_paper_task_scores_the_papers_metric(task, metric):
    spec = task_from_config(compose_sweep([f"+task={task}"]).task)
    assert quality_column(spec.metric, spec.quality) == metric


def test_every_published_operating_point_is_in_its_tasks_grid():
    table = published_table1().dropna(subset=["rollback_threshold"])
    for _, row in table.iterrows():
        grid = compose_sweep([f"+task={row['task']}"]).grid
        assert float(row["rollback_threshold"]) in OmegaConf.to_container(
            grid.rollback_threshold
        ), (row["task"], row["row"], row["rollback_threshold"])
        assert float(row["fallback_threshold"]) in OmegaConf.to_container(
            grid.fallback_threshold
        ), (row["task"], row["row"], row["fallback_threshold"])


def test_paper_task_refuses_a_silent_cpu_fallback(monkeypatch, tmp_path):
    import torch

    from bild_exp import sweep
    from bild_exp.errors import InvalidParameterError
    from bild_exp.harness.run import pipeline

    def no_loading(*args, **kwargs):
        raise AssertionError("data or models loaded")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(pipeline, "load_examples", no_loading)
    cfg = compose_sweep(["+task=iwslt17", "logger=none", f"results_dir={tmp_path}"])
    with pytest.raises(InvalidParameterError, match="pair.device='auto' resolved to cpu"):
        sweep.run(cfg)
    explicit = compose_sweep(
        ["+task=iwslt17", "logger=none", f"results_dir={tmp_path}", "pair.device=cpu"]
    )
    with pytest.raises(AssertionError, match="data or models loaded"):  # it goes on to load
        sweep.run(explicit)


def test_float16_t5_is_refused_before_weights_load(tiny_assets):
    from bild_exp.errors import InvalidParameterError
    from bild_exp.models.pair import load_pair

    pair, _ = tiny_assets
    cfg = compose_sweep([f"pair.{k}={v}" for k, v in pair.items()] + ["pair.dtype=float16"])
    with pytest.raises(InvalidParameterError, match="overflow to inf/NaN in float16"):
        load_pair(cfg.pair, ["base"])


def test_timing_conditions_are_recorded_and_key_the_baselines():
    from bild_exp.harness.config.plan import plan_runs
    from bild_exp.harness.records.fingerprint import compatibility
    from bild_exp.timing import device_description

    device = device_description("cpu")
    for key in (
        "cuda_matmul_allow_tf32",
        "cudnn_allow_tf32",
        "cudnn_benchmark",
        "float32_matmul_precision",
        "cuda_runtime",
        "cuda_driver",
    ):
        assert key in device
    cfg = compose_sweep(["+task=demo"])
    fingerprint = compatibility(cfg, task_from_config(cfg.task), device, plan_runs(cfg))
    assert fingerprint["torch"] == device["torch"]
    assert fingerprint["transformers"] == device["transformers"]
    assert fingerprint["dtype"] == "float32"
    assert "float32_matmul_precision" in fingerprint


def test_paper_comparison_names_the_device_and_warns_off_t4(tmp_path):
    import json

    from bild_exp.paper import device_note, run_device

    run = tmp_path / "table1" / "iwslt17_mt5"
    run.mkdir(parents=True)
    device = {"device": "cpu", "device_name": "x86_64"}
    (run / "manifest.json").write_text(json.dumps({"device": device}))
    assert run_device(run) == "x86_64 (cpu)"
    import pandas as pd

    assert "not the paper's NVIDIA T4" in device_note(pd.DataFrame({"device": ["x86_64 (cpu)"]}))
    assert device_note(pd.DataFrame({"device": ["Tesla T4 (cuda:0)"]})) == ""


PAPER_TASKS = tuple(HEADLINE)


@pytest.mark.parametrize("task", PAPER_TASKS)
def test_hub_loading_fetches_only_the_split_used(task, monkeypatch):
    import datasets

    from bild_exp.data.tasks import load_rows

    calls = []

    def record(*args, **kwargs):
        calls.append((args, kwargs))
        raise RuntimeError("no network in tests")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", record)
    spec = task_from_config(compose_sweep([f"+task={task}"]).task)
    with pytest.raises(RuntimeError, match="no network"):
        load_rows(spec, "validation")
    ((args, kwargs),) = calls
    assert not args and kwargs["path"] == spec.hub_id and kwargs["split"] == "validation"
    ((split, files),) = kwargs["data_files"].items()  # one split's files, nothing else
    assert split == "validation" and "validation" in files
    assert not any(other in files for other in ("train", "test"))
    if task == "iwslt17":  # a script repository: its Parquet export, not main
        assert kwargs["revision"] == "refs/convert/parquet"
        assert files == "iwslt2017-de-en/validation/*.parquet"


@pytest.mark.parametrize("task", PAPER_TASKS)
def test_paper_tasks_follow_the_official_pipeline(task):
    from bild_exp.harness.config.plan import plan_runs

    cfg = compose_sweep([f"+task={task}", "+experiment=table1"])
    assert cfg.task.max_new_tokens == 127  # max_length=128 counts the decoder start token
    assert cfg.scoring.truncate_references == 128
    assert cfg.scoring.clean_up_tokenization_spaces is True
    bild_runs = [run for run in plan_runs(cfg) if run.method == "bild"]
    assert bild_runs and all(run.params["schedule"] == "official" for run in bild_runs)
    switched = compose_sweep([f"+task={task}", "+experiment=table1", "bild_schedule=paper"])
    assert all("schedule" not in run.params for run in plan_runs(switched))


def test_other_tasks_keep_the_paper_schedule_and_their_configuration_ids():
    from bild_exp.harness.config.plan import plan_runs

    cfg = compose_sweep([])
    assert cfg.bild_schedule == "paper" and cfg.scoring.truncate_references is None
    assert all("schedule" not in run.params for run in plan_runs(cfg))


@pytest.fixture(scope="module")
def t5_tokenizer():
    from transformers import AutoTokenizer

    from bild_exp.data.tasks import resolve_path

    return AutoTokenizer.from_pretrained(resolve_path("package://assets/demo-pair/tokenizer"))


def test_references_are_cut_as_the_official_labels_were(t5_tokenizer):
    import pandas as pd

    from bild_exp.harness.scoring.texts import truncate_references

    long = " ".join(["the house is very small and the garden is green ."] * 40)
    ids = t5_tokenizer(long, add_special_tokens=False)["input_ids"]
    assert len(ids) > 200
    (cut,) = truncate_references(pd.Series([long]), t5_tokenizer, 128)
    # 127 text tokens and the end token make the official 128
    assert cut == t5_tokenizer.decode(ids[:127], skip_special_tokens=True)
    assert cut != t5_tokenizer.decode(ids[:128], skip_special_tokens=True)
    (short,) = truncate_references(pd.Series(["kurz ."]), t5_tokenizer, 128)
    assert short == t5_tokenizer.decode(
        t5_tokenizer("kurz .")["input_ids"], skip_special_tokens=True
    )


def test_tokenization_spaces_are_cleaned_on_both_sides_when_asked(t5_tokenizer):
    import pandas as pd

    from bild_exp.harness.scoring.texts import scored_texts

    records = pd.DataFrame(
        {"hypothesis": ["It is n't here , is it ?"], "reference": ["It 's there ."]}
    )
    on = scored_texts(
        records.copy(),
        t5_tokenizer,
        {"truncate_references": None, "clean_up_tokenization_spaces": True},
    )
    assert on["scored_hypothesis"][0] == "It isn't here, is it?"
    assert on["scored_reference"][0] == "It's there."
    off = scored_texts(records.copy(), t5_tokenizer, {"truncate_references": None})
    assert off["scored_hypothesis"][0] == "It is n't here , is it ?"
    assert off["scored_reference"][0] == "It 's there ."


def hand_made_run(tmp_path, experiment: str, task: str, rows: list[dict]):
    import json

    import pandas as pd

    run = tmp_path / experiment / f"{task}_pair"
    run.mkdir(parents=True)
    metric = "bleu" if task == "iwslt17" else "rouge"
    manifest = {"config": {"task": {"name": task, "metric": metric}}, "device": {}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    # the columns every summary.csv has, which the rows leave out
    summary = [
        {
            "config_id": f"c{i}",
            "study": row["method"],
            "small_variant": "-" if row["method"] == "large" else "base",
            "family": row["method"] if row["method"] == "large" else f"{row['method']}/base",
            "sampling": "greedy",
            **row,
        }
        for i, row in enumerate(rows)
    ]
    pd.DataFrame(summary).to_csv(run / "summary.csv", index=False)
    return run


def test_table3_prints_ours_next_to_the_published_rows(tmp_path, monkeypatch):
    from bild_exp import paper
    from bild_exp.paper import compare

    monkeypatch.setattr(paper, "draw_figures", lambda *args: None)  # tested with real sweeps

    def row(method, quality, speedup, fb=None, rb=None):
        return {
            "method": method,
            "bleu": quality,
            "speedup": speedup,
            "fallback_pct": 20.0,
            "rollback_pct": 2.0,
            "large_call_pct": 25.0,
            "fallback_threshold": fb,
            "rollback_threshold": rb,
        }

    hand_made_run(
        tmp_path,
        "table3",
        "iwslt17",
        [
            row("large", 40.0, 1.0),
            row("speculative", 40.0, 1.3),
            row("bild", 40.2, 1.25, 0.5, 2.0),  # better quality, a little slower
            row("bild", 39.9, 1.35, 0.4, 3.0),  # faster, lower quality: matches latency best
            row("bild", 40.1, 1.4, 0.3, 2.0),  # faster and better: matches quality
        ],
    )
    table = compare(tmp_path / "table3", "table3").set_index("row")
    assert table.loc["speculative", "speedup"] == 1.3
    assert table.loc["speculative", "paper_rollback_pct"] == 9.81
    assert table.loc["bild (match latency)", "quality"] == 40.1
    assert table.loc["bild (match quality)", "speedup"] == 1.4
    assert table.loc["bild (match quality)", "thresholds (RB, FB)"] == "(2, 0.3)"
    assert table.loc["bild (better quality)", "paper_quality"] == 40.33
    assert table.loc["bild (match latency)", "paper_speedup"] == 1.23


def test_table5_picks_ours_and_the_papers_rows_by_one_rule(tmp_path, monkeypatch):
    from bild_exp import paper
    from bild_exp.paper import compare

    monkeypatch.setattr(paper, "draw_figures", lambda *args: None)

    rows = [
        {"method": "large", "rougeL": 34.0, "speedup": 1.0},
        {
            "method": "bild",
            "rougeL": 34.1,
            "speedup": 1.3,
            "rollback_threshold": 3.0,
            "fallback_threshold": 0.5,
        },
        {
            "method": "bild",
            "rougeL": 33.2,
            "speedup": 1.7,
            "rollback_threshold": 5.0,
            "fallback_threshold": 0.3,
        },
    ]
    hand_made_run(tmp_path, "table5", "xsum", rows)
    table = compare(tmp_path / "table5", "table5").set_index("row")
    assert table.loc["vanilla", "paper_quality"] == 34.0
    assert table.loc["bild (within 0)", "speedup"] == 1.3
    assert table.loc["bild (within 0)", "paper_speedup"] == 1.45  # 34.04 >= 34.00
    assert table.loc["bild (within 1)", "speedup"] == 1.7
    assert table.loc["bild (within 1)", "paper_speedup"] == 1.85  # 33.10 >= 33.00


def test_table3_uses_the_unaligned_small_model_as_the_paper():
    cfg = compose_sweep(["+task=xsum", "+experiment=table3"])
    assert list(cfg.pair.small_variants) == ["base"]


def test_every_transcribed_table_loads():
    from bild_exp.paper import published

    assert set(published("table2")["model"]) == {"mT5-large", "mT5-small", "T5-large", "T5-small"}
    assert len(published("table3")) == 10 and len(published("table5")) == 8
    assert set(published("fig2")["task"]) == {"wmt14", "cnndm"}


def test_dry_run_lists_the_official_pipeline_and_counts_generate_calls(capsys):
    from bild_exp import sweep

    sweep.run(compose_sweep(["+task=iwslt17", "+experiment=table1", "dry_run=true"]))
    out = capsys.readouterr().out
    assert "revision=refs/convert/parquet files=iwslt2017-de-en/validation/*.parquet" in out
    assert "truncate_references=128 clean_up_tokenization_spaces=True" in out
    assert "max_new_tokens=127" in out and "bild_schedule=official" in out
    n_configs = out.count(" small=")
    assert f"generate calls: {n_configs} configurations x 888 examples" in out
    sweep.run(
        compose_sweep(["+task=iwslt17", "+experiment=table1", "dry_run=true", "data.limit=10"])
    )
    assert f"x 10 examples = {n_configs * 10:,}" in capsys.readouterr().out


def test_dry_run_estimates_time_from_measured_vanilla_latency(tiny_assets, tmp_path, capsys):
    from bild_exp import sweep
    from tests.harness_fixtures import tiny_overrides

    overrides = tiny_overrides(tiny_assets, tmp_path, "method=large", "data.limit=3")
    sweep.run(compose_sweep([*overrides, "dry_run=true"]))
    assert "estimated time: not yet measured" in capsys.readouterr().out
    sweep.run(compose_sweep(overrides))  # vanilla large measured on 3 examples
    capsys.readouterr()
    sweep.run(compose_sweep([*overrides, "dry_run=true", "data.limit=300"]))
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("estimated time:"))
    assert "calls x" in line and "ms/token (vanilla large, 3 records on" in line


def test_paper_plan_counts_each_targets_generate_calls():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "paper_plan.py"
    spec = importlib.util.spec_from_file_location("paper_plan", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = [row for row in module.plan_rows() if row["target"] == "table1"]
    assert [row["task"] for row in rows] == ["iwslt17", "wmt14", "xsum", "cnndm"]
    iwslt = rows[0]
    assert iwslt["examples"] == 888
    assert iwslt["generate_calls"] == iwslt["configurations"] * 888
