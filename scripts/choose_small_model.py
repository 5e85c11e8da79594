"""Choose the SmolLM2 pair's small model by measurement (`make smollm2-models`).

For each aligned candidate (the large model's first k layers, trained by
`python -m bild_exp.train +training=smollm2_align model.layers=k`):
1. the cached one-token step time of the large and the small model (median of repeats,
   same prompt, same cached length) and their ratio;
2. a BiLD sweep on the validation split through the harness (fallback and rollback rates,
   mean accepted length, ROUGE-L, speedup);
then pick the candidate with the best BiLD speedup within 0.5 ROUGE-L of vanilla large,
write results/smollm2-candidates/candidates.{csv,md} and the chosen depth, and copy the
chosen candidate to the shipped folder.

Usage: python scripts/choose_small_model.py --layers 2 4 [--limit 30]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pandas as pd
import torch
from hydra import compose, initialize_config_dir

from bild_exp import sweep
from bild_exp.bench.cost_model import measure_call_times
from bild_exp.data.tasks import load_examples, resolve_path, task_from_config
from bild_exp.harness.run.decode import encode
from bild_exp.models.pair import load_pair

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
OUTPUT = Path("results/smollm2-candidates")
SHIPPED = "package://assets/smollm2-pair/small-aligned"
TOLERANCE = 0.5


def candidate_dir(layers: int) -> Path:
    return Path(f"outputs/train/synopsis/aligned-k{layers}/export")


def compose_sweep(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="sweep", overrides=overrides)


def step_times(layers: int, repeats: int) -> dict[str, float]:
    """Cached one-token step of large and small on a validation prompt (ms) and the ratio."""
    cfg = compose_sweep(
        ["+task=synopsis", f"pair.small_aligned={candidate_dir(layers)}", "pair.device=cpu"]
    )
    task = task_from_config(cfg.task)
    pair = load_pair(cfg.pair, ["aligned"])
    example = load_examples(task, "validation", 1)
    item = encode(example, pair.tokenizer, task, pair.device, cfg.pair.architecture)[0]
    large = measure_call_times(pair.large, item.input_ids, [1], 8, repeats).by_n_fed[1]
    small = measure_call_times(pair.smalls["aligned"], item.input_ids, [1], 8, repeats).by_n_fed[1]
    return {
        "large_step_ms": 1000 * large,
        "small_step_ms": 1000 * small,
        "step_ratio": large / small,
    }


def bild_on_validation(layers: int, limit: int) -> dict[str, float]:
    """The best BiLD point within TOLERANCE ROUGE-L of vanilla large on validation."""
    cfg = compose_sweep(
        [
            "+task=synopsis",
            "data.split=validation",
            f"data.limit={limit}",
            "method=bild",
            "pair.small_variants=[aligned]",
            f"pair.small_aligned={candidate_dir(layers)}",
            "experiment_name=smollm2-candidates",
            f"run=aligned-k{layers}",
            "logger=none",
        ]
    )
    outcome = sweep.run(cfg)
    summary = outcome.summary
    vanilla = summary[summary["method"] == "large"].iloc[0]
    bild = summary[summary["method"] == "bild"]
    eligible = bild[bild["rougeL"] >= vanilla["rougeL"] - TOLERANCE]
    best = (eligible if not eligible.empty else bild).sort_values("speedup").iloc[-1]
    return {
        "vanilla_rougeL": vanilla["rougeL"],
        "bild_rougeL": best["rougeL"],
        "within_tolerance": not eligible.empty,
        "bild_speedup": best["speedup"],
        "fallback_threshold": best["fallback_threshold"],
        "rollback_threshold": best["rollback_threshold"],
        "fallback_pct": best["fallback_pct"],
        "rollback_pct": best["rollback_pct"],
        "mean_accepted_length": best["mean_accepted_length"],
        "agreement_vs_large": best["agreement_vs_large"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", type=int, nargs="+", required=True)
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=25)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for layers in args.layers:
        row = {"layers": layers, **step_times(layers, args.repeats)}
        row.update(bild_on_validation(layers, args.limit))
        rows.append(row)
    table = pd.DataFrame(rows)
    ranked = table.sort_values(["within_tolerance", "bild_speedup"], ascending=False)
    chosen = int(ranked.iloc[0]["layers"])
    table["chosen"] = table["layers"] == chosen
    OUTPUT.mkdir(parents=True, exist_ok=True)
    table.to_csv(OUTPUT / "candidates.csv", index=False)
    note = (
        f"# Small-model candidates (SmolLM2 pair, synopsis validation, {args.limit} examples)\n\n"
        f"Chosen: the large model's first {chosen} layers (best BiLD speedup within "
        f"{TOLERANCE} ROUGE-L of vanilla large). Step times: cached one-token decoder step, "
        f"median of {args.repeats}, CPU.\n\n"
    )
    (OUTPUT / "candidates.md").write_text(note + table.round(3).to_markdown(index=False) + "\n")
    (OUTPUT / "chosen_layers").write_text(f"{chosen}\n")
    shipped = resolve_path(SHIPPED)
    shutil.rmtree(shipped, ignore_errors=True)
    shutil.copytree(candidate_dir(chosen), shipped)
    print(note + table.round(3).to_markdown(index=False))


if __name__ == "__main__":
    main()
