"""The compiled engine path (static caches + torch.compile) equals the eager one exactly."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers.cache_utils import DynamicCache

from bild_exp.decoding import InvalidParameterError, generate
from bild_exp.decoding.compiled import compile_stats, compiled_model
from bild_exp.decoding.early_exit import EarlyExit
from bild_exp.decoding.hf_assisted import hf_greedy_tokens
from tests.tiny_models import decode_with, deep_decoder_t5, prompt, tiny_model, tiny_pair

MAX_NEW = 24
METHODS = [
    ("large", {}),
    ("small", {}),
    ("bild", {"fallback_threshold": 0.5, "rollback_threshold": 1.0}),
    ("bild", {"fallback_threshold": 0.3, "rollback_threshold": 0.5, "schedule": "official"}),
    ("speculative", {"window": 3}),
    ("oracle", {"oracle_threshold": 0.5}),
]


COMPILED_FAMILIES = ("llama", "t5", "bart")


# tiny_pair(family, seed) returns the same model objects all session: their graphs compile
# once (the first test that decodes with them) and every later test runs on them, as the
# configurations of a sweep do. A new model of the same shapes and dtype shares inductor's
# compiled kernels but is traced again, so tests use these pairs where they can.


@pytest.fixture(scope="module")
def llama_pair():
    return tiny_pair("llama", seed=0)


def decode(method, large, small, ids, compile=False, **params):
    return decode_with(
        method,
        large,
        small,
        ids,
        MAX_NEW,
        compile=compile,
        **params,
    )


def both(method, large, small, ids, **params):
    """(eager, compiled) results of one call."""
    return decode(method, large, small, ids, **params), decode(
        method, large, small, ids, compile=True, **params
    )


# Over ~25 s each cold on the 2-core CI machine, run by `make test-slow`: the llama small,
# llama BiLD, official-schedule BiLD, speculative and oracle cases stay in `make test`.
SLOW_CASES = {
    ("llama", "large"),
    ("t5", "large"),
    ("t5", "small"),
    ("bart", "large"),
    ("bart", "small"),
    ("t5", "bild", "paper"),  # 47-58 s cold: BiLD on the compiled path stays tested on llama
    ("bart", "bild", "paper"),
}


def compiled_cases() -> list:
    cases = []
    for family in COMPILED_FAMILIES:
        for method, params in METHODS:
            schedule = params.get("schedule", "paper")
            key = (family, method, schedule) if method == "bild" else (family, method)
            marks = [pytest.mark.slow] if key in SLOW_CASES else []
            case_id = f"{family}-{method}-{params}"
            cases.append(pytest.param(family, method, params, marks=marks, id=case_id))
    return cases


@pytest.mark.parametrize(("family", "method", "params"), compiled_cases())
def test_compiled_equals_eager_token_for_token_and_every_stat(family, method, params):
    large, small = tiny_pair(family, seed=0)
    for seed in range(3):
        ids = prompt(family, seed, length=5 + 3 * seed)  # inputs of several lengths
        eager, compiled = both(method, large, small, ids, **params)
        assert compiled.tokens == eager.tokens
        assert compiled.from_large == eager.from_large
        assert compiled.stats == eager.stats


def test_compiled_bild_lossless_settings_equal_vanilla_large(llama_pair):
    import torch._dynamo.config

    large, small = llama_pair
    n_rollbacks = 0
    with torch._dynamo.config.patch(recompile_limit=8):  # dynamo's default
        for seed in range(4):
            ids = prompt("llama", seed)
            # fallback 0.1: small tokens pile up, so the large model disagrees and rolls back
            result = decode(
                "bild",
                large,
                small,
                ids,
                compile=True,
                fallback_threshold=0.1,
                rollback_threshold=0.0,
                verify_tail=True,
            )
            assert result.tokens == hf_greedy_tokens(large, ids, MAX_NEW)
            n_rollbacks += result.stats["n_rollbacks"]
        # the compiled calls raised dynamo's recompile limit only while they ran
        assert torch._dynamo.config.recompile_limit == 8
    assert n_rollbacks > 0  # rollbacks (position resets) happened on the way


def test_rollback_reads_no_stale_cache_position(llama_pair):
    """Feed three tokens, reset to before them, feed another: the logits equal a cache that
    never saw the three; without the reset they would not."""
    large, _ = llama_pair
    ids = prompt("llama", 0)
    reference = DynamicCache()
    with (
        torch.inference_mode()
    ):  # as generate runs (the static cache's tensors are inference tensors)
        large(input_ids=ids, cache=reference)
        expected = large(input_ids=torch.tensor([[9]]), cache=reference).logits[0]
        entry = compiled_model(large, ids.shape[1] + 8)
        cache = entry.example_cache()
        entry.run(ids, cache, prefill=True, keep=1)
        entry.run(torch.tensor([[4, 5, 6]]), cache, prefill=False)
        from bild_exp.decoding.compiled import set_cached_length

        set_cached_length(entry.cache, ids.shape[1])
        after_reset = entry.run(torch.tensor([[9]]), cache, prefill=False)
        torch.testing.assert_close(after_reset, expected, rtol=1e-4, atol=1e-5)
        # the same three tokens and no reset: a different (wrong) continuation
        cache = entry.example_cache()
        entry.run(ids, cache, prefill=True, keep=1)
        entry.run(torch.tensor([[4, 5, 6]]), cache, prefill=False)
        stale = entry.run(torch.tensor([[9]]), cache, prefill=False)
        assert not torch.allclose(stale, expected, atol=1e-3)


def graph_counts(family: str) -> dict:
    """Every method over inputs of several lengths on the compiled path, then one more
    example: graphs per model after the first examples and after the last."""
    large, small = tiny_pair(family, seed=0)
    models = {"large": large, "small": small}
    for method, params in METHODS:
        for seed in range(3):
            ids = prompt(family, seed, length=4 + 5 * seed)
            decode(method, large, small, ids, compile=True, **params)
    first = {name: compile_stats(model) for name, model in models.items()}
    ids = prompt(family, 7, length=11)
    decode("bild", large, small, ids, compile=True, fallback_threshold=0.7, rollback_threshold=0.3)
    return {"first": first, "last": {name: compile_stats(m) for name, m in models.items()}}


@pytest.mark.slow  # over ~25 s cold on the 2-core CI machine
def test_graphs_are_bounded_and_compiled_before_the_first_timed_call():
    # A process of its own, as a sweep runs: pytest's output and log capture change what
    # dynamo traces (it records extra graphs), which would not be the count a user gets.
    # One process for every family: it finds their kernels in inductor's on-disk cache.
    import json
    import os
    import subprocess
    import sys

    code = (
        "import json; from tests.test_compiled import graph_counts; "
        f"print(json.dumps({{f: graph_counts(f) for f in {COMPILED_FAMILIES!r}}}))"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    by_family = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(by_family) == sorted(COMPILED_FAMILIES)
    for family, counts in by_family.items():
        for name, stats in counts["first"].items():
            # one graph for one-token steps, one for every verification length
            assert stats["n_graphs"] <= 2, (family, counts)
            assert stats["compile_s"] > 0 and stats["n_compiled_calls"] > 0
            # nothing compiles later
            assert counts["last"][name]["n_graphs"] == stats["n_graphs"], (family, counts)


@pytest.mark.parametrize("method", ["calm", "hf_assisted"])
def test_methods_without_a_compiled_path_are_one_line(llama_pair, method):
    large, small = llama_pair
    with pytest.raises(
        InvalidParameterError, match=rf"^compile=True is invalid for method='{method}'"
    ):
        generate(method, large=large, small=small, input_ids=prompt("llama", 0), compile=True)


def test_models_without_a_compiled_path_are_one_line(llama_pair):
    large, _ = llama_pair
    with pytest.raises(InvalidParameterError, match="an early-exit small model shares"):
        generate(
            "bild",
            large=large,
            small=EarlyExit(large, layers=1),
            input_ids=prompt("llama", 0),
            compile=True,
        )
    gpt2_large, gpt2_small = tiny_pair("gpt2", seed=0)
    with pytest.raises(InvalidParameterError, match=r"model_type='gpt2': accepted llama"):
        generate(
            "bild", large=gpt2_large, small=gpt2_small, input_ids=prompt("gpt2", 0), compile=True
        )
    with pytest.raises(InvalidParameterError, match=r"^use_cache=False is invalid"):
        generate("large", large=large, input_ids=prompt("llama", 0), use_cache=False, compile=True)


@pytest.mark.slow  # over ~25 s cold on the 2-core CI machine
def test_t5_with_more_decoder_than_encoder_layers_compiled_equals_eager():
    """The demo large model's shape (more decoder than encoder layers: the static cache must
    be sized from the decoder), at the tiny T5's width so it shares its compiled kernels."""
    large = deep_decoder_t5()
    _, small = tiny_pair("t5", seed=0)
    for method, params in [
        ("large", {}),
        ("bild", {"fallback_threshold": 0.5, "rollback_threshold": 1.0}),
        ("speculative", {"window": 3}),
    ]:
        for seed in range(2):
            ids = prompt("t5", seed, length=5 + 3 * seed)
            eager, compiled = both(method, large, small, ids, **params)
            assert compiled.tokens == eager.tokens and compiled.stats == eager.stats


@pytest.mark.slow
def test_shipped_demo_pair_compiled_equals_eager():
    """The T5 demo pair (its large model has 8 decoder and 2 encoder layers: the static
    cache must be sized from the decoder) on real test sentences."""
    from bild_exp.data.tasks import load_examples, task_from_config
    from bild_exp.harness.run.decode import encode
    from bild_exp.models.pair import load_pair
    from tests.harness_fixtures import compose_sweep

    cfg = compose_sweep(["+task=demo", "pair.device=cpu"])
    task = task_from_config(cfg.task)
    pair = load_pair(cfg.pair, ["aligned"])
    items = encode(load_examples(task, "test", 3), pair.tokenizer, task, pair.device, "seq2seq")
    small = pair.smalls["aligned"]
    for method, params in [
        ("large", {}),
        ("bild", {"fallback_threshold": 0.5, "rollback_threshold": 2.0}),
        ("speculative", {"window": 3}),
    ]:
        for item in items:
            eager, compiled = both(method, pair.large, small, item.input_ids, **params)
            assert compiled.tokens == eager.tokens and compiled.stats == eager.stats


@pytest.mark.slow  # over ~25 s cold on the 2-core CI machine
def test_weights_changed_after_compiling_are_used():
    """On a CPU the compiled graph holds frozen weights: a model changed after compiling
    (in place, as an optimizer step, then by assigning a new tensor) is recompiled, so the
    compiled path keeps equalling the eager one. Float32, as real models: inductor packs
    float32 weights for oneDNN/MKL (a copy, blind to in-place changes), not float64 ones."""
    large = copy.deepcopy(tiny_pair("llama", seed=3)[0]).float()
    ids = prompt("llama", 0)
    before = decode("large", large, None, ids, compile=True)
    for change in ("in_place", "replaced"):
        with torch.no_grad():
            weight = large.lm_head.weight
            new = weight.roll(1, dims=0)  # another token's row: the greedy output changes
            if change == "in_place":
                weight.copy_(new)
            else:
                large.lm_head.weight = torch.nn.Parameter(new.clone())
        eager = decode("large", large, None, ids)
        assert eager.tokens != before.tokens, change  # the change matters
        assert decode("large", large, None, ids, compile=True).tokens == eager.tokens, change
        before = eager


@pytest.mark.parametrize("family", ["llama", pytest.param("t5", marks=pytest.mark.slow)])
def test_hf_generate_compiled_baseline_equals_its_eager_run(family):
    """The bench's HF generate with static cache + compile (the engine's inductor settings
    but freezing), float32, over cache lengths 128, 256 and 128 again (with freezing, HF's
    per-call caches became graph constants and the third call failed)."""
    large = tiny_model(family, seed=12, layers=2, width=64).float()  # its own compiled call
    ids = prompt(family, 1)
    for n_tokens in (MAX_NEW, 200, MAX_NEW):
        eager = hf_greedy_tokens(large, ids, n_tokens, exact_length=True)
        assert hf_greedy_tokens(large, ids, n_tokens, exact_length=True, compiled=True) == eager


def test_cpu_graphs_hold_the_weights_as_frozen_constants(monkeypatch):
    """Weight freezing takes effect: no graph compiled on a CPU takes a weight as an input
    (given only as inductor options, freezing is ignored and every weight is one)."""
    import torch._inductor.compile_fx as compile_fx_module

    # a model of its own, so its graphs compile now (not a deep copy: HF generate would run
    # the compiled call the copy carries, bound to the original)
    large = tiny_model("llama", seed=11, layers=2, width=64)
    weights = {p.data_ptr() for p in large.parameters()}
    weight_inputs: list[int] = []
    real_compile_fx = compile_fx_module.compile_fx

    def recording_compile_fx(graph, example_inputs, *args, **kwargs):
        weight_inputs.append(
            sum(isinstance(t, torch.Tensor) and t.data_ptr() in weights for t in example_inputs)
        )
        return real_compile_fx(graph, example_inputs, *args, **kwargs)

    monkeypatch.setattr(compile_fx_module, "compile_fx", recording_compile_fx)
    decode("large", large, None, prompt("llama", 2), compile=True)
    assert weight_inputs, "nothing was compiled"
    assert weight_inputs == [0] * len(weight_inputs)


def test_max_autotune_mode_reaches_inductor_and_keeps_its_own_graphs(monkeypatch):
    """The compile mode's plumbing, without inductor's cost: each mode's graphs go to the
    backend with that mode's options and are kept apart (compiling the captured graphs is
    replaced by running them; the slow test below compiles them for real)."""
    import torch._inductor.compile_fx as compile_fx_module

    options_seen: list[dict] = []

    def run_the_captured_graph(graph, example_inputs, config_patches=None, **kwargs):
        options_seen.append(dict(config_patches or {}))
        return graph.forward

    monkeypatch.setattr(compile_fx_module, "compile_fx", run_the_captured_graph)
    large = tiny_model("llama", seed=22, layers=1, width=32)  # a model of its own: fake graphs
    small = tiny_model("llama", seed=23, layers=1, width=32)
    ids = prompt("llama", 3)
    eager = decode("speculative", large, small, ids, window=3)
    for mode in ("default", "max-autotune"):
        compiled = decode(
            "speculative", large, small, ids, compile=True, compile_mode=mode, window=3
        )
        assert compiled.tokens == eager.tokens and compiled.stats == eager.stats
    assert {options.get("max_autotune", False) for options in options_seen} == {False, True}
    assert all(options.get("freezing") for options in options_seen)
    for model in (large, small):
        default, tuned = (compile_stats(model, mode) for mode in ("default", "max-autotune"))
        assert 0 < default["n_graphs"] <= 2 and 0 < tuned["n_graphs"] <= 2
        assert compile_stats(model)["n_graphs"] == default["n_graphs"] + tuned["n_graphs"]


@pytest.mark.slow
def test_max_autotune_mode_equals_eager_and_keeps_its_own_graphs():
    """compile_mode='max-autotune' (generated matmul kernels on a CPU): same tokens and
    stats as eager for BiLD and speculative decoding, in float32 (the kernels inductor
    generates for real models), on graphs of its own next to the default mode's. Both
    models have the tiny small model's shapes, so autotuning covers one set of matmuls."""
    small = copy.deepcopy(tiny_pair("llama", seed=0)[1]).float()
    large = tiny_model("llama", seed=21, layers=1, width=32).float()
    ids = prompt("llama", 3)
    for method, params in [
        ("bild", {"fallback_threshold": 0.5, "rollback_threshold": 1.0}),
        ("speculative", {"window": 3}),
    ]:
        eager = decode(method, large, small, ids, **params)
        for mode in ("default", "max-autotune"):
            compiled = decode(method, large, small, ids, compile=True, compile_mode=mode, **params)
            assert compiled.tokens == eager.tokens and compiled.stats == eager.stats
    for model in (large, small):
        default, tuned = (compile_stats(model, mode) for mode in ("default", "max-autotune"))
        assert 0 < default["n_graphs"] <= 2 and 0 < tuned["n_graphs"] <= 2
        assert compile_stats(model)["n_graphs"] == default["n_graphs"] + tuned["n_graphs"]


def test_compile_mode_errors_are_one_line(llama_pair):
    large, _ = llama_pair
    ids = prompt("llama", 0)
    with pytest.raises(
        InvalidParameterError,
        match=r"^compile_mode='fast' is invalid: accepted 'default', 'max-autotune'$",
    ):
        generate("large", large=large, input_ids=ids, compile=True, compile_mode="fast")
    with pytest.raises(InvalidParameterError, match=r"^compile_mode='max-autotune' is invalid"):
        generate("large", large=large, input_ids=ids, compile_mode="max-autotune")


@pytest.mark.slow
def test_shipped_demo_pair_max_autotune_equals_eager():
    """The bench's compile mode on the T5 demo pair (its first compile takes ~1.5 min)."""
    from bild_exp.data.tasks import load_examples, task_from_config
    from bild_exp.harness.run.decode import encode
    from bild_exp.models.pair import load_pair
    from tests.harness_fixtures import compose_sweep

    cfg = compose_sweep(["+task=demo", "pair.device=cpu"])
    task = task_from_config(cfg.task)
    pair = load_pair(cfg.pair, ["aligned"])
    items = encode(load_examples(task, "test", 10), pair.tokenizer, task, pair.device, "seq2seq")
    for method, params in [
        ("large", {}),
        ("bild", {"fallback_threshold": 0.5, "rollback_threshold": 2.0}),
        ("speculative", {"window": 5}),
    ]:
        for item in items:
            common = {"large": pair.large, "small": pair.smalls["aligned"], **params}
            eager = generate(method, input_ids=item.input_ids, max_new_tokens=64, **common)
            compiled = generate(
                method,
                input_ids=item.input_ids,
                max_new_tokens=64,
                compile=True,
                compile_mode="max-autotune",
                **common,
            )
            assert compiled.tokens == eager.tokens and compiled.stats == eager.stats
