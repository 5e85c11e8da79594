"""A sweep's settings resolved once from its config: the task's defaults applied where the
sweep leaves a key null, so the pipeline, the bench and the inspection tools read one value
instead of re-deriving it (``cfg.data.split or task.split``, ...)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from bild_exp.harness.run.long_run import parse_duration, parse_shard


@dataclass(frozen=True)
class DecodeSettings:
    """How each example of a run is decoded and timed."""

    max_new_tokens: int  # max_new_tokens, else the task's
    warmup: int  # untimed examples before each run
    warmup_max_new_tokens: int | None  # cap on a warm-up's new tokens (eager path only)
    stop_strings: list[str] | None  # the task's
    compile_mode: str | None  # engine.compile_mode when engine.compile is true, else None


@dataclass(frozen=True)
class SweepSettings:
    split: str  # data.split, else the task's
    limit: int | None
    example_ids: list[str] | None
    decode: DecodeSettings
    shard: tuple[int, int] | None = None  # data.shard: (index, count)
    sample: int | None = None  # data.sample: examples drawn per length stratum, one each
    sample_seed: int = 0  # data.sample_seed
    run_for_s: float | None = None  # sweep.run_for in seconds
    record_parts: str = "compact"  # sweep.record_parts
    summary_only: bool = False  # sweep.summary_only


def engine_compile(cfg: DictConfig) -> str | None:
    """The compile mode of ``engine.compile=true`` (``engine.compile_mode``), else None
    (``engine`` in conf/sweep.yaml holds the defaults)."""
    return cfg.engine.compile_mode if cfg.engine.compile else None


def resolve_settings(cfg: DictConfig) -> SweepSettings:
    """The settings a sweep runs with (call after the config's checks)."""
    task, data = cfg.task, cfg.data
    stops = task.get("stop_strings")
    ids = data.get("example_ids")
    timing = cfg.get("sweep") or {}
    return SweepSettings(
        split=data.split or task.split,
        limit=data.limit,
        example_ids=list(ids) if ids else None,
        decode=DecodeSettings(
            max_new_tokens=cfg.max_new_tokens or task.max_new_tokens,
            warmup=data.warmup,
            warmup_max_new_tokens=data.get("warmup_max_new_tokens"),
            stop_strings=OmegaConf.to_container(stops) if OmegaConf.is_list(stops) else stops,
            compile_mode=engine_compile(cfg),
        ),
        shard=parse_shard(data.get("shard")),
        sample=data.get("sample"),
        sample_seed=data.get("sample_seed", 0),
        run_for_s=parse_duration(timing.get("run_for")),
        record_parts=timing.get("record_parts", "compact"),
        summary_only=bool(timing.get("summary_only", False)),
    )
