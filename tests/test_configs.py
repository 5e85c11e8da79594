"""Every entry of every config group composes, validates, and plans before any model loads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bild_exp.data.tasks import task_from_config
from bild_exp.errors import InvalidParameterError
from bild_exp.harness.config.plan import plan_runs
from bild_exp.paper import EXPERIMENTS
from bild_exp.sweep import with_default_task

CONF = Path(__file__).resolve().parents[1] / "conf"


def entries(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def sweep_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return with_default_task(compose(config_name="sweep", overrides=list(overrides)))


def test_groups_are_not_empty():
    assert set(entries("task")) >= {"iwslt17", "wmt14", "xsum", "cnndm", "demo", "custom"}
    assert set(entries("method")) >= {
        "large",
        "small",
        "bild",
        "bild_no_rollback",
        "bild_no_fallback",
        "speculative",
        "oracle",
        "hf_assisted",
    }
    assert set(entries("logger")) == {"wandb", "none"}
    assert set(entries("experiment")) >= {
        "table1",
        "table3",
        "table5",
        "fig2",
        "fig4",
        "fig5",
        "fig10",
    }


def task_file(name: str, group: str = "task"):
    """A task file's ``task``, merged over the files it includes: other tasks, or the paper
    tasks' shared settings in conf/task_base/ (which include each other)."""
    data = OmegaConf.load(CONF / group / f"{name}.yaml")
    task = OmegaConf.create()
    for entry in data.get("defaults", []):
        if not isinstance(entry, str):  # "override /pair: ..." and the like
            continue
        if entry.startswith("/task_base/"):
            task = OmegaConf.merge(task, task_file(entry.removeprefix("/task_base/"), "task_base"))
        elif entry in entries(group):
            task = OmegaConf.merge(task, task_file(entry, group))
    return OmegaConf.merge(task, data.get("task", {}))


@pytest.mark.parametrize("task", [t for t in entries("task") if t != "custom"])
def test_every_task_composes_and_plans(task):
    cfg = sweep_cfg(f"+task={task}")
    spec = task_from_config(cfg.task)
    assert spec.name == task
    # The task file (over the task it extends, if any) is the whole task: nothing leaks in
    # from another task.
    assert OmegaConf.to_container(cfg.task) == OmegaConf.to_container(task_file(task))
    assert plan_runs(cfg)


def test_custom_task_needs_its_file():
    cfg = sweep_cfg(
        "+task=custom", "task.data_files.validation=/tmp/dev.jsonl", "pair=t5_small_large"
    )
    assert task_from_config(cfg.task).data_files == {
        "train": None,
        "validation": "/tmp/dev.jsonl",
        "test": None,
    }


def test_an_unknown_task_key_is_refused_in_one_line():
    """A typo in a task key (here ``quality``, the summary's quality column) would otherwise
    be ignored: the run would score with the default column."""
    cfg = sweep_cfg("+task=cnndm", "+task.qualty=rougeL")
    with pytest.raises(InvalidParameterError, match=r"^task\.qualty is unknown: accepted ") as e:
        task_from_config(cfg.task)
    assert "\n" not in str(e.value) and "quality" in str(e.value)
    # the typed keys that the runs read (paper, quality, execution) reach the TaskSpec
    spec = task_from_config(sweep_cfg("+task=cnndm").task)
    assert spec.paper is True and spec.quality == "rougeLsum"
    assert task_from_config(sweep_cfg("+task=humaneval").task).execution["sandbox"] == "auto"


def test_no_task_means_the_demo_task():
    cfg = sweep_cfg()
    assert cfg.task.name == "demo" and cfg.pair.name == "demo"


@pytest.mark.parametrize("pair", entries("pair"))
def test_every_pair_composes(pair):
    cfg = sweep_cfg(f"pair={pair}")
    assert cfg.pair.large and cfg.pair.small and cfg.pair.tokenizer
    assert cfg.pair.architecture in ("seq2seq", "decoder-only")


@pytest.mark.parametrize("method", entries("method"))
@pytest.mark.parametrize("grid", entries("grid"))
def test_every_method_and_grid_plans(method, grid):
    runs = plan_runs(sweep_cfg(f"method={method}", f"grid={grid}"))
    assert any(run.method == "large" for run in runs)  # the speedup reference is always there
    assert len({run.config_id for run in runs}) == len(runs)


@pytest.mark.parametrize("experiment", list(EXPERIMENTS))
def test_every_paper_experiment_composes_with_each_paper_task(experiment):
    for task in ("iwslt17", "wmt14", "xsum", "cnndm", "demo"):
        cfg = sweep_cfg(f"+experiment={experiment}", f"+task={task}")
        assert cfg.experiment_name == experiment
        assert plan_runs(cfg)
    assert set(EXPERIMENTS[experiment].tasks) <= {"iwslt17", "wmt14", "xsum", "cnndm"}


@pytest.mark.parametrize("experiment", entries("experiment"))
def test_every_experiment_config_composes_and_plans(experiment):
    """Each config of conf/experiment (a paper experiment with each of its tasks, the main
    job, the demos, the bench) composes as its make target runs it and plans its runs."""
    if experiment in EXPERIMENTS:
        overrides = [
            [f"+experiment={experiment}", f"+task={t}"] for t in EXPERIMENTS[experiment].tasks
        ]
    else:
        overrides = [[f"+experiment={experiment}"]]
    for override in overrides:
        config_name = "bench" if experiment.startswith("bench") else "sweep"
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = with_default_task(compose(config_name=config_name, overrides=override))
        assert task_from_config(cfg.task).name == cfg.task.name
        assert plan_runs(cfg)
    makefile = (CONF.parent / "Makefile").read_text()  # a make target runs it
    assert f"+experiment={experiment} " in makefile or f"paper_target,{experiment})" in makefile


@pytest.mark.parametrize("logger", entries("logger"))
def test_every_logger_composes(logger):
    assert sweep_cfg(f"logger={logger}").logger.name == logger


def test_train_config_and_recipes_compose():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for recipe in entries("recipe"):
            assert compose(config_name="train", overrides=[f"recipe={recipe}"]).recipe.max_steps > 0
        for training in entries("training"):
            cfg = compose(config_name="train", overrides=[f"+training={training}"])
            assert cfg.mode in ("finetune", "align", "early_exit", "calm")


def test_launchers_compose():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for launcher, target in (("joblib", "JoblibLauncher"), ("cluster", "SlurmLauncher")):
            cfg = compose(
                config_name="sweep",
                overrides=[f"hydra/launcher={launcher}"],
                return_hydra_config=True,
            )
            assert cfg.hydra.launcher._target_.endswith(target)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("grid.fallback_threshold=[0.5,1.5]", "grid.fallback_threshold=1.5 is invalid"),
        ("grid.rollback_threshold=[-1]", "grid.rollback_threshold=-1 is invalid"),
        ("grid.window=[0]", "grid.window=0 is invalid"),
        ("pair.small_variants=[tiny]", "pair.small_variants entry='tiny'"),
        ("seeds=[-1]", "seeds entry=-1 is invalid"),
        ("grid.top_p=1.5", "grid.top_p=1.5 is invalid"),
    ],
)
def test_bad_grid_values_fail_while_planning(override, message):
    extra = ["sampling=nucleus"] if override.startswith(("seeds", "grid.top_p")) else []
    with pytest.raises(InvalidParameterError, match="^" + re.escape(message)):
        plan_runs(sweep_cfg(override, "method=all", *extra))


def test_unknown_group_entries_list_the_valid_ones():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="Available options"):
        sweep_cfg("method=beam_search")
    with pytest.raises(ConfigCompositionException, match="Available options"):
        sweep_cfg("+task=squad")
