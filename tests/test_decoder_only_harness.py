"""Decoder-only pairs through the harness: prompts, chat template, stop strings, records of
the generated text only; bad prompts and LLM pair configs refused or planned up front."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from bild_exp import sweep
from bild_exp.data.prompts import PromptFormat, prompt_input
from bild_exp.data.tasks import task_from_config
from bild_exp.errors import InvalidParameterError
from bild_exp.models.gguf import converted_folder
from bild_exp.models.shared_weights import save_without_shared
from bild_exp.training.causal import truncated_model
from tests.harness_fixtures import SMOLLM2, compose_sweep, tiny_llama

LLM_PAIRS = [
    "smollm2",
    "smollm2_135m_1.7b",
    "qwen2.5_0.5b_3b",
    "llama3_1b_8b",
    "qwen2.5-coder_0.5b_1.5b",
    "qwen2.5-coder_0.5b_3b",
]
PAPER_TASKS = ["iwslt17", "wmt14", "xsum", "cnndm"]


@pytest.fixture(scope="module")
def tiny_causal_pair(tmp_path_factory):
    """A tiny random Llama using SmolLM2's tokenizer, and a small cut from it (shipped
    without its shared tensors, as the real pair's)."""
    root = tmp_path_factory.mktemp("causal-pair")
    tokenizer = AutoTokenizer.from_pretrained(converted_folder(SMOLLM2))
    large = tiny_llama(tokenizer, layers=3, seed=2)
    large.save_pretrained(root / "large")
    tokenizer.save_pretrained(root / "large")
    torch.manual_seed(3)
    small = truncated_model(large, 1)
    save_without_shared(small, large, root / "small", dtype="float32")
    return {"large": str(root / "large"), "small": str(root / "small")}


def causal_overrides(pair: dict[str, str], results, *extra: str) -> list[str]:
    return [
        "+task=synopsis",
        f"pair.large={pair['large']}",
        f"pair.small={pair['small']}",
        f"pair.small_aligned={pair['small']}",
        "pair.small_variants=[base]",
        "pair.device=cpu",
        f"results_dir={results}",
        "logger=none",
        "data.limit=3",
        "data.warmup=0",
        "progress=false",
        "task.max_new_tokens=10",
        *extra,
    ]


def test_decoder_only_sweep_records_generated_text_only(tiny_causal_pair, tmp_path):
    cfg = compose_sweep(
        causal_overrides(
            tiny_causal_pair,
            tmp_path,
            "method=all",
            "grid.fallback_threshold=[0.5]",
            "grid.rollback_threshold=[0.0]",
            "grid.window=[3]",
            "grid.oracle_threshold=[0.3]",
            "grid.num_assistant_tokens=[3]",
            # the random tiny model writes a newline first: without a stop string its outputs
            # run to max_new_tokens, which exercises exactness (stops: test_stop_strings.py)
            "task.stop_strings=null",
        )
    )
    outcome = sweep.run(cfg)
    records = outcome.records
    assert set(records["method"]) >= {"large", "small", "bild", "speculative", "hf_assisted"}
    assert (records["n_prompt_tokens"] > records["n_source_tokens"]).all()  # template + chat
    for _, row in records.iterrows():
        assert "<|im_start|>" not in row["hypothesis"] and "Summarize" not in row["hypothesis"]
    assert (records["n_tokens"] == 10).any()  # outputs of real length, not a lone stop token
    large = records[records["method"] == "large"].set_index("example_id")["tokens"]
    lossless = records[
        (records["study"] == "bild")
        & (records["small_variant"] == "base")
        & (records["rollback_threshold"] == 0.0)
    ].set_index("example_id")["tokens"]
    speculative = records[records["method"] == "speculative"].set_index("example_id")["tokens"]
    for example_id, tokens in large.items():
        assert list(lossless[example_id]) == list(tokens)
        assert list(speculative[example_id]) == list(tokens)
    summary = outcome.summary
    assert {"rougeL", "rouge1", "rouge2", "agreement_vs_large"} <= set(summary.columns)
    vanilla = summary[summary["method"] == "large"].iloc[0]
    exact = summary[summary["method"] == "speculative"]
    assert (exact["agreement_vs_large"] == vanilla["agreement_vs_large"]).all()
    assert records["flops"].dropna().gt(0).all()


@pytest.mark.parametrize("pair", LLM_PAIRS)
@pytest.mark.parametrize("task", [*PAPER_TASKS, "synopsis"])
def test_llm_pairs_compose_and_plan_on_every_task(pair, task, capsys):
    cfg = compose_sweep([f"+task={task}", f"pair={pair}", "dry_run=true", "logger=none"])
    assert cfg.pair.architecture == "decoder-only"
    spec = task_from_config(cfg.task)
    prompt = spec.prompt_format()
    assert "{source}" in prompt.template and prompt.chat
    sweep.run(cfg)
    assert f"pair={cfg.pair.name}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "task.prompt.template='Summarize this.'",
            "task.prompt.template='Summarize this.' is invalid",
        ),
        ("+task.prompt.style=x", "task.prompt.style is unknown"),
        ("task.stop_strings=['']", "task.stop_strings=[''] is invalid"),
    ],
)
def test_bad_prompt_settings_are_one_line_before_loading(override, message, tmp_path):
    cfg = compose_sweep(["+task=synopsis", override, f"results_dir={tmp_path}", "logger=none"])
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")) as error:
        sweep.run(cfg)
    assert "\n" not in str(error.value)


def test_chat_prompt_needs_a_chat_template(tiny_assets):
    pair, _ = tiny_assets
    tokenizer = AutoTokenizer.from_pretrained(pair["tokenizer"])  # the tiny T5's: no template
    with pytest.raises(InvalidParameterError, match="has no chat template"):
        PromptFormat("Say: {source}", chat=True).check_tokenizer(tokenizer, pair["tokenizer"])


def test_chat_task_on_a_tokenizer_without_chat_template_is_refused_before_models_load(
    tiny_assets, tiny_causal_pair, tmp_path, monkeypatch
):
    from bild_exp.harness.run import pipeline

    pair, _ = tiny_assets

    def no_models(*args, **kwargs):
        raise AssertionError("models loaded before the prompt was checked")

    monkeypatch.setattr(pipeline, "load_pair", no_models)
    cfg = compose_sweep(
        causal_overrides(tiny_causal_pair, tmp_path, f"pair.tokenizer={pair['tokenizer']}")
    )
    with pytest.raises(InvalidParameterError, match="has no chat template"):
        sweep.run(cfg)


def test_long_sources_are_cut_not_the_template():
    tokenizer = AutoTokenizer.from_pretrained(converted_folder(SMOLLM2))
    prompt = PromptFormat("Summarize:\n\n{source}", chat=True)
    encoded = prompt_input("word " * 400, prompt, tokenizer, 32)
    text = tokenizer.decode(encoded.ids)
    assert encoded.truncated and encoded.n_source_tokens >= 400
    assert text.endswith("<|im_start|>assistant\n") and "Summarize:" in text


def test_agreement_scores_each_configuration_against_vanilla_large():
    import pandas as pd

    from bild_exp.analysis.summary import add_agreement

    records = pd.DataFrame(
        {
            "config_id": ["L", "L", "B", "B"],
            "method": ["large", "large", "bild", "bild"],
            "example_id": ["1", "2", "1", "2"],
            "hypothesis": ["the cat sat", "a dog ran", "the cat sat", "a bird flew"],
            "tokens": [[5, 6, 7], [8, 9, 10], [5, 6, 7], [8, 11, 12]],
            "sampling": ["greedy"] * 4,
            "top_p": [None] * 4,
            "temperature": [None] * 4,
            "seed": [None] * 4,
        }
    )
    summary = records.drop_duplicates("config_id")[
        ["config_id", "method", "sampling", "top_p", "temperature", "seed"]
    ]
    scored = add_agreement(summary, records, "rouge", {"rouge_stemmer": True})
    by_config = scored.set_index("config_id")["agreement_vs_large"]
    assert by_config["L"] == pytest.approx(100.0)
    assert by_config["B"] == pytest.approx(100 * (1 + 1 / 3) / 2)  # one exact, one 1-of-3 match
    exact = scored.set_index("config_id")["exact_match_vs_large"]
    assert (exact["L"], exact["B"]) == (100.0, 50.0)  # token for token: one of two examples


def test_engine_compile_refuses_runs_without_a_compiled_path_before_loading(tmp_path):
    from bild_exp.errors import InvalidParameterError

    cfg = compose_sweep(["method=all", "engine.compile=true", f"results_dir={tmp_path}"])
    with pytest.raises(InvalidParameterError, match=r"^engine.compile=true is invalid for run"):
        sweep.run(cfg)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["engine.compile=true", "engine.compile_mode=fast"], r"^engine.compile_mode='fast'"),
        (["engine.compile_mode=max-autotune"], r"^engine.compile_mode='max-autotune' is invalid"),
    ],
)
def test_engine_compile_mode_errors_before_loading(tmp_path, overrides, message):
    from bild_exp.errors import InvalidParameterError

    cfg = compose_sweep(["method=demo", *overrides, f"results_dir={tmp_path}"])
    with pytest.raises(InvalidParameterError, match=message):
        sweep.run(cfg)


def test_compile_modes_never_share_a_results_folder(tiny_causal_pair, tmp_path):
    """Eager, default-mode and max-autotune records have different folder fingerprints."""
    from bild_exp.data.tasks import task_from_config
    from bild_exp.harness.records.fingerprint import compatibility

    device = dict.fromkeys(
        ["device_name", "torch", "transformers", "float32_matmul_precision"], "x"
    ) | {"cuda_matmul_allow_tf32": False}
    fingerprints = []
    compiled = ["engine.compile=true"]
    for extra in ([], compiled, [*compiled, "engine.compile_mode=max-autotune"]):
        cfg = compose_sweep(causal_overrides(tiny_causal_pair, tmp_path, "method=demo", *extra))
        fingerprints.append(compatibility(cfg, task_from_config(cfg.task), device, []))
    assert len({str(sorted(f.items())) for f in fingerprints}) == 3
    modes = [fingerprint["engine_compile_mode"] for fingerprint in fingerprints]
    assert modes == [None, "default", "max-autotune"]


def test_humaneval_sweep_executes_every_answer_and_reports_pass_at_1(tiny_causal_pair, tmp_path):
    """HumanEval through the harness on a tiny random Llama: its answers are not code, so
    every outcome is a failure of some kind; what is checked is the plumbing (prompt with
    the code-block prefix, untimed execution per record, pass@1 and the outcome counts)."""
    import pandas as pd

    overrides = causal_overrides(tiny_causal_pair, tmp_path, "method=large", "data.limit=2")
    overrides = [o for o in overrides if o != "+task=synopsis"]
    # the task's own pair is the Qwen2.5-Coder one: every member is the tiny pair's here
    overrides += [f"pair.tokenizer={tiny_causal_pair['large']}", "pair.name=tiny"]
    overrides = ["+task=humaneval", "task.max_new_tokens=6", *overrides]
    outcome = sweep.run(compose_sweep(overrides))
    row = outcome.summary.iloc[0]
    assert row["pass_at_1"] == 0.0
    n_outcomes = sum(row[f"n_{name}"] for name in ("passed", "failed", "timed_out", "syntax_error"))
    assert n_outcomes == row["n_examples"] == 2
    executions = pd.read_csv(outcome.run_dir / "executions.csv")
    assert list(executions["example_id"]) == ["HumanEval/0", "HumanEval/1"]
    assert set(executions["execution"]) <= {"failed", "syntax_error"}


def test_bench_runs_the_main_job_on_a_pair_without_an_aligned_small(tiny_causal_pair, tmp_path):
    """``python -m bild_exp.bench +task=humaneval``: a decoder-only pair with one small model
    (no aligned small assumed); HumanEval has one split, so the head-to-head runs on other
    problems than the selection sweep's, scored by running their tests."""
    import pandas as pd
    from hydra import compose, initialize_config_dir

    from bild_exp.bench.run import run
    from tests.harness_fixtures import CONF_DIR

    overrides = [
        "+task=humaneval",
        f"pair.large={tiny_causal_pair['large']}",
        f"pair.small={tiny_causal_pair['small']}",
        f"pair.tokenizer={tiny_causal_pair['large']}",
        "pair.small_aligned=null",
        "pair.device=cpu",
        f"results_dir={tmp_path}",
        "progress=false",
        "data.split=test",
        "data.limit=2",
        "data.warmup=0",
        "task.max_new_tokens=6",
        "grid.fallback_threshold=[0.5]",
        "grid.rollback_threshold=[2.0]",
        "grid.window=[2]",
        "grid.num_assistant_tokens=[2]",
        "bench.split=test",
        "bench.n_examples=2",
        "bench.warmup=0",
        "bench.bootstrap_samples=50",
        "bench.call_repeats=2",
        "bench.call_rounds=1",
        "bench.scale_workers=[]",
        "bench.compiled=false",
        "bench.engine_section=false",
        f"bench.output_dir={tmp_path / 'bench'}",
    ]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="bench", overrides=overrides)
    output_dir = run(cfg)
    table = pd.read_csv(output_dir / "bench.csv")
    assert table["method"].iloc[0] == "vanilla large (engine)"
    assert table.loc[0, "speedup"] == 1.0 and "pass_at_1" in table
    assert table["n_timing_pairs"].eq(2).all()
    assert not table["method"].str.contains(" aligned", regex=False).any()  # none was loaded
    assert table["method"].str.startswith("speculative (window=2, unaligned small)").any()
    selection = pd.read_csv(
        tmp_path / "bench-selection" / "humaneval_qwen2.5-coder_0.5b_1.5b" / "summary.csv"
    )
    assert selection["n_examples"].eq(2).all()
    report = (output_dir / "bench.md").read_text()
    assert "max_small_steps=10" in report and "| rule " in report
