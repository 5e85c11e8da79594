"""``python -m bild_exp.bench.call_costs [pair=...]``: what a k-token decoder call costs
relative to a one-token call, per model of the pair and per engine path.

Draft-and-verify methods gain only where a call over k pending tokens costs about one
step. This measures that premise on the machine at hand for each model of the pair, on:

- ``plain``: eager, the model's own ``nn.Linear`` layers (MKL on a CPU);
- ``prepacked``: eager on oneDNN-prepacked weights (``engine.cpu_kernels``; CPUs only);
- ``compiled``: the engine's compiled path (on a CPU over the prepacked model, whose
  linear layers stay one opaque call each, so no weight is held twice);
- ``int8``, ``int4``: eager on weight-only quantised linear layers (the small variants of
  the same names, ``bild_exp.models.weight_only``; CPUs whose torch has the kernels).

The paths of one model are timed in alternating blocks at the same cached length
(:func:`bild_exp.bench.cost_model.measure_targets`); the report names the CPU or GPU, the
torch, BLAS and oneDNN versions and the thread count.
"""

from __future__ import annotations

import copy
import gc
import time
from pathlib import Path
from typing import Any

import hydra
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from bild_exp.bench.cost_model import measure_targets
from bild_exp.console import library_output_to_log
from bild_exp.decoding.compiled import check_compile_mode, compile_stats
from bild_exp.errors import InvalidParameterError, one_line_errors
from bild_exp.harness.records.store import atomic_write_bytes
from bild_exp.models.cpu_kernels import prepack_models, prepack_supported
from bild_exp.models.pair import int4_group_size, load_pair, resolve_device
from bild_exp.models.weight_only import QUANTIZED_FORMATS, missing_kernel, quantized_twin
from bild_exp.timing import device_description


def kernel_libraries() -> dict[str, str | None]:
    """The BLAS and oneDNN builds torch calls (from ``torch.__config__.show()``) and the
    CPU model: the facts a per-call timing on a CPU depends on."""
    config = torch.__config__.show().splitlines()

    def line(marker: str) -> str | None:
        found = [text.strip(" -") for text in config if marker in text]
        return found[0] if found else None

    cpu = None
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                cpu = text.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "blas": line("Math Kernel Library") or line("BLAS_INFO"),
        "onednn": line("MKL-DNN"),
        "cpu": cpu,
    }


def model_paths(
    model: torch.nn.Module,
    compiled: bool,
    mode: str,
    quantized: tuple[str, ...] = (),
    group_size: int = 32,
) -> dict[str, tuple[Any, Any]]:
    """The paths to time for ``model``: name -> (model, compile mode or None). On a CPU with
    float32 weights a prepacked twin joins (a copy of the model, packed), and the compiled
    path runs over it; so do weight-only ``quantized`` twins (``int8``, ``int4``) where this
    torch has their kernels (sharing the model's other tensors)."""
    parameter = next(model.parameters())
    paths: dict[str, tuple[Any, Any]] = {"plain": (model, None)}
    twin = model
    if prepack_supported(parameter.device, parameter.dtype):
        twin = copy.deepcopy(model)
        prepack_models([twin])
        paths["prepacked"] = (twin, None)
    if compiled:
        paths["compiled"] = (twin, mode)
    if parameter.dtype == torch.float32:
        for weights in quantized:
            if missing_kernel(weights, parameter.device) is None:
                paths[weights] = (quantized_twin(model, weights, group_size), None)
    return paths


def call_cost_rows(cfg: DictConfig) -> pd.DataFrame:
    """One row per model, path and k: median ms per call and its ratio to a one-token call."""
    mode = check_compile_mode(cfg.compile_mode, "compile_mode")
    for weights in cfg.quantized:
        if weights not in QUANTIZED_FORMATS:
            raise InvalidParameterError(
                f"quantized entry={weights!r} is invalid: accepted "
                f"{', '.join(map(repr, QUANTIZED_FORMATS))} (or quantized=[])"
            )
    pair = load_pair(cfg.pair, ["base"])
    prompt = torch.full((1, 8), 3, dtype=torch.long, device=pair.device)
    models = {"large": pair.large, "small": pair.smalls["base"]}
    rows = []
    for name in list(models):
        model = models.pop(name)
        paths = model_paths(
            model, cfg.compiled, mode, tuple(cfg.quantized), int4_group_size(cfg.pair)
        )
        start = time.perf_counter()
        times = measure_targets(paths, prompt, cfg.ks, cfg.cached_length, cfg.repeats, cfg.rounds)
        seconds = time.perf_counter() - start
        compile_s = compile_stats(paths["compiled"][0])["compile_s"] if cfg.compiled else None
        for path, call_times in times.items():
            one = call_times.by_n_fed[1]
            for k, per_call in sorted(call_times.by_n_fed.items()):
                rows.append(
                    {
                        "pair": cfg.pair.name,
                        "model": name,
                        "path": path,
                        "k": k,
                        "ms_per_call": 1000 * per_call,
                        "cost_in_one_token_calls": per_call / one,
                        "compile_s": compile_s if path == "compiled" else None,
                        "measure_s": seconds,
                    }
                )
        del paths, times, model
        gc.collect()  # the twin goes before the next model's twin is made
    return pd.DataFrame(rows)


def report(rows: pd.DataFrame, cfg: DictConfig, device: dict[str, Any]) -> str:
    libraries = kernel_libraries()
    lines = [
        f"# Decoder call costs: {cfg.pair.name}",
        "",
        f"Machine: {libraries['cpu'] or device['device_name']} ({device['device']}, "
        f"{device['cpu_threads']} threads); torch {device['torch']}, transformers "
        f"{device['transformers']}; BLAS: {libraries['blas']}; oneDNN: {libraries['onednn']}.",
        f"Median of {cfg.repeats * cfg.rounds} calls per model, path and k, in {cfg.rounds} "
        f"alternating blocks, after {cfg.cached_length} cached positions; batch 1, "
        f"{cfg.pair.dtype}. Cost = time of a k-token call / time of a one-token call on the "
        "same path.",
    ]
    for model, group in rows.groupby("model", sort=False):
        paths = list(dict.fromkeys(group["path"]))  # plain, prepacked, compiled, int8, int4
        values = {"ms_per_call": "ms", "cost_in_one_token_calls": "cost"}
        table = group.pivot(index="k", columns="path", values=list(values))
        table = table[[(value, path) for value in values for path in paths]]
        table.columns = [f"{path} {values[value]}" for value, path in table.columns]
        lines += ["", f"## {model}", "", table.round(2).to_markdown()]
        one = group[group["k"] == 1].set_index("path")["ms_per_call"]
        if "prepacked" in one:
            lines.append(
                f"\nOne-token step: plain {one['plain']:.1f} ms, prepacked {one['prepacked']:.1f} ms "
                f"({one['plain'] / one['prepacked']:.2f}x faster)."
            )
        quantized = [path for path in ("int8", "int4") if path in one]
        if quantized and "prepacked" in one:
            lines.append(
                "Weight-only quantised one-token step: "
                + ", ".join(
                    f"{path} {one[path]:.1f} ms ({one['prepacked'] / one[path]:.2f}x prepacked)"
                    for path in quantized
                )
                + "."
            )
        compiled = group[group["path"] == "compiled"]["compile_s"].dropna()
        if len(compiled):
            lines.append(f"Compiled path: {compiled.iloc[0]:.0f} s of compilation (untimed).")
    return "\n".join(lines) + "\n"


def run(cfg: DictConfig) -> Path:
    rows = call_cost_rows(cfg)
    device = device_description(resolve_device(cfg.pair.device))
    output_dir = Path(cfg.output_dir) / cfg.pair.name
    atomic_write_bytes(output_dir / "call_costs.csv", rows.to_csv(index=False).encode())
    text = report(rows, cfg, device)
    atomic_write_bytes(output_dir / "call_costs.md", text.encode())
    atomic_write_bytes(
        output_dir / "call_costs.yaml", OmegaConf.to_yaml(cfg, resolve=True).encode()
    )
    print(text)
    return output_dir


@hydra.main(version_base="1.3", config_path="../conf", config_name="call_costs")
def main(cfg: DictConfig) -> None:
    with (
        one_line_errors("bild_exp.bench.call_costs", lambda: "nothing is saved until the end"),
        library_output_to_log(),
    ):
        run(cfg)


if __name__ == "__main__":
    main()
