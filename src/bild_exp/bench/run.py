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
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

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
from bild_exp.errors import InvalidParameterError
from bild_exp.harness import stats
from bild_exp.harness.checks import check_integer, check_settings, engine_cpu_kernels
from bild_exp.harness.dry_run import print_plan
from bild_exp.harness.execute import EncodedExample, encode, output_text
from bild_exp.harness.metrics import score
from bild_exp.harness.models import LoadedPair, load_pair
from bild_exp.harness.pipeline import compile_report, run_sweep
from bild_exp.harness.plan import plan_runs
from bild_exp.harness.settings import resolve_settings
from bild_exp.harness.store import atomic_write_bytes
from bild_exp.harness.summary import quality_column
from bild_exp.timing import device_description, timed

log = logging.getLogger(__name__)


def interleaved_run(
    chosen: list[Contender],
    items: list[EncodedExample],
    pair: LoadedPair,
    max_new_tokens: int,
    warmup: int,
    stop_strings: list[str] | None = None,
) -> pd.DataFrame:
    """Decode every example with every contender, rotating the order per example."""
    for contender in chosen:
        for item in items[:warmup]:
            contender.decode(pair, item.input_ids, max_new_tokens, stop_strings)
    rows = []
    for index, item in enumerate(items):
        shift = index % len(chosen)
        for contender in chosen[shift:] + chosen[:shift]:
            result, seconds = timed(
                lambda c=contender, ids=item.input_ids: c.decode(
                    pair, ids, max_new_tokens, stop_strings
                ),
                pair.device,
            )
            rows.append(
                {
                    "method": contender.name,
                    "example_id": item.example.id,
                    "latency_s": seconds,
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
    samples: int,
    predicted: float | None,
) -> dict[str, Any]:
    """One contender against the reference on the same examples: speedup and quality
    difference with paired bootstrap 95% intervals (one draw of examples for both)."""
    joined = group.merge(
        reference[["example_id", "latency_s", "hypothesis"]],
        on="example_id",
        suffixes=("", "_ref"),
    )
    indices = stats.bootstrap_indices(len(joined), samples, seed=0)
    speedup = stats.ratio_interval(
        joined["latency_s_ref"].to_numpy(), joined["latency_s"].to_numpy(), indices
    )
    difference = stats.paired_difference(
        stats.per_example_quality(metric, quality, joined["hypothesis"], joined["reference"]),
        stats.per_example_quality(metric, quality, joined["hypothesis_ref"], joined["reference"]),
        indices,
        seed=0,
    )
    accepted = [n for lengths in group["accepted_lengths"].dropna() for n in lengths]
    drafted = [n for lengths in group["drafted_lengths"].dropna() for n in lengths]
    calls = group["n_large_calls"].dropna()
    total = group["latency_s"].sum()
    return {
        "method": group["method"].iloc[0],
        quality: score(metric, list(group["hypothesis"]), list(group["reference"]))[quality],
        "quality_diff": difference.difference.estimate,
        "quality_diff_ci95": f"[{difference.difference.low:.2f}, {difference.difference.high:.2f}]",
        "quality_p_value": difference.p_value,
        "total_latency_s": total,
        "speedup": speedup.estimate,
        "speedup_ci95": f"[{speedup.low:.2f}, {speedup.high:.2f}]",
        "speedup_median": float((joined["latency_s_ref"] / joined["latency_s"]).median()),
        "latency_median_s": float(group["latency_s"].median()),
        "tokens_per_s": group["n_tokens"].sum() / total,
        "large_calls_per_token": calls.sum() / group["n_tokens"].sum() if len(calls) else None,
        "mean_accepted_length": float(np.mean(accepted)) if accepted else None,
        "acceptance_rate": sum(accepted) / sum(drafted) if sum(drafted) else None,
        "achieved_over_predicted": total / predicted if predicted else None,
    }


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
    metric, quality = task.metric, quality_column(task.metric, task.extra.get("quality"))
    check_settings(cfg)
    check_bench_settings(bench)
    compile_mode = check_compile_mode(bench.compile_mode, "bench.compile_mode")
    runs = plan_runs(cfg)
    if cfg.dry_run:
        print_plan(cfg, runs)
        print(f"then the head-to-head on {bench.n_examples} examples of the {bench.split} split")
        return Path(bench.output_dir) / cfg.pair.name
    selection = run_sweep(cfg, runs)
    chosen, notes = contenders(
        selection.summary, quality, list(bench.tolerances), bench.hf_confidence_threshold
    )
    compiled = bool(bench.compiled)
    if compiled:  # compiled twins, and the compile report
        chosen = with_compiled_twins(chosen, compile_mode)
    # the same kernels as the sweeps' (engine.cpu_kernels), for every contender alike
    pair = load_pair(cfg.pair, ["base", "aligned"], cpu_kernels=engine_cpu_kernels(cfg))
    examples = load_examples(task, bench.split, bench.n_examples)
    items = encode(examples, pair.tokenizer, task, pair.device, cfg.pair.architecture)
    max_new_tokens = resolve_settings(cfg).decode.max_new_tokens
    records = interleaved_run(chosen, items, pair, max_new_tokens, bench.warmup, task.stop_strings)
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
                bench.bootstrap_samples,
                predicted_total(
                    group, compiled_times if group["method"].iloc[0] in twins else times
                ),
            )
            for _, group in records.groupby("method", sort=False)
        ]
    )
    max_small_steps = 10
    ideal = ideal_bild_speedup(times["large"], times["base"], max_small_steps)
    compile_section = (
        {
            "mode": compile_mode,
            "times": {mode: by_path[mode] for mode in modes},
            "ideal": ideal_bild_speedup(
                compiled_times["large"], compiled_times["base"], max_small_steps
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
    write_report(
        output_dir,
        table,
        notes,
        times,
        ideal,
        lengths,
        workers,
        engine,
        pair,
        quality,
        bench,
        compile_section,
    )
    return output_dir


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


def write_report(
    output_dir: Path,
    table: pd.DataFrame,
    notes: list,
    times: dict[str, CallTimes],
    ideal: float,
    lengths: pd.DataFrame,
    workers: pd.DataFrame | None,
    engine: dict | None,
    pair: LoadedPair,
    quality: str,
    bench: DictConfig,
    compile_section: dict | None = None,
) -> None:
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
        "bootstrap 95% over examples (bild_exp.harness.stats).",
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
        f"Ideal BiLD speedup on this pair and hardware (every small token accepted, max_small_steps=10): {ideal:.2f}x",
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
