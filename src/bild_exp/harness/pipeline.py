"""One sweep end to end: data, models, execution, records, summary, plots, W&B."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import transformers
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from bild_exp.data.tasks import DataError, Example, TaskSpec, load_examples, task_from_config
from bild_exp.decoding.compiled import check_compile_mode, compile_stats
from bild_exp.decoding.cpu_kernels import resolve_cpu_kernels
from bild_exp.decoding.registry import methods_where
from bild_exp.errors import Interrupted, InvalidParameterError
from bild_exp.harness.execute import EncodedExample, encode, execute_run
from bild_exp.harness.execution import execute_records, execution_limits
from bild_exp.harness.manifest import build_manifest, machine_load
from bild_exp.harness.models import LoadedPair, load_pair, load_tokenizer, resolve_device
from bild_exp.harness.placement import placed
from bild_exp.harness.plan import RunConfig
from bild_exp.harness.report import format_summary, notes, points_table, write_outputs
from bild_exp.harness.store import BusyError, RecordStore, read_json
from bild_exp.harness.summary import operating_points, quality_column, summarize
from bild_exp.timing import device_description
from bild_exp.wandb_setup import check_mode

log = logging.getLogger(__name__)
EMPTY_SOURCE_POLICIES = ("skip", "error")


@dataclass
class SweepOutcome:
    run_dir: Path
    records: pd.DataFrame
    summary: pd.DataFrame
    operating_points: pd.DataFrame


def print_plan(cfg: DictConfig, runs: list[RunConfig]) -> None:
    """``dry_run=true``: what would run, loading nothing: the data, scoring and lengths the
    runs use (to check them against the paper's pipeline), the configurations and the number
    of ``generate`` calls when the split's size is known."""
    task, split = cfg.task, cfg.data.split or cfg.task.split
    print(f"task={task.name} pair={cfg.pair.name} split={split} limit={cfg.data.limit}")
    files = (task.get("hub_data_files") or {}).get(split)
    source = task.data_files[split] if task.get("data_files") else files
    print(
        f"data: hub_id={task.hub_id} config={task.hub_config} revision={task.get('revision')} "
        f"files={source}"
    )
    quality = quality_column(task.metric, task.get("quality"))
    scoring = cfg.scoring
    print(
        f"scoring: {quality} truncate_references={scoring.truncate_references} "
        f"clean_up_tokenization_spaces={scoring.get('clean_up_tokenization_spaces', False)} "
        f"max_new_tokens={cfg.max_new_tokens or task.max_new_tokens} "
        f"max_source_length={task.max_source_length} bild_schedule={cfg.get('bild_schedule')}"
    )
    known = [n for n in ((task.get("split_sizes") or {}).get(split), cfg.data.limit) if n]
    n_examples = min(known) if known else None  # the split's size, cut by data.limit
    if n_examples is not None:
        print(
            f"generate calls: {len(runs)} configurations x {n_examples} examples = "
            f"{len(runs) * n_examples:,} (plus {cfg.data.warmup} untimed warm-up each)"
        )
        print(time_estimate(cfg, runs, len(runs) * n_examples))
    print(f"{len(runs)} configurations:")
    for run in runs:
        print(f"  {run.config_id} {run.study:<18} small={run.small_variant:<8} {run.params}")


def time_estimate(cfg: DictConfig, runs: list[RunConfig], n_calls: int) -> str:
    """The sweep's time at vanilla large's per-token latency, measured by earlier runs on
    this device and libraries (the baselines folder this sweep would use); loads no model."""
    task = task_from_config(cfg.task)
    device = device_description(resolve_device(cfg.pair.device))
    baselines = RecordStore(
        Path(cfg.baselines_dir) / short_hash(compatibility(cfg, task, device, runs))
    )
    large = baselines.read(columns=["config_id", "example_id", "method", "latency_s", "n_tokens"])
    large = large[large["method"] == "large"] if len(large) else large
    if large.empty:
        return (
            f"estimated time: not yet measured: no vanilla-large records in "
            f"{str(baselines.directory)!r} (run once with data.limit=20 to measure)"
        )
    per_token = large["latency_s"].sum() / max(large["n_tokens"].sum(), 1)
    tokens_per_call = large["n_tokens"].mean()
    hours = n_calls * tokens_per_call * per_token / 3600
    return (
        f"estimated time: {hours:,.1f} h = {n_calls:,} calls x {tokens_per_call:.1f} tokens x "
        f"{1000 * per_token:.2f} ms/token (vanilla large, {len(large)} records on "
        f"{device['device_name']}; methods faster than vanilla large take less)"
    )


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
    check_stats(cfg.get("stats") or {})
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


def check_stats(settings: Any) -> None:
    """``stats``: bootstrap resamples, their seed, the interval's confidence level."""
    check_integer("stats.bootstrap", settings.get("bootstrap", 1000), 1)
    check_integer("stats.randomizations", settings.get("randomizations", 10_000), 1)
    check_integer("stats.seed", settings.get("seed", 0), 0)
    confidence = settings.get("confidence", 0.95)
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
    if task.extra.get("paper") and device.type == "cpu" and cfg.pair.device != "cpu":
        raise InvalidParameterError(
            f"pair.device={cfg.pair.device!r} resolved to cpu for paper task {task.name!r} "
            "(torch.cuda.is_available() is False: no GPU, or a torch build that does not match "
            "the driver): accepted a CUDA device, or pair.device=cpu to run on the CPU anyway"
        )


def chosen_examples(examples: list[Example], ids: list[str]) -> list[Example]:
    """The examples named by ``data.example_ids``, in that order; an unknown id is one line."""
    by_id = {example.id: example for example in examples}
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise DataError(
            f"data.example_ids={unknown[:3]!r} are not in the split: accepted ids such as "
            f"{list(by_id)[:3]!r} ({len(by_id)} examples)"
        )
    return [by_id[i] for i in ids]


def select_examples(task: TaskSpec, cfg: DictConfig) -> tuple[list[Example], dict[str, int]]:
    """The data slice; examples with an empty (or null) source or reference are skipped and
    counted, or refused, as ``scoring.empty_sources`` says."""
    ids = cfg.data.get("example_ids")
    if ids:  # chosen examples, in the order given (then the limit)
        examples = chosen_examples(load_examples(task, cfg.data.split or task.split), list(ids))
        examples = examples[: cfg.data.limit] if cfg.data.limit else examples
    else:
        examples = load_examples(task, cfg.data.split or task.split, cfg.data.limit)
    empty = {
        "n_empty_sources_skipped": sum(not has_source(e) for e in examples),
        "n_empty_references_skipped": sum(has_source(e) and not e.target.strip() for e in examples),
    }
    kept = [e for e in examples if has_source(e) and e.target.strip()]
    if len(kept) < len(examples) and cfg.scoring.empty_sources == "error":
        raise DataError(
            f"{len(examples) - len(kept)} examples of task {task.name!r} have an empty or null "
            "source or reference: set scoring.empty_sources=skip to skip them"
        )
    if not kept:
        raise DataError(
            f"task {task.name!r} has no example with both a source and a reference in the first "
            f"{len(examples)} rows of split {cfg.data.split or task.split!r}"
        )
    return kept, empty


def has_source(example: Example) -> bool:
    return bool(example.source.strip())


def dataset_fingerprint(examples: list[Example]) -> str:
    digest = hashlib.sha256()
    for example in examples:
        digest.update(f"{example.id}\x00{example.source}\x00{example.target}\x01".encode())
    return digest.hexdigest()


def compatibility(
    cfg: DictConfig, task: TaskSpec, device: dict[str, Any], runs: list[RunConfig]
) -> dict[str, Any]:
    """What must match for records to share a folder (the data limit may grow).

    The early-exit depth and CALM's model count only when a planned run uses them, so
    folders of sweeps without them keep their fingerprint.
    """
    uses = {
        "early_exit_layers": any(run.small_variant == "early_exit" for run in runs),
        "calm_model": any(run.method == "calm" for run in runs),
    }
    return {
        "task": task.name,
        "dataset": task.hub_id or str(task.data_files),
        "split": cfg.data.split or task.split,
        "source_prefix": task.source_prefix,
        "large": cfg.pair.large,
        "small": cfg.pair.small,
        "small_aligned": cfg.pair.get("small_aligned"),
        "dtype": cfg.pair.dtype,
        "device": device["device_name"],
        # a baseline is never reused across library versions or matmul precision settings
        "torch": device["torch"],
        "transformers": device["transformers"],
        "float32_matmul_precision": device["float32_matmul_precision"],
        "cuda_matmul_allow_tf32": device["cuda_matmul_allow_tf32"],
        "max_new_tokens": cfg.max_new_tokens or task.max_new_tokens,
        "max_source_length": task.max_source_length,
        **{name: cfg.pair.get(name) for name, used in uses.items() if used},
        # compiled and eager timings never share a folder (eager folders keep their key),
        # nor do two compile modes (default-mode folders keep theirs)
        **({"engine_compile": True} if engine_compile(cfg) else {}),
        **(
            {"engine_compile_mode": engine_compile(cfg)}
            if engine_compile(cfg) not in (None, "default")
            else {}
        ),
        # prepacked kernels round differently from plain ones (folders from before keep theirs)
        **({"engine_cpu_kernels": "prepacked"} if engine_cpu_kernels(cfg) == "prepacked" else {}),
    }


def compile_report(pair: LoadedPair, mode: str | None = None) -> dict[str, dict[str, float]]:
    """Graphs compiled, compile seconds and compiled calls of each model of the pair (in
    compile ``mode``; None: every mode)."""
    models = {"large": pair.large, **{f"small/{name}": m for name, m in pair.smalls.items()}}
    return {name: compile_stats(model, mode) for name, model in models.items() if model is not None}


def engine_compile(cfg: DictConfig) -> str | None:
    """The compile mode of ``engine.compile=true`` (``engine.compile_mode``), else None."""
    engine = cfg.get("engine") or {}
    return engine.get("compile_mode", "default") if engine.get("compile", False) else None


def engine_cpu_kernels(cfg: DictConfig) -> str:
    """``engine.cpu_kernels`` resolved for the pair's device and dtype: ``plain`` or
    ``prepacked`` (:func:`bild_exp.decoding.cpu_kernels.resolve_cpu_kernels`)."""
    engine = cfg.get("engine") or {}
    dtype = getattr(torch, str(cfg.pair.dtype), None)
    device = resolve_device(cfg.pair.device)
    return resolve_cpu_kernels(engine.get("cpu_kernels", "auto"), device, dtype)


def check_engine(cfg: DictConfig, runs: list[RunConfig]) -> None:
    """``engine.compile=true`` with a run the compiled path cannot take: one line, before
    any model loads (the models' own types are checked by the engine at the first call)."""
    compile = (cfg.get("engine") or {}).get("compile", False)
    if not isinstance(compile, bool):
        raise InvalidParameterError(
            f"engine.compile={compile!r} is invalid: accepted true or false"
        )
    mode = (cfg.get("engine") or {}).get("compile_mode", "default")
    check_compile_mode(mode, "engine.compile_mode")
    engine_cpu_kernels(cfg)
    if mode != "default" and not compile:
        raise InvalidParameterError(
            f"engine.compile_mode={mode!r} is invalid with engine.compile=false: accepted "
            "'default', or engine.compile=true"
        )
    if not compile:
        return
    compilable = methods_where("compilable")
    for run in runs:
        if run.method not in compilable or run.small_variant == "early_exit":
            raise InvalidParameterError(
                f"engine.compile=true is invalid for run {run.study!r} (method={run.method!r}, "
                f"small={run.small_variant!r}): accepted methods {', '.join(compilable)} "
                "with a separate small model; run CALM, HF assisted and early exit eagerly"
            )


def truncate_references(references: pd.Series, tokenizer: Any, n_tokens: int | None) -> pd.Series:
    """References as the official script scored them: tokenized as labels cut to
    ``n_tokens`` (the end token included) and decoded back without special tokens.
    Every reference makes the round trip, as there (characters outside the vocabulary drop
    out); ``None`` keeps them as written."""
    if not n_tokens:
        return references
    return references.map(
        lambda text: tokenizer.decode(
            tokenizer(text_target=text, max_length=n_tokens, truncation=True)["input_ids"],
            skip_special_tokens=True,
            clean_up_tokenization_spaces=False,
        )
    )


def clean_up_spaces(texts: pd.Series, tokenizer: Any, enabled: bool) -> pd.Series:
    """transformers 4.25 decoded with ``clean_up_tokenization_spaces=True`` (" ." -> ".",
    " n't" -> "n't", ...; 5.x defaults to False): the official scores were taken on such text."""
    if not enabled:
        return texts
    return texts.map(lambda text: tokenizer.clean_up_tokenization(text).strip())


def scored_texts(records: pd.DataFrame, tokenizer: Any, scoring: Any) -> pd.DataFrame:
    """Add the hypothesis and reference columns that the metrics read (``scoring.*``)."""
    references = truncate_references(
        records["reference"], tokenizer, scoring.get("truncate_references")
    )
    cleanup = bool(scoring.get("clean_up_tokenization_spaces", False))
    records["scored_reference"] = clean_up_spaces(references, tokenizer, cleanup)
    records["scored_hypothesis"] = clean_up_spaces(records["hypothesis"], tokenizer, cleanup)
    return records


def executed(
    records: pd.DataFrame, examples: list[Example], task: TaskSpec, run_dir: Path
) -> pd.DataFrame:
    """Records with their execution outcomes; per example in ``executions.csv``."""
    problems = {example.id: example for example in examples}
    prefix = task.prompt_format().response_prefix
    records = execute_records(
        records, problems, prefix, execution_limits(task.extra.get("execution"))
    )
    columns = ["config_id", "example_id", "method", "execution", "execution_detail"]
    run_dir.mkdir(parents=True, exist_ok=True)
    records[columns].to_csv(run_dir / "executions.csv", index=False)
    return records


def run_sweep(cfg: DictConfig, runs: list[RunConfig]) -> SweepOutcome:
    task = task_from_config(cfg.task)
    torch_device = resolve_device(cfg.pair.device)
    check_paper_device(cfg, task, torch_device)  # before any download
    # one timed job per GPU; parallel CPU jobs share the cores (bild_exp.harness.placement)
    with placed(torch_device) as torch_device:
        cfg.pair.device = str(torch_device)
        return sweep_on_device(cfg, runs, task, torch_device)


def sweep_on_device(
    cfg: DictConfig, runs: list[RunConfig], task: TaskSpec, torch_device: torch.device
) -> SweepOutcome:
    """Load, decode, score and report, on the device this job holds."""
    if not cfg.progress:  # progress=false silences the libraries' loading bars too
        import datasets

        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()
    examples, n_skipped = select_examples(task, cfg)
    device = device_description(torch_device)
    fingerprint = compatibility(cfg, task, device, runs)
    run_dir = (
        Path(cfg.results_dir) / cfg.experiment_name / (cfg.run or f"{task.name}_{cfg.pair.name}")
    )
    store, baselines = (
        RecordStore(run_dir),
        RecordStore(Path(cfg.baselines_dir) / short_hash(fingerprint)),
    )
    store.check(fingerprint)  # before any model loads
    baselines.check(fingerprint)
    store.verify()
    baselines.verify()
    if cfg.pair.architecture == "decoder-only":  # a chat prompt needs a chat template: check first
        task.prompt_format().check_tokenizer(load_tokenizer(cfg.pair), cfg.pair.tokenizer)
    variants = sorted({run.small_variant for run in runs if run.small_variant != "-"})
    kernels = engine_cpu_kernels(cfg)
    pair = load_pair(
        cfg.pair, variants, need_calm=any(run.method == "calm" for run in runs), cpu_kernels=kernels
    )
    store.claim(fingerprint)  # only once the models load: a typo in a path locks nothing
    baselines.claim(fingerprint)
    items = encode(examples, pair.tokenizer, task, pair.device, cfg.pair.architecture)
    context = {"task": task.name, "pair": cfg.pair.name, "split": cfg.data.split or task.split}
    load_before, n_done = machine_load(), len(store.done_keys()) + len(baselines.done_keys())
    try:
        execute_all(runs, items, pair, (store, baselines), context, cfg)
    except KeyboardInterrupt:
        raise Interrupted(
            f"{len(store.done_keys())} records in {str(store.parts_dir)!r} and "
            f"{len(baselines.done_keys())} in {str(baselines.parts_dir)!r} are saved; "
            "the same command resumes where this one stopped"
        ) from None
    records = collect_records(runs, examples, store, baselines)
    records = scored_texts(records, pair.tokenizer, cfg.scoring)
    if task.metric == "pass_at_1":  # run the problems' tests on every answer, untimed
        records = executed(records, examples, task, run_dir)
    quality = quality_column(task.metric, task.extra.get("quality"))
    scoring = OmegaConf.to_container(cfg.scoring, resolve=True)
    settings = OmegaConf.to_container(cfg.stats, resolve=True) if "stats" in cfg else None
    summary = summarize(records, task.metric, quality, scoring, settings)
    points = operating_points(summary, quality)
    manifest = build_manifest(
        cfg, examples, items, n_skipped, device, dataset_fingerprint(examples)
    )
    manifest["cpu_kernels"] = kernels
    computed = len(store.done_keys()) + len(baselines.done_keys()) > n_done
    manifest["machine_load"] = (
        {"cores": os.cpu_count(), "before": load_before, "after": machine_load()}
        if computed  # a rerun that timed nothing keeps the load of the run that did
        else previous_machine_load(run_dir)
    )
    if (
        engine_compile(cfg) is not None
    ):  # compile time is kept out of every timed example; here it is
        manifest["compile"] = compile_report(pair)
    record_dirs = store.data_dirs + baselines.data_dirs
    write_outputs(run_dir, summary, points, manifest, quality, cfg, record_dirs)
    print(format_summary(summary, quality, device, notes(summary, manifest)))
    print(
        "\nOperating points (best speedup with quality within the tolerance of vanilla large;"
        " rule point: on point estimates, ci: the 95% interval's lower bound):"
    )
    print(points_table(points).to_string(index=False))
    return SweepOutcome(run_dir, records, summary, points)


def previous_machine_load(run_dir: Path) -> dict[str, Any] | None:
    """The load recorded by the run that timed this folder's records (None if unknown)."""
    path = run_dir / "manifest.json"
    if not path.exists():
        return None
    return read_json(path, "delete it; the next sweep rewrites it").get("machine_load")


def execute_all(
    runs: list[RunConfig],
    items: list[EncodedExample],
    pair: LoadedPair,
    stores: tuple[RecordStore, RecordStore],
    context: dict[str, Any],
    cfg: DictConfig,
) -> None:
    """Every run's missing records. A configuration that another process is computing
    (its lock is held) is left for last and then waited for, so parallel sweeps on one
    folder split the work and never compute a record twice."""
    store, baselines = stores
    max_new_tokens = cfg.max_new_tokens or cfg.task.max_new_tokens
    pending, wait = list(runs), False
    with tqdm(total=len(runs) * len(items), disable=not cfg.progress, unit="example") as bar:
        while pending:
            deferred = []
            for run in pending:
                target = baselines if run.is_baseline else store
                try:
                    with target.lock(run.config_id, wait=wait):
                        bar.set_description(f"config {run.config_id} {run.study}")
                        execute_run(
                            run,
                            items,
                            pair,
                            target,
                            context,
                            max_new_tokens,
                            cfg.data.warmup,
                            lambda: bar.update(1),
                            cfg.task.get("stop_strings"),
                            engine_compile(cfg),
                            cfg.data.get("warmup_max_new_tokens"),
                        )
                except BusyError as busy:
                    log.info("%s: computing the other configurations first", busy)
                    deferred.append(run)
            pending, wait = deferred, True


def short_hash(value: dict[str, Any]) -> str:
    return hashlib.sha1(repr(sorted(value.items())).encode()).hexdigest()[:16]


def collect_records(
    runs: list[RunConfig], examples: list[Example], *stores: RecordStore
) -> pd.DataFrame:
    """The planned configurations' records for this slice, from the run and baseline stores."""
    wanted_configs = {run.config_id for run in runs}
    wanted_examples = {example.id for example in examples}
    frames = [store.read() for store in stores]
    records = pd.concat([f for f in frames if len(f)], ignore_index=True)
    keep = records["config_id"].isin(wanted_configs) & records["example_id"].isin(wanted_examples)
    return records[keep].reset_index(drop=True)
