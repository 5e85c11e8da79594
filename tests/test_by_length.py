"""The per-length view (bild_exp.analysis.by_length) on hand-made records: examples binned by
vanilla large's answer length, a speedup with its interval per bin, exact answers per bin."""

from __future__ import annotations

import pandas as pd
import pytest

from bild_exp.analysis.by_length import by_length, length_bins, length_table

SETTINGS = {"bootstrap": 200, "randomizations": 100, "seed": 0, "confidence": 0.95}


def records() -> pd.DataFrame:
    """Eight examples of lengths 10..80 tokens in one block: vanilla large takes 1 s per 10
    tokens; the method is 4x faster on the four short ones (they restate the prompt) and
    as fast as vanilla on the four long ones, and writes vanilla's tokens except on one."""
    rows = []
    for i in range(8):
        n = 10 * (i + 1)
        tokens = list(range(n))
        common = {"example_id": f"e{i}", "block_id": "b", "block_started": "t", "n_tokens": n}
        rows.append({**common, "config_id": "L", "latency_s": n / 10, "tokens": tokens})
        mine = tokens if i != 7 else [*tokens[:-1], -1]
        latency = n / 40 if i < 4 else n / 10
        rows.append({**common, "config_id": "B", "latency_s": latency, "tokens": mine})
    return pd.DataFrame(rows)


SUMMARY = pd.DataFrame(
    {
        "config_id": ["L", "B"],
        "method": ["large", "bild"],
        "study": ["large", "bild_lossless"],
        "small_variant": ["-", "base"],
    }
)


def test_bins_are_quartiles_of_vanilla_lengths_shortest_first():
    bins = length_bins(pd.Series([80, 10, 20, 70, 30, 60, 40, 50], index=list("abcdefgh")))
    assert bins.to_dict() == dict(zip("abcdefgh", [3, 0, 0, 3, 1, 2, 1, 2], strict=True))


def test_each_bin_has_its_own_speedup_and_exact_share():
    view = by_length(records(), records(), SUMMARY, SETTINGS, n_bins=2)
    bild = view[view["config_id"] == "B"].set_index("bin")
    assert list(bild["length_low"]) == [10, 50] and list(bild["length_high"]) == [40, 80]
    assert bild.at[0, "speedup"] == pytest.approx(4.0)
    assert bild.at[1, "speedup"] == pytest.approx(1.0)
    assert bild.at[0, "speedup_low"] == pytest.approx(4.0)  # every pair has ratio 4
    assert list(bild["n_examples"]) == [4, 4]
    assert bild.at[0, "exact_match_vs_large"] == 100 and bild.at[1, "exact_match_vs_large"] == 75
    vanilla = view[view["config_id"] == "L"]
    assert (vanilla["speedup"] == 1).all()


def test_pairs_from_different_blocks_are_never_divided():
    frame = records()
    frame.loc[(frame["config_id"] == "B") & (frame["example_id"] == "e0"), "block_id"] = "other"
    view = by_length(frame, frame, SUMMARY, SETTINGS, n_bins=2)
    short = view[(view["config_id"] == "B") & (view["bin"] == 0)].iloc[0]
    assert short["n_timing_pairs"] == 3 and short["n_examples"] == 4


def test_the_readable_table_names_bins_by_token_range():
    view = by_length(records(), records(), SUMMARY, SETTINGS, n_bins=2)
    table = length_table(view, SUMMARY)
    assert list(table.columns) == ["10-40 tokens (n=4)", "50-80 tokens (n=4)"]
    assert table.loc["bild_lossless (base)", "10-40 tokens (n=4)"].startswith("4.00 [4.00, 4.00]")
