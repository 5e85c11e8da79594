"""Weight-only int8 and int4 models (``bild_exp.models.weight_only``): each quantised layer
stays within a stated tolerance of its float layer; a row's output does not depend on the
rows fed with it (what keeps lossless BiLD exact over a quantised large model); lossless
BiLD and speculative decoding with quantised drafters give vanilla large's exact tokens;
tied heads are quantised once and memory shrinks; a device without the kernels is refused
with one line, before any model loads."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from bild_exp import sweep
from bild_exp.errors import InvalidParameterError
from bild_exp.harness.config.checks import check_weight_formats
from bild_exp.harness.config.plan import RunConfig
from bild_exp.harness.records.fingerprint import weight_keys
from bild_exp.models import weight_only
from bild_exp.models.cpu_kernels import is_prepacked, prepack_models
from bild_exp.models.pair import LoadSettings
from bild_exp.models.weight_only import (
    Int4Linear,
    Int8Embedding,
    Int8Linear,
    check_group_size,
    check_weights,
    model_bytes,
    quantize_model,
    quantized_twin,
    weights_of,
)
from tests.harness_fixtures import compose_sweep, tiny_overrides
from tests.tiny_models import decode_with, tiny_model, train_briefly

CPU = torch.device("cpu")
MAX_NEW = 24
# Relative error (Frobenius) of a layer's output against its float32 layer on Gaussian
# weights and inputs: int8 per-channel rounds each weight to 1/254 of its row's range
# (measured ~0.8%), int4 group-32 to 1/15 of its group's (measured ~7.7%).
TOLERANCE = {"int8": 0.02, "int4": 0.12}


def quantized_layer(weights: str, weight: torch.Tensor, bias=None) -> nn.Module:
    return Int8Linear(weight, bias) if weights == "int8" else Int4Linear(weight, 32, bias)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).detach().norm() / expected.detach().norm())


@pytest.mark.parametrize("weights", ["int8", "int4"])
def test_quantised_layer_is_within_tolerance_of_its_float_layer(weights):
    generator = torch.Generator().manual_seed(0)
    layer = nn.Linear(256, 96)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(96, 256, generator=generator))
        layer.bias.copy_(torch.randn(96, generator=generator))
    x = torch.randn(2, 5, 256, generator=generator)
    expected = layer(x)
    actual = quantized_layer(weights, layer.weight, layer.bias)(x)
    assert actual.shape == expected.shape and actual.dtype == torch.float32
    error = relative_error(actual, expected)
    assert 0 < error < TOLERANCE[weights]  # quantised (not a float copy), and close


@pytest.mark.parametrize("weights", ["int8", "int4"])
@pytest.mark.parametrize("shape", [(96, 256), (1536, 896), (4864, 896)])
def test_a_rows_output_does_not_depend_on_the_rows_fed_with_it(weights, shape):
    out_features, in_features = shape
    generator = torch.Generator().manual_seed(1)
    layer = quantized_layer(weights, torch.randn(shape, generator=generator))
    x = torch.randn(16, in_features, generator=generator)
    one_by_one = torch.cat([layer(x[i : i + 1]) for i in range(16)])
    for rows in (2, 3, 8, 16):
        assert torch.equal(layer(x[:rows]), one_by_one[:rows]), rows


def test_int8_rows_round_trip_and_int4_codes_stay_in_range():
    weight = torch.randn(8, 64)
    q, scale = weight_only.int8_rows(weight)
    assert q.dtype == torch.int8 and int(q.abs().max()) == 127
    assert torch.allclose(q.float() * scale[:, None], weight, atol=float(scale.max()) / 2 + 1e-7)
    codes, scale, zero = weight_only.int4_groups(weight, 32)
    assert codes.dtype == torch.int32 and int(codes.min()) == 0 and int(codes.max()) == 15
    rebuilt = ((codes.reshape(8, 2, 32) - 8) * scale[..., None] + zero[..., None]).reshape(8, 64)
    assert (rebuilt - weight).abs().max() <= scale.max() / 2 + 1e-6


def tiny_pair():
    large = train_briefly(tiny_model("llama", seed=0, layers=3, width=64), steps=60, seed=0)
    small = train_briefly(tiny_model("llama", seed=1, layers=1, width=32), steps=60, seed=1)
    return large.float().eval(), small.float().eval()


def prompts(n: int = 3) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return [torch.randint(3, 64, (1, 7 + i), generator=generator) for i in range(n)]


LOSSLESS = {"fallback_threshold": 0.9, "rollback_threshold": 0.0, "verify_tail": True}


@pytest.mark.parametrize("weights", ["int8", "int4"])
def test_lossless_bild_and_speculative_with_a_quantised_drafter_give_vanilla_larges_tokens(
    weights,
):
    large, small = tiny_pair()
    drafter = quantized_twin(small, weights)
    assert weights_of(drafter) == weights and weights_of(small) == "float32"
    drafted_any_differently = False
    for ids in prompts():
        vanilla = decode_with("large", large, None, ids, MAX_NEW).tokens
        bild = decode_with("bild", large, drafter, ids, MAX_NEW, **LOSSLESS)
        assert bild.tokens == vanilla
        assert decode_with("speculative", large, drafter, ids, MAX_NEW, window=4).tokens == vanilla
        float_small = decode_with("small", None, small, ids, MAX_NEW).tokens
        drafted_any_differently |= (
            decode_with("small", None, drafter, ids, MAX_NEW).tokens != float_small
        )
    # the drafter really is another model (else the test would not test a quantised drafter)
    assert (
        drafted_any_differently
        or relative_error(drafter(prompts(1)[0]).logits, small(prompts(1)[0]).logits) > 1e-4
    )


@pytest.mark.parametrize("weights", ["int8", "int4"])
def test_lossless_bild_over_a_quantised_large_gives_that_large_models_tokens(weights):
    large, small = tiny_pair()
    quantize_model(large, weights)
    prepack_models([small])  # the usual CPU path for the float drafter beside it
    assert weights_of(large) == weights and is_prepacked(small) and not is_prepacked(large)
    for ids in prompts():
        vanilla = decode_with("large", large, None, ids, MAX_NEW).tokens
        assert decode_with("bild", large, small, ids, MAX_NEW, **LOSSLESS).tokens == vanilla
        assert decode_with("speculative", large, small, ids, MAX_NEW, window=4).tokens == vanilla


def tied_model() -> nn.Module:
    model = tiny_model("llama", seed=2, layers=2, width=64).float()
    model.lm_head.weight = model.model.embed_tokens.weight  # tie the head to the embedding
    return model


@pytest.mark.parametrize("weights", ["int8", "int4"])
def test_a_tied_head_is_quantised_once_and_memory_shrinks(weights):
    model = tied_model()
    before = model_bytes(model)
    ids = prompts(1)[0]
    expected = model(ids).logits
    quantize_model(model, weights)
    embedding = model.get_input_embeddings()
    assert isinstance(embedding, Int8Embedding)
    assert isinstance(model.lm_head, Int8Linear if weights == "int8" else Int4Linear)
    if weights == "int8":  # one int8 table serves the lookup and the head
        assert model.lm_head.qweight is embedding.qweight
    assert not any(type(m) is nn.Linear or type(m) is nn.Embedding for m in model.modules())
    assert model_bytes(model) < before / 2.5
    assert relative_error(model(ids).logits, expected) < 2 * TOLERANCE[weights]


def test_a_quantised_model_refuses_to_train():
    model = tiny_model("llama", seed=2, layers=1, width=32).float()
    quantize_model(model, "int8")
    model.train()
    with pytest.raises(InvalidParameterError, match="int8 weights is invalid for training"):
        model(prompts(1)[0])


def test_a_twin_leaves_its_model_as_it_was():
    model = tied_model()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    twin = quantized_twin(model, "int4")
    assert weights_of(twin) == "int4" and weights_of(model) == "float32"
    assert all(torch.equal(before[name], t) for name, t in model.state_dict().items())


def test_weights_outside_the_accepted_set_or_device_get_one_line():
    with pytest.raises(
        InvalidParameterError,
        match=r"pair.large_weights='int3' is invalid: accepted 'float32', 'int8', 'int4'",
    ):
        check_weights("int3", CPU, "pair.large_weights")
    with pytest.raises(
        InvalidParameterError,
        match=r"entry='int8' is invalid here: .*CPU kernels, and the device is 'cuda'",
    ):
        check_weights("int8", torch.device("cuda"), "pair.small_variants entry")
    assert check_weights("float32", torch.device("cuda"), "pair.large_weights") == "float32"


def test_a_torch_without_the_kernel_is_refused_with_one_line(monkeypatch):
    monkeypatch.setitem(weight_only.KERNELS, "int4", ("_weight_int4pack_mm_for_a_newer_cpu",))
    with pytest.raises(
        InvalidParameterError,
        match=r"'int4' is invalid here: torch .* has no torch.ops.aten._weight_int4pack_mm_for_a_newer_cpu",
    ):
        check_weights("int4", CPU, "pair.small_variants entry")


def test_int4_group_sizes_must_divide_every_input_width():
    assert check_group_size(64, {"d_model": 896, "d_ff": 4864}, "pair.int4_group_size") == 64
    with pytest.raises(
        InvalidParameterError,
        match=r"pair.int4_group_size=256 is invalid for this model: its d_model \(896\) is not a multiple of it; accepted 32, 64, 128",
    ):
        check_group_size(256, {"d_model": 896, "d_ff": 4864}, "pair.int4_group_size")
    with pytest.raises(
        InvalidParameterError,
        match=r"pair.int4_group_size=48 is invalid: accepted 32, 64, 128, 256",
    ):
        check_group_size(48, {"d_model": 896}, "pair.int4_group_size")


def test_a_sweep_refuses_quantised_variants_on_a_gpu_before_loading(tiny_assets):
    pair, _ = tiny_assets
    cfg = OmegaConf.create(
        {
            "pair": {
                "device": "cuda",
                "large": pair["large"],
                "small": pair["small"],
                "large_weights": "float32",
                "int4_group_size": 32,
            }
        }
    )
    with pytest.raises(
        InvalidParameterError, match="pair.small_variants entry='int4' is invalid here"
    ):
        check_weight_formats(cfg, ["base", "int4"])
    cfg.pair.device = "cpu"
    cfg.pair.large_weights = "int6"
    with pytest.raises(InvalidParameterError, match="pair.large_weights='int6' is invalid"):
        check_weight_formats(cfg, ["base"])
    cfg.pair.large_weights = "float32"
    cfg.pair.int4_group_size = 64  # the tiny T5's d_model is 32
    with pytest.raises(
        InvalidParameterError, match=r"pair.int4_group_size=64 is invalid for this model"
    ):
        check_weight_formats(cfg, ["int4"])
    check_weight_formats(cfg, ["base", "int8"])  # the group size is checked only for int4


def test_a_sweep_runs_a_quantised_drafter_beside_the_float_one(tiny_assets, tmp_path):
    cfg = compose_sweep(
        tiny_overrides(
            tiny_assets,
            tmp_path,
            "method=speculative",
            "grid.window=[2]",
            "pair.small_variants=[base,int8]",
        )
    )
    outcome = sweep.run(cfg)
    records, summary = outcome.records, outcome.summary
    speculative = records[records["method"] == "speculative"]
    assert set(speculative["small_variant"]) == {"base", "int8"}
    assert set(summary["small_variant"]) >= {"base", "int8"}
    large = records[records["method"] == "large"].set_index("example_id")["tokens"]
    for _, row in speculative.iterrows():  # exact with either drafter
        assert list(row["tokens"]) == list(large[row["example_id"]])
    manifest = json.loads((outcome.run_dir / "manifest.json").read_text())
    weights = manifest["weights"]
    assert weights["large"]["weights"] == "float32" and weights["small int8"]["weights"] == "int8"
    assert weights["small int8"]["bytes"] < weights["small base"]["bytes"]
    fingerprint = json.loads((outcome.run_dir / "compat.json").read_text())
    assert "large_weights" not in fingerprint and "int4_group_size" not in fingerprint


def test_the_fingerprint_names_quantised_weights_only_where_they_apply():
    float_pair = LoadSettings.for_pair(
        OmegaConf.create({"large_weights": "float32", "int4_group_size": 64})
    )
    base = [RunConfig("bild", "bild", "base"), RunConfig("speculative", "speculative", "int8")]
    assert weight_keys(float_pair, base) == {}  # folders written before keep their names
    int4 = [*base, RunConfig("bild", "bild", "int4")]
    assert weight_keys(float_pair, int4) == {"int4_group_size": 64}
    int8_large = LoadSettings.for_pair(
        OmegaConf.create({"large_weights": "int8", "int4_group_size": 32})
    )
    assert weight_keys(int8_large, base) == {"large_weights": "int8"}
