"""Analytical FLOPs and memory traffic of each forward call (paper Figure 8).

From a model config and each call's shape (tokens fed ``n``, positions cached before
``c``, encoder length ``E``) we count, per decoder layer:

FLOPs (a multiply-add = 2 FLOPs; norms, softmax and activations are left out):
- self-attention: Q and O projections ``2*2*n*d*a``, K and V ``2*2*n*d*k`` (``a`` = heads x
  head size, ``k`` = key/value heads x head size), scores and weighted sum
  ``2*2*a*S`` with ``S = n*c + n*(n+1)/2`` query-key pairs (causal)
- cross-attention (encoder-decoders): Q and O ``2*2*n*d*a``, scores ``2*2*n*E*a``; its keys
  and values of the encoder output are computed once per example (``encoder_cost``)
- feed-forward: ``2*m*n*d*f`` with ``m`` = 3 matrices for gated units, else 2
and once per call the LM head ``2*n*d*V``.

Bytes moved (``b`` bytes per element): every weight matrix used is read once per call;
the self-attention cache is read (``2*(c+n)*k*b``) and written (``2*n*k*b``); cross-attention
keys/values are read (``2*E*k*b``); activations count each matmul's input and output once
(``n*(...)*b``) and the attention probabilities (``heads*S*b``), written and read.
Arithmetic intensity is FLOPs / bytes.

A CALM token that exits at depth ``e`` runs ``e`` full layers and, for each skipped layer,
the self-attention sub-layer that writes its keys and values (``propagated_layers``).
"""

from __future__ import annotations

from dataclasses import astuple, dataclass
from typing import Any

from bild_exp.errors import InvalidParameterError

GATED_ACTIVATIONS = ("gated-gelu", "gated-silu")


@dataclass(frozen=True)
class ModelShape:
    """The dimensions the counts need (decoder side; the encoder has its own depth)."""

    d_model: int
    attention_dim: int  # query heads x head size
    kv_dim: int  # key/value heads x head size
    n_heads: int
    d_ff: int
    ffn_matrices: int
    vocab_size: int
    decoder_layers: int
    encoder_layers: int  # 0 for decoder-only models
    bytes_per_element: int = 4

    @property
    def has_cross_attention(self) -> bool:
        return self.encoder_layers > 0

    @classmethod
    def from_config(
        cls, config: Any, decoder_layers: int | None = None, bytes_per_element: int = 4
    ) -> ModelShape:
        """Read a Hugging Face config (T5/mT5, BART, GPT-2, Llama-style)."""
        model_type = config.model_type
        if model_type in ("t5", "mt5"):
            gated = config.feed_forward_proj in GATED_ACTIVATIONS or config.is_gated_act
            inner = config.num_heads * config.d_kv
            shape = dict(
                d_model=config.d_model,
                attention_dim=inner,
                kv_dim=inner,
                n_heads=config.num_heads,
                d_ff=config.d_ff,
                ffn_matrices=3 if gated else 2,
                decoder_layers=config.num_decoder_layers,
                encoder_layers=config.num_layers,
            )
        elif model_type == "bart":
            shape = dict(
                d_model=config.d_model,
                attention_dim=config.d_model,
                kv_dim=config.d_model,
                n_heads=config.decoder_attention_heads,
                d_ff=config.decoder_ffn_dim,
                ffn_matrices=2,
                decoder_layers=config.decoder_layers,
                encoder_layers=config.encoder_layers,
            )
        elif model_type == "gpt2":
            shape = dict(
                d_model=config.n_embd,
                attention_dim=config.n_embd,
                kv_dim=config.n_embd,
                n_heads=config.n_head,
                d_ff=config.n_inner or 4 * config.n_embd,
                ffn_matrices=2,
                decoder_layers=config.n_layer,
                encoder_layers=0,
            )
        elif hasattr(config, "intermediate_size") and hasattr(config, "num_attention_heads"):
            head_dim = getattr(config, "head_dim", None) or (
                config.hidden_size // config.num_attention_heads
            )
            kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
            shape = dict(
                d_model=config.hidden_size,
                attention_dim=config.num_attention_heads * head_dim,
                kv_dim=kv_heads * head_dim,
                n_heads=config.num_attention_heads,
                d_ff=config.intermediate_size,
                ffn_matrices=3,
                decoder_layers=config.num_hidden_layers,
                encoder_layers=0,
            )
        else:
            raise InvalidParameterError(
                f"model_type={model_type!r} is not supported by the FLOPs model: accepted "
                "t5, mt5, bart, gpt2 or a Llama-style config"
            )
        if decoder_layers is not None:
            shape["decoder_layers"] = decoder_layers
        return cls(vocab_size=config.vocab_size, bytes_per_element=bytes_per_element, **shape)


@dataclass(frozen=True)
class Cost:
    """FLOPs and bytes moved; ``+`` adds costs, ``intensity`` is FLOPs per byte."""

    flops: float = 0.0
    weight_bytes: float = 0.0
    kv_bytes: float = 0.0
    activation_bytes: float = 0.0

    @property
    def bytes(self) -> float:
        return self.weight_bytes + self.kv_bytes + self.activation_bytes

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes if self.bytes else 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def scaled(self, factor: float) -> Cost:
        return Cost(*(value * factor for value in astuple(self)))


def self_attention_cost(shape: ModelShape, n: int, c: int) -> Cost:
    """One layer's self-attention sub-layer over ``n`` new tokens after ``c`` cached ones."""
    d, a, k, b = shape.d_model, shape.attention_dim, shape.kv_dim, shape.bytes_per_element
    pairs = n * c + n * (n + 1) // 2
    flops = 4 * n * d * a + 4 * n * d * k + 4 * a * pairs
    weights = (2 * d * a + 2 * d * k) * b
    kv = (2 * (c + n) * k + 2 * n * k) * b  # read all keys/values, write the new ones
    # projections' input, Q/K/V/O outputs, attention output; probabilities written and read
    activations = (n * (d + a + 2 * k + a + d) + 2 * shape.n_heads * pairs) * b
    return Cost(flops, weights, kv, activations)


def cross_attention_cost(shape: ModelShape, n: int, encoder_length: int) -> Cost:
    d, a, k, b = shape.d_model, shape.attention_dim, shape.kv_dim, shape.bytes_per_element
    pairs = n * encoder_length
    flops = 4 * n * d * a + 4 * a * pairs
    weights = 2 * d * a * b
    kv = 2 * encoder_length * k * b
    activations = (n * (d + a + a + d) + 2 * shape.n_heads * pairs) * b
    return Cost(flops, weights, kv, activations)


def feed_forward_cost(shape: ModelShape, n: int) -> Cost:
    d, f, m, b = shape.d_model, shape.d_ff, shape.ffn_matrices, shape.bytes_per_element
    flops = 2 * m * n * d * f
    weights = m * d * f * b
    activations = n * (d + (m - 1) * f + f + d) * b  # input, up/gate outputs, down input/output
    return Cost(flops, weights, 0, activations)


def decoder_call_cost(
    shape: ModelShape,
    n_fed: int,
    n_cached: int,
    encoder_length: int = 0,
    layers: int | None = None,
    propagated_layers: int = 0,
    head_rows: int | None = None,
) -> Cost:
    """One decoder forward call: ``layers`` full layers (default: all), the propagated
    layers' self-attention, and the LM head over ``head_rows`` fed tokens (default: all;
    a decoder-only prompt's positions before its last need no logits)."""
    layers = shape.decoder_layers if layers is None else layers
    layer = self_attention_cost(shape, n_fed, n_cached) + feed_forward_cost(shape, n_fed)
    if shape.has_cross_attention:
        layer = layer + cross_attention_cost(shape, n_fed, encoder_length)
    d, v, b = shape.d_model, shape.vocab_size, shape.bytes_per_element
    rows = n_fed if head_rows is None else head_rows
    head = Cost(2 * rows * d * v, d * v * b, 0, rows * (d + v) * b)
    propagated = self_attention_cost(shape, n_fed, n_cached).scaled(propagated_layers)
    return layer.scaled(layers) + propagated + head


def encoder_cost(shape: ModelShape, encoder_length: int) -> Cost:
    """The encoder over the source, plus every decoder layer's cross-attention keys/values."""
    if not shape.has_cross_attention:
        return Cost()
    e, d, k, b = encoder_length, shape.d_model, shape.kv_dim, shape.bytes_per_element
    a, heads = shape.attention_dim, shape.n_heads
    # bidirectional self-attention: every query sees all e keys
    attention = Cost(
        4 * e * d * a + 4 * e * d * k + 4 * a * e * e,
        (2 * d * a + 2 * d * k) * b,
        2 * e * k * b,
        (e * (d + a + 2 * k + a + d) + 2 * heads * e * e) * b,
    )
    layer = attention + feed_forward_cost(shape, e)
    cross_kv = Cost(4 * e * d * k, 2 * d * k * b, 2 * e * k * b, e * d * b)
    return layer.scaled(shape.encoder_layers) + cross_kv.scaled(shape.decoder_layers)


def generation_cost(
    stats: dict[str, Any],
    encoder_length: int,
    large: ModelShape | None,
    small: ModelShape | None,
    small_shares_large: bool = False,
    prompt_length: int = 0,
) -> Cost:
    """Total cost of one ``generate`` call from its recorded call shapes.

    ``small_shares_large``: the small model is the large model's first layers (early exit),
    so there is one encoder; CALM calls carry their exit depth in ``call_exit_layers``.
    ``prompt_length``: a decoder-only prompt, whose positions before its last get no logits.
    """
    total = Cost()
    exit_layers = stats.get("call_exit_layers")
    for model, key in ((large, "large_call_shapes"), (small, "small_call_shapes")):
        calls = stats.get(key) or []
        if model is None or not calls:
            continue
        is_small = key == "small_call_shapes"
        if not (is_small and small_shares_large):
            total = total + encoder_cost(model, encoder_length)
        for index, (n_fed, n_cached) in enumerate(calls):
            depth, propagated = None, 0
            if exit_layers is not None and not is_small:
                depth = exit_layers[index]
                propagated = model.decoder_layers - depth
            head_rows = n_fed + n_cached - max(n_cached, prompt_length - 1)
            total = total + decoder_call_cost(
                model, n_fed, n_cached, encoder_length, depth, propagated, head_rows
            )
    return total
