"""The paper tasks' headline metrics and grids match the paper's Table 1."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from bild_exp.data.tasks import task_from_config
from bild_exp.harness.summary import quality_column
from bild_exp.paper import published_table1
from tests.test_sweep import compose_sweep

HEADLINE = {"iwslt17": "bleu", "wmt14": "bleu", "xsum": "rougeL", "cnndm": "rougeLsum"}


@pytest.mark.parametrize(("task", "metric"), HEADLINE.items())
def test_each_paper_task_scores_the_papers_metric(task, metric):
    spec = task_from_config(compose_sweep([f"+task={task}"]).task)
    assert quality_column(spec.metric, spec.extra.get("quality")) == metric


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
    from bild_exp.decoding.params import InvalidParameterError
    from bild_exp.harness import pipeline

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
    from bild_exp.decoding.params import InvalidParameterError
    from bild_exp.harness.models import load_pair

    pair, _ = tiny_assets
    cfg = compose_sweep([f"pair.{k}={v}" for k, v in pair.items()] + ["pair.dtype=float16"])
    with pytest.raises(InvalidParameterError, match="overflow to inf/NaN in float16"):
        load_pair(cfg.pair, ["base"])


def test_timing_conditions_are_recorded_and_key_the_baselines():
    from bild_exp.harness.pipeline import compatibility
    from bild_exp.harness.plan import plan_runs
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
