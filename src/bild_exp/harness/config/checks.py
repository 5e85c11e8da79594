"""A sweep's settings checked before any data or model loads: one line naming the key the
user typed, its value and what is accepted."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from bild_exp.data.tasks import TaskSpec, check_task_keys
from bild_exp.decoding.compiled import check_compile_mode
from bild_exp.decoding.registry import methods_where
from bild_exp.errors import InvalidParameterError
from bild_exp.flops import ModelShape
from bild_exp.harness.config.plan import RunConfig
from bild_exp.harness.run.long_run import check_record_parts, parse_duration, parse_shard
from bild_exp.harness.scoring.code_execution import execution_limits
from bild_exp.models.pair import LoadSettings, int4_group_size, model_config, resolve_device
from bild_exp.models.weight_only import QUANTIZED_FORMATS, check_group_size, check_weights
from bild_exp.wandb_setup import check_mode

EMPTY_SOURCE_POLICIES = ("skip", "error")


def check_settings(cfg: DictConfig) -> None:
    """The sweep's own settings, checked before any data or model loads."""
    check_integer("data.limit", cfg.data.limit, 1, "null (the whole split)")
    check_integer("data.warmup", cfg.data.warmup, 0)
    check_integer(
        "data.warmup_max_new_tokens",
        cfg.data.get("warmup_max_new_tokens"),
        1,
        "null (the task's limit)",
    )
    parse_shard(cfg.data.get("shard"))
    check_integer("data.sample", cfg.data.get("sample"), 1, "null (every example)")
    check_integer("data.sample_seed", cfg.data.get("sample_seed", 0), 0)
    check_stats(cfg.stats)
    check_timing(cfg.sweep)
    check_integer(
        "scoring.truncate_references",
        cfg.scoring.get("truncate_references"),
        1,
        "null (references kept whole)",
    )
    if cfg.scoring.empty_sources not in EMPTY_SOURCE_POLICIES:
        raise InvalidParameterError(
            f"scoring.empty_sources={cfg.scoring.empty_sources!r} is invalid: accepted "
            f"{', '.join(EMPTY_SOURCE_POLICIES)}"
        )
    check_mode(cfg.logger)
    task = cfg.get("task") or {}
    check_task_keys(task)  # a typo in a task key is refused, not ignored
    check_integer("max_new_tokens", cfg.get("max_new_tokens"), 1, "null (the task's)")
    ids = cfg.data.get("example_ids")
    if ids is not None and (
        not OmegaConf.is_list(ids) or not ids or not all(isinstance(i, str) for i in ids)
    ):
        raise InvalidParameterError(
            f"data.example_ids={ids!r} is invalid: accepted null (the split in file order) or "
            "a non-empty list of example ids (strings)"
        )
    for key in ("max_new_tokens", "max_source_length"):  # before any model loads
        if key in task:
            check_integer(f"task.{key}", task.get(key), 1)
    if task.get("metric") == "pass_at_1":  # execution limits, before anything runs
        execution_limits(OmegaConf.to_container(task.get("execution") or {}, resolve=True))


def check_timing(timing: Any) -> None:
    """``sweep.*`` (conf/sweep.yaml): re-timing, per-call costs, the time budget, how
    records are written, summary-only runs."""
    for key in ("retime_loaded", "summary_only"):
        value = timing.get(key, False)
        if not isinstance(value, bool):
            raise InvalidParameterError(f"sweep.{key}={value!r} is invalid: accepted true or false")
    check_integer("sweep.call_cost_repeats", timing.call_cost_repeats, 0)
    parse_duration(timing.get("run_for"))
    check_record_parts(timing.get("record_parts", "compact"))


def check_stats(settings: Any) -> None:
    """``stats`` (conf/sweep.yaml holds the defaults): bootstrap resamples, their seed, the
    interval's confidence level."""
    check_integer("stats.bootstrap", settings.bootstrap, 1)
    check_integer("stats.randomizations", settings.randomizations, 1)
    check_integer("stats.seed", settings.seed, 0)
    confidence = settings.confidence
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, float | int)
        or not (0 < confidence < 1)
    ):
        raise InvalidParameterError(
            f"stats.confidence={confidence!r} is invalid: accepted a number strictly between "
            "0 and 1 (e.g. 0.95)"
        )


def check_integer(name: str, value: Any, low: int, or_null: str | None = None) -> None:
    """One line naming the config key unless ``value`` is an integer >= ``low`` (or null,
    when ``or_null`` says what null means)."""
    if value is None and or_null is not None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        accepted = f"{or_null} or an integer >= {low}" if or_null else f"an integer >= {low}"
        raise InvalidParameterError(f"{name}={value!r} is invalid: accepted {accepted}")


def check_paper_device(cfg: DictConfig, task: TaskSpec, device: Any) -> None:
    """A paper sweep on a CPU takes weeks: only when asked for with pair.device=cpu."""
    if task.paper and device.type == "cpu" and cfg.pair.device != "cpu":
        raise InvalidParameterError(
            f"pair.device={cfg.pair.device!r} resolved to cpu for paper task {task.name!r} "
            "(torch.cuda.is_available() is False: no GPU, or a torch build that does not match "
            "the driver): accepted a CUDA device, or pair.device=cpu to run on the CPU anyway"
        )


def check_engine(cfg: DictConfig, runs: list[RunConfig]) -> None:
    """``engine.compile=true`` with a run the compiled path cannot take: one line, before
    any model loads (the models' own types are checked by the engine at the first call)."""
    compile = cfg.engine.compile
    if not isinstance(compile, bool):
        raise InvalidParameterError(
            f"engine.compile={compile!r} is invalid: accepted true or false"
        )
    mode = cfg.engine.compile_mode
    check_compile_mode(mode, "engine.compile_mode")
    LoadSettings.of(cfg)  # engine.cpu_kernels resolves on this device and dtype
    check_weight_formats(cfg, sorted({run.small_variant for run in runs}))
    if mode != "default" and not compile:
        raise InvalidParameterError(
            f"engine.compile_mode={mode!r} is invalid with engine.compile=false: accepted "
            "'default', or engine.compile=true"
        )
    if not compile:
        return
    quantized = [v for v in QUANTIZED_FORMATS if v in {run.small_variant for run in runs}]
    if quantized or weights_of_large(cfg) != "float32":
        raise InvalidParameterError(
            f"engine.compile=true is invalid with weight-only quantised models (small variant "
            f"{(quantized or ['-'])[0]!r}, pair.large_weights={weights_of_large(cfg)!r}): "
            "accepted float32 models; run quantised models eagerly (engine.compile=false)"
        )
    compilable = methods_where("compilable")
    for run in runs:
        if run.method not in compilable or run.small_variant == "early_exit":
            raise InvalidParameterError(
                f"engine.compile=true is invalid for run {run.study!r} (method={run.method!r}, "
                f"small={run.small_variant!r}): accepted methods {', '.join(compilable)} "
                "with a separate small model; run CALM, HF assisted and early exit eagerly"
            )


def weights_of_large(cfg: DictConfig) -> str:
    return cfg.pair.get("large_weights") or "float32"


def check_weight_formats(cfg: DictConfig, variants: list[str]) -> None:
    """Quantised small variants and ``pair.large_weights``: their kernels run on the pair's
    device, and int4's group size divides every linear layer's input width; one line each,
    before any weights load (configs only)."""
    device = resolve_device(cfg.pair.device)
    large_weights = check_weights(weights_of_large(cfg), device, "pair.large_weights")
    quantized = [variant for variant in variants if variant in QUANTIZED_FORMATS]
    for variant in quantized:
        check_weights(variant, device, "pair.small_variants entry")
    int4_members = (["small"] if "int4" in quantized else []) + (
        ["large"] if large_weights == "int4" else []
    )
    for member in int4_members:
        shape = ModelShape.from_config(model_config(cfg.pair, member))
        widths = {"d_model": shape.d_model, "attention width": shape.attention_dim}
        widths["d_ff"] = shape.d_ff
        check_group_size(int4_group_size(cfg.pair), widths, "pair.int4_group_size")
