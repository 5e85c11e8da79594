"""The embedded default: shipped corpus, tokenizer and pair run the sweep offline."""

from __future__ import annotations

import pandas as pd
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from bild_exp import sweep
from bild_exp.data.tasks import resolve_path
from tests.harness_fixtures import compose_sweep


def demo_overrides(tmp_path, limit: int, *extra: str) -> list[str]:
    return [
        *extra,
        f"results_dir={tmp_path}",
        "logger=none",
        "progress=false",
        f"data.limit={limit}",
        "data.warmup=0",
        "grid.fallback_threshold=[0.5]",
        "grid.rollback_threshold=[2.0]",
    ]


def test_shipped_pair_loads_and_shares_the_tokenizer():
    tokenizer = AutoTokenizer.from_pretrained(resolve_path("package://assets/demo-pair/tokenizer"))
    for name in ("large", "small", "small-aligned"):
        model = AutoModelForSeq2SeqLM.from_pretrained(
            resolve_path(f"package://assets/demo-pair/{name}")
        )
        assert model.config.vocab_size == len(tokenizer) == 8000
    assert (
        tokenizer.decode(tokenizer("Guten Tag.")["input_ids"], skip_special_tokens=True)
        == "Guten Tag."
    )


def test_default_sweep_is_the_demo_task_on_the_shipped_pair(tmp_path):
    cfg = compose_sweep(demo_overrides(tmp_path, 3, "grid.window=[3]"))
    outcome = sweep.run(cfg)
    assert outcome.run_dir == tmp_path / "sweep" / "demo_demo"
    summary = pd.read_csv(outcome.run_dir / "summary.csv")
    assert set(summary["study"]) == {"large", "small", "bild", "speculative"}
    assert set(summary["small_variant"]) == {"-", "base", "aligned"}
    assert (summary["n_examples"] == 3).all()
    records = outcome.records
    assert records["hypothesis"].str.len().gt(0).all()  # real decoded English text
    large = records[records["method"] == "large"].set_index("example_id")["tokens"]
    exact = records[(records["method"] == "speculative")]
    for _, row in exact.iterrows():  # speculative greedy is exact on the shipped pair too
        assert list(row["tokens"]) == list(large[row["example_id"]])


def test_paper_target_runs_end_to_end_on_the_demo_pair(tmp_path):
    cfg = compose_sweep(demo_overrides(tmp_path, 2, "+experiment=fig5", "+task=demo"))
    outcome = sweep.run(cfg)
    assert outcome.run_dir == tmp_path / "fig5" / "demo_demo"
    assert set(outcome.summary["study"]) == {
        "large",
        "bild",
        "bild_no_rollback",
        "bild_no_fallback",
    }
