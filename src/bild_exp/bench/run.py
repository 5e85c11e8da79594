"""``make bench``: every contender on the same test examples, in one process and one run.

1. Operating points are chosen by a harness sweep on the validation split.
2. On the test split, methods are interleaved per example in a rotating order (machine
   drift hits all alike), each call timed alone (generation only, device synchronised).
3. Per-call timings measured in this run feed a cost model: predicted latency per method,
   achieved / predicted, and BiLD's ideal speedup on this pair and hardware.
4. Scale: latency by output length, sweep throughput with 1 vs 2 joblib workers.
5. The engine section: the engine's vanilla loop vs HF ``generate`` per token.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from bild_exp.analysis.comparison import compare_with_vanilla, quality_statistics, stats_settings
from bild_exp.analysis.operating_points import RULES
from bild_exp.bench.cost_model import (
    CallTimes,
    ideal_bild_speedup,
    measure_paths,
    predicted_latency,
)
from bild_exp.bench.methods import Contender, contenders, with_compiled_twins
from bild_exp.bench.scale import length_table, worker_throughput
from bild_exp.data.tasks import load_examples, task_from_config
from bild_exp.decoding.compiled import check_compile_mode
from bild_exp.decoding.registry import parse_params
from bild_exp.errors import InvalidParameterError
from bild_exp.harness.config.checks import (
    check_integer,
    check_settings,
    check_weight_formats,
)
from bild_exp.harness.config.dry_run import print_plan
from bild_exp.harness.config.plan import plan_runs, small_variants
from bild_exp.harness.config.settings import resolve_settings
from bild_exp.harness.records.store import atomic_write_bytes
from bild_exp.harness.run.blocks import TimingBlock, rotated, start_block
from bild_exp.harness.run.decode import EncodedExample, encode, output_text, timed_call
from bild_exp.harness.run.pipeline import compile_report, run_sweep
from bild_exp.harness.scoring.code_execution import execute_records, execution_limits, pass_at_1
from bild_exp.harness.scoring.metrics import metric_options, quality_column, score
from bild_exp.harness.scoring.texts import scored_texts
from bild_exp.models.pair import LoadedPair, LoadSettings, load_pair
from bild_exp.timing import device_description

log = logging.getLogger(__name__)


def interleaved_run(
    chosen: list[Contender],
    items: list[EncodedExample],
    pair: LoadedPair,
    max_new_tokens: int,
    warmup: int,
    stop_strings: list[str] | None = None,
    block: TimingBlock | None = None,
) -> pd.DataFrame:
    """Decode every example with every contender, rotating the order per example; every
    record carries ``block`` (this process's timing block) and its timing columns."""
    block = block or start_block()
    for contender in chosen:
        for item in items[:warmup]:
            contender.decode(pair, item.input_ids, max_new_tokens, stop_strings)
    rows = []
    names = [contender.name for contender in chosen]
    by_name = {contender.name: contender for contender in chosen}
    for index, item in enumerate(items):
        for name in rotated(names, index):
            contender = by_name[name]
            result, timing = timed_call(
                lambda c=contender, ids=item.input_ids: c.decode(
                    pair, ids, max_new_tokens, stop_strings
                ),
                pair.device,
            )
            rows.append(
                {
                    "config_id": contender.name,
                    "method": contender.name,
                    "example_id": item.example.id,
                    **timing,
                    **block.columns(),
                    "n_tokens": len(result.tokens),
                    "hypothesis": output_text(pair.tokenizer, result.tokens, stop_strings),
                    "reference": item.example.target,
                    "n_large_calls": result.stats.get("n_large_calls"),
                    "accepted_lengths": result.stats.get("accepted_lengths"),
                    "drafted_lengths": result.stats.get("drafted_lengths"),
                    "large_call_shapes": result.stats.get("large_call_shapes"),
                    "small_call_shapes": result.stats.get("small_call_shapes"),
                    "small_variant": contender.small_variant,
                }
            )
    return pd.DataFrame(rows)


def method_row(
    group: pd.DataFrame,
    reference: pd.DataFrame,
    metric: str,
    quality: str,
    settings: dict[str, Any],
    predicted: float | None,
    scoring: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One contender against the reference on the same examples, as the sweep compares a
    configuration with vanilla large (:func:`bild_exp.analysis.comparison.compare_with_vanilla`:
    same-block pairs, paired bootstrap 95% intervals on one draw of examples)."""
    scoring = scoring or {}
    compared = compare_with_vanilla(
        group,
        reference,
        quality_statistics(group, metric, quality, scoring),
        quality_statistics(reference, metric, quality, scoring),
        settings,
    )
    accepted = [n for lengths in group["accepted_lengths"].dropna() for n in lengths]
    drafted = [n for lengths in group["drafted_lengths"].dropna() for n in lengths]
    calls = group["n_large_calls"].dropna()
    total = group["latency_s"].sum()
    if metric == "pass_at_1":
        own = pass_at_1(group)[quality]
    else:
        own = score(
            metric,
            list(group["scored_hypothesis"]),
            list(group["scored_reference"]),
            **metric_options(scoring),
        )[quality]
    return {
        "method": group["method"].iloc[0],
        quality: own,
        "quality_diff": compared["quality_diff"],
        "quality_diff_low": compared["quality_diff_low"],
        "quality_diff_high": compared["quality_diff_high"],
        "quality_diff_ci95": ci_text(compared["quality_diff_low"], compared["quality_diff_high"]),
        "quality_p_value": compared["quality_p_value"],
        "total_latency_s": total,
        "speedup": compared["speedup"],
        "speedup_low": compared["speedup_low"],
        "speedup_high": compared["speedup_high"],
        "speedup_ci95": ci_text(compared["speedup_low"], compared["speedup_high"]),
        "speedup_median": compared["speedup_median"],
        "speedup_p10": compared["speedup_p10"],
        "speedup_p90": compared["speedup_p90"],
        "n_timing_pairs": compared["n_timing_pairs"],
        "latency_median_s": float(group["latency_s"].median()),
        "tokens_per_s": group["n_tokens"].sum() / total,
        "large_calls_per_token": calls.sum() / group["n_tokens"].sum() if len(calls) else None,
        "mean_accepted_length": float(np.mean(accepted)) if accepted else None,
        "acceptance_rate": sum(accepted) / sum(drafted) if sum(drafted) else None,
        "achieved_over_predicted": total / predicted if predicted else None,
    }


def ci_text(low: float | None, high: float | None) -> str:
    return "" if low is None or high is None else f"[{low:.2f}, {high:.2f}]"


def predicted_total(group: pd.DataFrame, times: dict[str, CallTimes]) -> float | None:
    """Cost-model latency of one method over all its examples (None without call shapes)."""
    if group["large_call_shapes"].isna().all() and group["small_call_shapes"].isna().all():
        return None
    total = 0.0
    for _, row in group.iterrows():
        small_times = times.get(row["small_variant"])
        total += predicted_latency(
            list(row["large_call_shapes"] if row["large_call_shapes"] is not None else []),
            list(row["small_call_shapes"] if row["small_call_shapes"] is not None else []),
            times["large"],
            small_times,
        )
    return total


def measure_pair_call_times(
    pair: LoadedPair,
    records: pd.DataFrame,
    item: EncodedExample,
    repeats: int,
    rounds: int = 1,
    modes: tuple[str, ...] = (),
) -> dict[str | None, dict[str, CallTimes]]:
    """Per-call timings for every n_fed the run's calls used (at the median cached length),
    by path (None: eager; else each compile mode of ``modes``) and model. The paths are
    measured in ``rounds`` alternating blocks of ``repeats / rounds`` calls
    (:func:`measure_paths`)."""
    shapes = [
        s
        for column in ("large_call_shapes", "small_call_shapes")
        for calls in records[column].dropna()
        for s in calls
    ]
    ks = sorted({int(n) for n, _ in shapes if n <= 64} | {1, 11})
    cached = int(statistics.median(int(c) for _, c in shapes)) if shapes else 16
    paths = (None, *modes)
    block = -(-repeats // rounds)
    models = {"large": pair.large, **pair.smalls}
    times: dict[str | None, dict[str, CallTimes]] = {path: {} for path in paths}
    for name, model in models.items():
        for path, call_times in measure_paths(
            model, item.input_ids, ks, cached, block, rounds, paths
        ).items():
            times[path][name] = call_times
    return times


def check_bench_settings(bench: DictConfig) -> None:
    """``bench.*`` counts, checked with the sweep's settings before anything loads."""
    for key, low in (
        ("n_examples", 1),
        ("warmup", 0),
        ("bootstrap_samples", 1),
        ("call_repeats", 1),
        ("call_rounds", 1),
        ("scale_examples", 1),
    ):
        if key in bench:
            check_integer(f"bench.{key}", bench.get(key), low)
    for key, low in (("length_buckets", 0), ("scale_workers", 1)):
        values = bench.get(key)
        if values is not None and (
            not OmegaConf.is_list(values)
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= low for v in values)
        ):
            raise InvalidParameterError(
                f"bench.{key}={values!r} is invalid: accepted a list of integers >= {low}"
            )
    rules = bench.get("rules")
    if not OmegaConf.is_list(rules) or not rules or not all(rule in RULES for rule in rules):
        raise InvalidParameterError(
            f"bench.rules={rules!r} is invalid: accepted a non-empty list of {', '.join(RULES)}"
        )
    tolerances = bench.get("tolerances")
    if (
        not OmegaConf.is_list(tolerances)
        or not tolerances
        or not all(
            isinstance(t, float | int) and not isinstance(t, bool) and t >= 0 for t in tolerances
        )
    ):
        raise InvalidParameterError(
            f"bench.tolerances={tolerances!r} is invalid: accepted a non-empty list of numbers >= 0"
        )


def run(cfg: DictConfig) -> Path:
    """Select operating points on validation, benchmark on test, write bench.csv and bench.md."""
    bench = cfg.bench
    task = task_from_config(cfg.task)
    metric, quality = task.metric, quality_column(task.metric, task.quality)
    check_settings(cfg)
    check_bench_settings(bench)
    compile_mode = check_compile_mode(bench.compile_mode, "bench.compile_mode")
    runs = plan_runs(cfg)
    if cfg.dry_run:
        print_plan(cfg, runs)
        print(f"then the head-to-head on {bench.n_examples} examples of the {bench.split} split")
        return Path(bench.output_dir) / cfg.pair.name
    variants = small_variants(cfg)  # the pair's small models: none assumed
    check_weight_formats(cfg, variants)  # quantised drafters' kernels, before any weights load
    selection = run_sweep(cfg, runs)
    chosen, notes = contenders(
        selection.summary,
        quality,
        list(bench.tolerances),
        bench.hf_confidence_threshold,
        variants,
        list(bench.rules),
    )
    compiled = bool(bench.compiled)
    if compiled:  # compiled twins, and the compile report
        chosen = with_compiled_twins(chosen, compile_mode)
    # the same kernels as the sweeps' (engine.cpu_kernels), for every contender alike
    pair = load_pair(cfg.pair, variants, settings=LoadSettings.of(cfg))
    examples = head_to_head_examples(task, bench, resolve_settings(cfg).split, selection)
    items = encode(examples, pair.tokenizer, task, pair.device, cfg.pair.architecture)
    max_new_tokens = resolve_settings(cfg).decode.max_new_tokens
    records = interleaved_run(chosen, items, pair, max_new_tokens, bench.warmup, task.stop_strings)
    records = scored_texts(records, pair.tokenizer, cfg.scoring)
    if metric == "pass_at_1":  # the answers' tests, untimed
        problems = {example.id: example for example in examples}
        records = execute_records(
            records,
            problems,
            task.prompt_format().response_prefix,
            execution_limits(task.execution),
        )
    settings = stats_settings(
        {**OmegaConf.to_container(cfg.stats, resolve=True), "bootstrap": bench.bootstrap_samples}
    )
    scoring = OmegaConf.to_container(cfg.scoring, resolve=True)
    # per-call times of the eager path, the twins' compile mode and the default one
    modes = tuple(dict.fromkeys(["default", compile_mode])) if compiled else ()
    by_path = measure_pair_call_times(
        pair, records, items[0], bench.call_repeats, bench.call_rounds, modes
    )
    times, compiled_times = by_path[None], by_path.get(compile_mode)
    twins = {c.name for c in chosen if c.compile}
    reference = records[records["method"] == chosen[0].name]
    table = pd.DataFrame(
        [
            method_row(
                group,
                reference,
                metric,
                quality,
                settings,
                predicted_total(
                    group, compiled_times if group["method"].iloc[0] in twins else times
                ),
                scoring,
            )
            for _, group in records.groupby("method", sort=False)
        ]
    )
    max_small_steps = bild_max_small_steps(cfg)
    drafter = variants[0]
    ideal = {
        "speedup": ideal_bild_speedup(times["large"], times[drafter], max_small_steps),
        "max_small_steps": max_small_steps,
    }
    compile_section = (
        {
            "mode": compile_mode,
            "times": {mode: by_path[mode] for mode in modes},
            "ideal": ideal_bild_speedup(
                compiled_times["large"], compiled_times[drafter], max_small_steps
            ),
            "report": {mode: compile_report(pair, mode) for mode in modes},
        }
        if compiled_times
        else None
    )
    lengths = length_table(records, list(bench.length_buckets), [c.name for c in chosen])
    workers = (
        worker_throughput(cfg, list(bench.scale_workers), bench.scale_examples)
        if bench.scale_workers
        else None
    )
    engine = engine_section() if bench.engine_section else None
    output_dir = Path(bench.output_dir) / cfg.pair.name
    results = BenchResults(table, notes, times, ideal, lengths, workers, engine, compile_section)
    write_report(output_dir, results, pair, bench)
    return output_dir


def head_to_head_examples(
    task: Any, bench: DictConfig, selection_split: str, selection: Any
) -> list[Any]:
    """``bench.n_examples`` examples of ``bench.split``; where the selection sweep chose its
    operating points on the same split (HumanEval has one), its examples are left out, so
    that the head-to-head never reports the examples its points were chosen on."""
    if bench.split != selection_split:
        return load_examples(task, bench.split, bench.n_examples)
    chosen_on = set(selection.records["example_id"])
    unseen = [e for e in load_examples(task, bench.split) if e.id not in chosen_on]
    if not unseen:
        raise InvalidParameterError(
            f"bench.split={bench.split!r} is invalid here: the selection sweep used every "
            "example of it; accepted another split, or a smaller data.limit for the selection"
        )
    return unseen[: bench.n_examples]


def bild_max_small_steps(cfg: DictConfig) -> int:
    """The selection sweep's BiLD max_small_steps (the ideal speedup's cycle length)."""
    study = cfg.method.get("bild")
    params = (study.get("params") if study is not None else None) or {}
    # unset: the default of BiLD's parameter class, not a copy of it
    fixed = {name: params[name] for name in ("max_small_steps",) if name in params}
    return parse_params("bild", fixed).max_small_steps


def engine_section() -> dict[str, float]:
    from bild_exp.bench.engine_speed import measure_engine_speed, t5_small_sized_model

    speed = measure_engine_speed(t5_small_sized_model())
    return {
        "engine_ms_per_token": speed.engine_ms_per_token,
        "hf_ms_per_token": speed.hf_ms_per_token,
        "ratio": speed.ratio,
    }


def call_table(times: dict[str, CallTimes]) -> str:
    """Per-call milliseconds by tokens fed, one column per model."""
    return (
        pd.DataFrame(
            {
                name: {f"t(n_fed={k}) ms": 1000 * v for k, v in t.by_n_fed.items()}
                | {"encoder ms": 1000 * t.encoder}
                for name, t in times.items()
            }
        )
        .round(3)
        .to_markdown()
    )


def compile_lines(eager: dict[str, CallTimes], section: dict) -> list[str]:
    """The compiled path's per-call times (each compile mode measured) next to the eager
    ones, its ceiling, and what compiling cost (kept out of every timed example)."""
    by_mode: dict[str, dict[str, CallTimes]] = section["times"]
    rows = {"eager one-token step ms": {n: 1000 * t.call(1) for n, t in eager.items()}}
    for mode, compiled in by_mode.items():
        rows[f"{mode}: compiled one-token step ms"] = {
            n: 1000 * t.call(1) for n, t in compiled.items()
        }
        rows[f"{mode}: eager / compiled"] = {
            n: eager[n].call(1) / t.call(1) for n, t in compiled.items()
        }
    steps = pd.DataFrame(rows).T
    ratios = ", ".join(
        f"{mode} {times['large'].call(1) / times['base'].call(1):.2f}x"
        for mode, times in by_mode.items()
    )
    mode = section["mode"]
    lines = [
        "",
        "## Compiled path (static cache + torch.compile; per-call times measured in this run)",
        "",
        f"The compiled rows above ran in compile mode `{mode}` (bench.compile_mode; HF "
        "generate's compiled baseline with the same inductor settings less weight freezing, "
        "which its per-call static caches do not allow). Eager and compiled "
        "calls are measured in alternating blocks (bench.call_rounds), so that every path "
        "meets the same drifts in the machine's speed.",
        "",
        steps.round(3).to_markdown(),
        "",
        f"Large / small one-token step ratio: eager "
        f"{eager['large'].call(1) / eager['base'].call(1):.2f}x, compiled {ratios}. Ideal "
        f"BiLD speedup on the compiled path ({mode}): {section['ideal']:.2f}x.",
    ]
    for name, times in by_mode.items():
        lines += [
            "",
            f"Per-call times, compile mode `{name}`:",
            "",
            call_table(times),
            "",
            f"Compilation, compile mode `{name}` (untimed warm-up):",
            "",
            pd.DataFrame(section["report"][name]).round(2).to_markdown(),
        ]
    return lines


@dataclass(frozen=True)
class BenchResults:
    """What one bench run measured, as :func:`write_report` renders it."""

    table: pd.DataFrame  # one row per contender (:func:`method_row`)
    notes: list[dict[str, Any]]  # the operating-point selections
    times: dict[str, CallTimes]  # per-call times, eager path
    ideal: dict[str, float]  # BiLD's ideal speedup and the max_small_steps it assumes
    lengths: pd.DataFrame  # latency by output length
    workers: pd.DataFrame | None = None  # sweep throughput by joblib workers
    engine: dict[str, float] | None = None  # the engine's loop against HF generate
    compile_section: dict[str, Any] | None = None  # the compiled path


def write_report(
    output_dir: Path, results: BenchResults, pair: LoadedPair, bench: DictConfig
) -> None:
    """bench.csv (the contenders' table) and bench.md (every section), atomically."""
    table, notes, times, ideal = results.table, results.notes, results.times, results.ideal
    lengths, workers, engine = results.lengths, results.workers, results.engine
    compile_section = results.compile_section
    device = device_description(pair.device)
    atomic_write_bytes(output_dir / "bench.csv", table.to_csv(index=False).encode())
    lines = [
        "# Benchmark",
        "",
        f"Machine: {device['device_name']} ({device['device']}, {device['cpu_threads']} threads), "
        f"torch {device['torch']}, transformers {device['transformers']}, "
        f"{pair.cpu_kernels} CPU kernels (engine.cpu_kernels). Batch 1, greedy, "
        f"{bench.n_examples} examples of the {bench.split} split, methods interleaved per example; "
        "operating points chosen on the validation split. Speedup = vanilla large (engine) total latency / "
        "method total latency; quality_diff = method - vanilla large (engine); CIs: paired "
        "bootstrap 95% over examples (bild_exp.analysis.stats).",
        "",
        table.round(3).to_markdown(index=False),
        "",
        "## Operating-point selection (validation split)",
        "",
        pd.DataFrame(notes).round(3).to_markdown(index=False),
        "",
        "## Cost model (per-call timings measured in this run)",
        "",
        call_table(times),
        "",
        f"Ideal BiLD speedup on this pair and hardware (every small token accepted, max_small_steps={ideal['max_small_steps']}): {ideal['speedup']:.2f}x",
        "",
        "## Latency by output length (mean seconds per example)",
        "",
        lengths.round(4).to_markdown(),
    ]
    if compile_section is not None:
        lines += compile_lines(times, compile_section)
    if workers is not None:
        lines += [
            "",
            "## Sweep throughput by joblib workers",
            "",
            workers.round(3).to_markdown(index=False),
        ]
    if engine is not None:
        lines += [
            "",
            "## Engine",
            "",
            f"Engine 'large' loop {engine['engine_ms_per_token']:.2f} ms/token vs HF generate "
            f"{engine['hf_ms_per_token']:.2f} ms/token: ratio {engine['ratio']:.3f} (t5-small-sized, random weights).",
        ]
    report = "\n".join(lines) + "\n"
    atomic_write_bytes(output_dir / "bench.md", report.encode())
    print(report)
