"""Per-token time of the engine's "large" loop vs HF generate (t5-small-sized, random weights, batch 1).

Usage: python scripts/bench_engine.py [--device cpu] [--tokens 64] [--repetitions 7]
Target: ratio <= 0.85 (the engine's loop is not slower than generate).
"""

from __future__ import annotations

import argparse

from bild_exp.bench.engine_speed import measure_engine_speed, report, t5_small_sized_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--input-length", type=int, default=64)
    parser.add_argument("--repetitions", type=int, default=7)
    args = parser.parse_args()
    model = t5_small_sized_model(device=args.device)
    speed = measure_engine_speed(
        model, input_length=args.input_length, n_tokens=args.tokens, repetitions=args.repetitions
    )
    print(report(speed, args.device))


if __name__ == "__main__":
    main()
