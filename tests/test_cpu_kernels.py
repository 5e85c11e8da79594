"""The eager CPU fast path (``engine.cpu_kernels``): linear layers on oneDNN-prepacked
weights give the plain path's tokens, release the plain weights, share packings between
models, notice in-place edits of a tied head and refuse training; the compiled path runs
over a prepacked model; the shipped pairs decode the same tokens either way."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from omegaconf import OmegaConf

from bild_exp.data.tasks import resolve_path
from bild_exp.decoding import generate
from bild_exp.decoding.hf_assisted import hf_greedy_tokens
from bild_exp.errors import InvalidParameterError
from bild_exp.models.cpu_kernels import (
    PrepackedLinear,
    check_cpu_kernels,
    is_prepacked,
    prepack_models,
    resolve_cpu_kernels,
)
from bild_exp.models.pair import LoadSettings, load_pair
from tests.tiny_models import decode_with, tiny_model, train_briefly

CPU = torch.device("cpu")
MAX_NEW = 24


def float32_pair(family: str = "llama"):
    large = train_briefly(tiny_model(family, seed=0, layers=3, width=48), steps=60, seed=0)
    small = train_briefly(tiny_model(family, seed=1, layers=1, width=32), steps=60, seed=1)
    return large.float().eval(), small.float().eval()


def prompts(n: int = 3) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return [torch.randint(3, 64, (1, 7 + i), generator=generator) for i in range(n)]


METHODS = {
    "large": {},
    "small": {},
    "bild": {"fallback_threshold": 0.6, "rollback_threshold": 2.0},
    "bild_lossless": {"fallback_threshold": 0.9, "rollback_threshold": 0.0, "verify_tail": True},
    "speculative": {"window": 4},
}


def decode_all(large, small, family: str) -> dict[tuple[str, int], tuple[list[int], dict]]:
    out = {}
    for index, ids in enumerate(prompts()):
        for name, params in METHODS.items():
            method = name.removesuffix("_lossless")
            result = decode_with(method, large, small, ids, MAX_NEW, **params)
            out[name, index] = (result.tokens, result.stats)
    return out


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_prepacked_path_decodes_the_plain_paths_tokens_and_stats(family):
    large, small = float32_pair(family)
    plain = decode_all(large, small, family)
    assert prepack_models([large, small]) > 0
    assert is_prepacked(large) and is_prepacked(small)
    packed = decode_all(large, small, family)
    assert packed == plain
    for index in range(len(prompts())):  # and lossless settings stay exact on the fast path
        assert packed["bild_lossless", index][0] == packed["large", index][0]
        assert packed["speculative", index][0] == packed["large", index][0]


def test_hf_generate_runs_on_prepacked_models():
    large, _ = float32_pair()
    ids = prompts(1)[0]
    expected = hf_greedy_tokens(large, ids, MAX_NEW)
    prepack_models([large])
    assert hf_greedy_tokens(large, ids, MAX_NEW) == expected
    assert generate("large", large=large, input_ids=ids, max_new_tokens=MAX_NEW).tokens == expected


def test_plain_weights_are_released_and_shared_weights_packed_once():
    large, small = float32_pair()
    small.model.layers[0].mlp.down_proj = large.model.layers[0].mlp.down_proj  # a shared layer
    watched = weakref.ref(large.model.layers[1].mlp.up_proj.weight)
    n_linear = sum(type(m) is torch.nn.Linear for m in [*large.modules(), *small.modules()])
    assert prepack_models([large, small, None]) == n_linear
    gc.collect()
    assert watched() is None  # the plain weight is gone: memory does not double
    assert not any(type(m) is torch.nn.Linear for m in large.modules())
    shared_large = large.model.layers[0].mlp.down_proj
    shared_small = small.model.layers[0].mlp.down_proj
    assert isinstance(shared_large, PrepackedLinear)
    assert shared_large.packed is shared_small.packed


def test_an_in_place_edit_of_a_tied_head_is_seen_at_the_next_call():
    large, _ = float32_pair()
    large.config.tie_word_embeddings = True
    large.lm_head.weight = large.model.embed_tokens.weight  # tied: the packed head is a copy
    twin = float32_pair()[0]
    twin.lm_head.weight = twin.model.embed_tokens.weight
    ids = prompts(1)[0]
    prepack_models([large])
    with torch.no_grad():
        noise = torch.randn(
            large.model.embed_tokens.weight.shape, generator=torch.Generator().manual_seed(1)
        )
        large.model.embed_tokens.weight.add_(noise)
        twin.model.embed_tokens.weight.add_(noise)
    edited = generate("large", large=large, input_ids=ids, max_new_tokens=MAX_NEW).tokens
    assert edited == generate("large", large=twin, input_ids=ids, max_new_tokens=MAX_NEW).tokens


def test_training_a_prepacked_model_is_refused_in_one_line():
    large, _ = float32_pair()
    prepack_models([large])
    large.train()
    with pytest.raises(
        InvalidParameterError,
        match=r"^a model with engine.cpu_kernels='prepacked' is invalid for training",
    ) as error:
        large(input_ids=prompts(1)[0])
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("value", ["fast", None, 1])
def test_an_unknown_kernel_setting_is_one_line(value):
    with pytest.raises(
        InvalidParameterError,
        match=r"engine.cpu_kernels=.* is invalid: accepted 'auto', 'plain', 'prepacked'",
    ):
        check_cpu_kernels(value)


def test_auto_resolves_by_device_and_dtype():
    assert resolve_cpu_kernels("auto", CPU, torch.float32) == "prepacked"
    assert resolve_cpu_kernels("auto", CPU, torch.bfloat16) == "plain"
    assert resolve_cpu_kernels("auto", torch.device("cuda"), torch.float32) == "plain"
    assert resolve_cpu_kernels("plain", CPU, torch.float32) == "plain"
    with pytest.raises(
        InvalidParameterError, match=r"^engine.cpu_kernels='prepacked' is invalid on device='cuda'"
    ):
        resolve_cpu_kernels("prepacked", torch.device("cuda"), torch.float32)
    with pytest.raises(InvalidParameterError, match=r"dtype='float64'"):
        resolve_cpu_kernels("prepacked", CPU, torch.float64)


@pytest.mark.slow  # over ~25 s cold on the 2-core CI machine: `make test-slow`
def test_compiled_path_over_a_prepacked_model_matches_eager():
    large, small = float32_pair()
    prepack_models([large, small])
    for ids in prompts(2):
        common = {"large": large, "small": small, "input_ids": ids, "max_new_tokens": MAX_NEW}
        eager = generate("bild", **common, **METHODS["bild"])
        compiled = generate("bild", **common, **METHODS["bild"], compile=True)
        assert compiled.tokens == eager.tokens
        assert compiled.stats == eager.stats


@pytest.mark.parametrize("pair_name", ["demo", pytest.param("smollm2", marks=pytest.mark.slow)])
def test_shipped_pairs_decode_the_same_tokens_prepacked(pair_name):
    """Token for token on the shipped pairs: 3 prompts, vanilla large, small and BiLD."""
    pair_cfg = OmegaConf.load(resolve_path(f"package://conf/pair/{pair_name}.yaml"))
    pair_cfg.device = "cpu"
    plain = load_pair(pair_cfg, ["base"])
    packed = load_pair(pair_cfg, ["base"], settings=LoadSettings.for_pair(pair_cfg, "prepacked"))
    assert is_prepacked(packed.large) and not is_prepacked(plain.large)
    texts = ["a tool to compress files quickly", "library for parsing XML documents", "GNU Make"]
    for text in texts:
        ids = plain.tokenizer(text, return_tensors="pt").input_ids
        for method, params in (("large", {}), ("small", {}), ("bild", METHODS["bild"])):
            outputs = []
            for loaded in (plain, packed):
                large, small = loaded.models_for(method, "base")
                outputs.append(
                    generate(
                        method,
                        large=large,
                        small=small,
                        input_ids=ids,
                        max_new_tokens=MAX_NEW,
                        **params,
                    ).tokens
                )
            assert outputs[0] == outputs[1], (pair_name, text, method)
