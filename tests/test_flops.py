"""The analytical FLOPs / bytes model against hand calculations and real parameter counts."""

from __future__ import annotations

import pytest
from transformers import T5ForConditionalGeneration

from bild_exp.flops import (
    ModelShape,
    decoder_call_cost,
    encoder_cost,
    generation_cost,
)
from tests.tiny_models import tiny_config

# d_model 4, 2 heads of size 2 (a = k = 4), d_ff 8, plain (2-matrix) FFN, vocab 10,
# one decoder and one encoder layer, fp32.
TINY = ModelShape(
    d_model=4,
    attention_dim=4,
    kv_dim=4,
    n_heads=2,
    d_ff=8,
    ffn_matrices=2,
    vocab_size=10,
    decoder_layers=1,
    encoder_layers=1,
    bytes_per_element=4,
)


def test_one_decoder_call_by_hand():
    """n = 2 new tokens after c = 3 cached, encoder length 5."""
    cost = decoder_call_cost(TINY, n_fed=2, n_cached=3, encoder_length=5)
    # self-attention: Q, K, V, O are 4x4 matrices on 2 tokens: 4 * (2 * 2*4*4) = 256;
    #   causal pairs: the queries see 4 and 5 keys = 9; QK^T and AV cost 2*4 each: 9 * 16 = 144
    # cross-attention: Q, O: 2 * (2 * 2*4*4) = 128; 2 queries x 5 encoder keys x 16 = 160
    # FFN: 4x8 and 8x4 on 2 tokens: 2 * (2 * 2*4*8) = 256
    # LM head 4x10 on 2 tokens: 2*2*4*10 = 160
    assert cost.flops == 256 + 144 + 128 + 160 + 256 + 160
    # weights read once: self 4*16, cross Q/O 2*16, FFN 2*32, head 40 elements, 4 bytes each
    assert cost.weight_bytes == (64 + 32 + 64 + 40) * 4
    # keys+values: self read 5 positions + write 2 (x2 for K and V, 4 wide); cross read 5
    assert cost.kv_bytes == (2 * 5 * 4 + 2 * 2 * 4 + 2 * 5 * 4) * 4
    # activations: self 2 tokens x (in 4 + q 4 + k,v 8 + attn 4 + out 4) + probs 2 heads x 9 x 2
    #   cross 2 x (4 + 4 + 4 + 4) + 2 heads x 10 pairs x 2; FFN 2 x (4 + 8 + 8 + 4);
    #   head 2 x (4 + 10)
    assert cost.activation_bytes == (2 * 24 + 36 + 2 * 16 + 40 + 2 * 24 + 2 * 14) * 4
    assert cost.intensity == pytest.approx(cost.flops / cost.bytes)


def test_encoder_by_hand():
    cost = encoder_cost(TINY, encoder_length=5)
    # self-attention on 5 tokens: projections 4 * (2*5*4*4) = 640, all 25 pairs x 16 = 400;
    # FFN 2 * (2*5*4*8) = 640; the decoder layer's cross K, V of 5 tokens: 2 * (2*5*4*4) = 320
    assert cost.flops == 640 + 400 + 640 + 320
    assert cost.weight_bytes == (64 + 64 + 32) * 4


def real_t5() -> T5ForConditionalGeneration:
    config = tiny_config(
        "t5",
        layers=2,
        width=16,
        vocab_size=50,
        d_kv=4,
        num_heads=2,
        d_ff=24,
        num_decoder_layers=3,
        feed_forward_proj="gated-gelu",
    )
    return T5ForConditionalGeneration(config)


def linear_parameters(module) -> int:
    return sum(
        p.numel()
        for name, p in module.named_parameters()
        if name.endswith(".weight") and p.dim() == 2
    )


def test_weights_read_per_call_are_the_real_models_matrices():
    model = real_t5()
    shape = ModelShape.from_config(model.config)
    assert (shape.attention_dim, shape.ffn_matrices, shape.decoder_layers) == (8, 3, 3)
    decoder_matrices = linear_parameters(model.decoder.block) - sum(
        block.layer[0].SelfAttention.relative_attention_bias.weight.numel()
        for block in model.decoder.block[:1]
    )
    cross_kv = sum(
        block.layer[1].EncDecAttention.k.weight.numel() * 2 for block in model.decoder.block
    )
    head = model.lm_head.weight.numel()
    call = decoder_call_cost(shape, n_fed=1, n_cached=0, encoder_length=7)
    assert call.weight_bytes == (decoder_matrices - cross_kv + head) * 4
    # with one token and nothing cached, matmul FLOPs are 2 per weight used, plus attention
    attention = shape.decoder_layers * (4 * shape.attention_dim * (1 + 7))
    assert call.flops == 2 * (decoder_matrices - cross_kv + head) + attention
    encoder_matrices = linear_parameters(model.encoder.block) - (
        model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight.numel()
    )
    assert encoder_cost(shape, 7).weight_bytes == (encoder_matrices + cross_kv) * 4


def test_generation_cost_counts_one_encoder_for_an_early_exit_small_and_calm_propagation():
    shape = ModelShape.from_config(real_t5().config)
    exit_shape = ModelShape.from_config(real_t5().config, decoder_layers=1)
    stats = {"large_call_shapes": [(1, 0), (3, 1)], "small_call_shapes": [(1, 1), (1, 2)]}
    separate = generation_cost(stats, 7, shape, exit_shape, small_shares_large=False)
    shared = generation_cost(stats, 7, shape, exit_shape, small_shares_large=True)
    assert separate.flops - shared.flops == encoder_cost(exit_shape, 7).flops
    # a CALM token exiting at depth 1 of 3: one full layer, two self-attention sub-layers
    calm = generation_cost({"large_call_shapes": [(1, 0)], "call_exit_layers": [1]}, 7, shape, None)
    one_layer = decoder_call_cost(shape, 1, 0, 7, layers=1)
    full = decoder_call_cost(shape, 1, 0, 7)
    assert one_layer.flops < calm.flops - encoder_cost(shape, 7).flops < full.flops
    assert calm.flops - encoder_cost(shape, 7).flops == (
        decoder_call_cost(shape, 1, 0, 7, layers=1, propagated_layers=2).flops
    )
