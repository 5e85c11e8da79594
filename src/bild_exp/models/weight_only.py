"""Weight-only int8 and int4 linear layers on core torch's CPU kernels.

A drafter decodes one token per call, and a one-token call is bound by reading the weights:
a float32 copy of a model reads 4-8x more bytes than the int8/int4 weights it came from.
Core torch ships CPU kernels that read quantised weights directly:

- ``int8``: per-output-channel symmetric int8 (``w ~= q * scale``, ``q`` in [-127, 127]) on
  ``torch._weight_int8pack_mm``;
- ``int4``: grouped asymmetric 4-bit (``w ~= (q - 8) * scale + zero`` per group of
  ``group_size`` input columns, ``q`` in [0, 15]; the layout the tinygemm kernels take) on
  ``torch._weight_int4pack_mm_for_cpu``.

Activations go into both kernels as bfloat16 (with float32 ones the int8 kernel takes a
scalar path, ~15x slower) and the result comes back as float32, so the rest of the model
(norms, attention, residuals) runs as before. Each kernel computes a row's output the same
way however many rows are fed with it (``tests/test_weight_only.py``), so a quantised model's
one-token step equals its step inside a multi-token call, the property that keeps BiLD's
lossless settings exact when the *large* model is quantised (``pair.large_weights``). A
quantised *drafter* needs no such property: the float32 large model verifies its tokens.

Why not torchao: its 0.18 eager ``Int8WeightOnlyConfig`` path converts the whole int8 weight
to the activation dtype on every call (a dequantise plus a float matmul, slower than the
float32 layer it replaces), and its CPU int4 tensor calls the same core kernel used here
behind a tensor subclass (docs/cpu-and-compiled.md has the measurement).

:func:`quantize_model` swaps every ``nn.Linear`` (the LM head included) and releases each
float weight as its layer is swapped. A head tied to the input embedding is quantised once:
the embedding then looks its rows up in an int8 copy of the same table (per-row scales), so
the float32 table, the largest tensor of a small model, is released too; an untied input
embedding gets int8 rows of its own.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from bild_exp.errors import InvalidParameterError
from bild_exp.models.cpu_kernels import own_remaining_parameters

WEIGHT_FORMATS = ("float32", "int8", "int4")
QUANTIZED_FORMATS = ("int8", "int4")
# the group sizes _weight_int4pack_mm_for_cpu accepts
INT4_GROUP_SIZES = (32, 64, 128, 256)
# its packing takes output rows in multiples of this (others are padded with zero rows)
INT4_ROWS = 16
KERNELS = {
    "int8": ("_weight_int8pack_mm",),
    "int4": ("_convert_weight_to_int4pack_for_cpu", "_weight_int4pack_mm_for_cpu"),
}
# activations into the kernels (the int8 kernel's fast path; the int4 kernel's accepted dtype)
KERNEL_DTYPE = torch.bfloat16


def missing_kernel(weights: str, device: torch.device) -> str | None:
    """Why ``weights`` cannot run on ``device`` (None: it can)."""
    if device.type != "cpu":
        return (
            f"the weight-only kernels used here are CPU kernels, and the device is {device.type!r}"
        )
    absent = [name for name in KERNELS[weights] if not hasattr(torch.ops.aten, name)]
    if absent:
        return f"torch {torch.__version__} has no torch.ops.aten.{absent[0]}"
    try:  # present but unusable on this CPU (a build without the kernel's code path)
        probe(weights)
    except (RuntimeError, NotImplementedError) as error:
        return (
            f"torch.ops.aten.{KERNELS[weights][-1]} fails here ({str(error).splitlines()[0][:80]})"
        )
    return None


def probe(weights: str) -> None:
    """One call of ``weights``'s kernel on a tiny layer."""
    layer = nn.Linear(64, INT4_ROWS, bias=False)
    quantized = Int8Linear(layer.weight) if weights == "int8" else Int4Linear(layer.weight, 32)
    quantized.eval()(torch.zeros(1, 64))


def check_weights(weights: object, device: torch.device, name: str) -> str:
    """``weights`` if it is one of :data:`WEIGHT_FORMATS` and runs on ``device``, else a
    one-line error naming ``name`` (the config key or variant that asked for it)."""
    if weights not in WEIGHT_FORMATS:
        raise InvalidParameterError(
            f"{name}={weights!r} is invalid: accepted {', '.join(map(repr, WEIGHT_FORMATS))}"
        )
    reason = None if weights == "float32" else missing_kernel(weights, device)
    if reason is not None:
        raise InvalidParameterError(
            f"{name}={weights!r} is invalid here: {reason}; accepted 'float32' on this "
            "machine, 'int8' and 'int4' on a CPU whose torch has core torch's weight-only "
            "kernels (torch 2.13, the lock's, has both)"
        )
    return weights


def check_group_size(group_size: object, in_features: dict[str, int], name: str) -> int:
    """``group_size`` if it is one of :data:`INT4_GROUP_SIZES` and divides every input width
    in ``in_features`` (what, e.g. ``d_ff``, by width), else a one-line error."""
    if group_size not in INT4_GROUP_SIZES or isinstance(group_size, bool):
        raise InvalidParameterError(
            f"{name}={group_size!r} is invalid: accepted {', '.join(map(str, INT4_GROUP_SIZES))}"
        )
    for what, width in in_features.items():
        if width % group_size:
            fitting = [
                str(size)
                for size in INT4_GROUP_SIZES
                if all(w % size == 0 for w in in_features.values())
            ]
            raise InvalidParameterError(
                f"{name}={group_size} is invalid for this model: its {what} ({width}) is not a "
                f"multiple of it; accepted {', '.join(fitting) or 'none of ' + str(INT4_GROUP_SIZES)}"
            )
    return group_size


def to_kernel_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` (..., in) as the kernels take it: 2-D, contiguous, bfloat16."""
    return x.reshape(-1, x.shape[-1]).to(KERNEL_DTYPE).contiguous()


def from_kernel_rows(
    y: torch.Tensor, like: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """A kernel's 2-D bfloat16 output back in ``like``'s dtype and leading shape, plus bias."""
    out = y.to(like.dtype).reshape(*like.shape[:-1], y.shape[-1])
    return out if bias is None else out + bias


class WeightOnlyLinear(nn.Module):
    """What the quantised layers share: shapes, bias, inference only, a ``weight`` stand-in."""

    format = "float32"  # each subclass's own

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.bias = bias  # in the model's dtype, added after the kernel
        self.train(False)  # inference only: model.train() makes the next call refuse

    @property
    def weight(self) -> torch.Tensor:
        """A stand-in on the meta device with the float weight's shape and dtype (model code
        reads ``layer.weight.dtype``); the values live in the quantised buffers."""
        return torch.empty(
            (self.out_features, self.in_features), dtype=torch.float32, device="meta"
        )

    def check_inference(self) -> None:
        if self.training:
            raise InvalidParameterError(
                f"a model with {self.format} weights is invalid for training: its linear "
                "weights were quantised for inference and released; load it again in float32"
            )

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.format}"


def int8_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` (out, in) as per-row symmetric int8 and float32 scales: ``q * scale``."""
    with torch.no_grad():
        w = weight.detach().float()
        scale = (w.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).tiny)
        q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


class Int8Linear(WeightOnlyLinear):
    """``nn.Linear`` on per-output-channel symmetric int8 weights (``_weight_int8pack_mm``)."""

    format = "int8"

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
        rows: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        super().__init__(weight, bias)
        q, scale = rows if rows is not None else int8_rows(weight)
        self.register_buffer("qweight", q)
        self.register_buffer("scales", scale.to(KERNEL_DTYPE))  # the kernel's dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_inference()
        y = torch._weight_int8pack_mm(to_kernel_rows(x), self.qweight, self.scales)
        return from_kernel_rows(y, x, self.bias)


def int4_groups(
    weight: torch.Tensor, group_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``weight`` (out, in) as 4-bit codes (int32, 0..15) with per-group float32 scales and
    zeros: ``(q - 8) * scale + zero`` per ``group_size`` input columns (the tinygemm layout)."""
    out_features, in_features = weight.shape
    with torch.no_grad():
        w = weight.detach().float().reshape(out_features, in_features // group_size, group_size)
        low, high = w.amin(dim=-1), w.amax(dim=-1)
        scale = ((high - low) / 15).clamp(min=torch.finfo(torch.float32).tiny)
        zero = low + 8 * scale
        q = torch.round((w - low[..., None]) / scale[..., None]).clamp(0, 15).to(torch.int32)
    return q.reshape(out_features, in_features), scale, zero


class Int4Linear(WeightOnlyLinear):
    """``nn.Linear`` on grouped asymmetric 4-bit weights (``_weight_int4pack_mm_for_cpu``)."""

    format = "int4"

    def __init__(
        self, weight: torch.Tensor, group_size: int, bias: torch.Tensor | None = None
    ) -> None:
        super().__init__(weight, bias)
        if self.in_features % group_size:
            raise InvalidParameterError(
                f"int4 group_size={group_size} is invalid for a layer with {self.in_features} "
                "input features: accepted a divisor of it"
            )
        self.group_size = group_size
        padding = -self.out_features % INT4_ROWS
        if padding:  # zero rows, whose outputs are sliced off
            weight = torch.cat([weight.detach(), weight.new_zeros(padding, self.in_features)])
        q, scale, zero = int4_groups(weight, group_size)
        self.register_buffer("packed", torch._convert_weight_to_int4pack_for_cpu(q, 1))
        # (groups, out, 2): the kernel's scale-and-zero layout
        scale_and_zero = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous()
        self.register_buffer("scale_and_zero", scale_and_zero.to(KERNEL_DTYPE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_inference()
        y = torch._weight_int4pack_mm_for_cpu(
            to_kernel_rows(x), self.packed, self.group_size, self.scale_and_zero
        )
        if y.shape[-1] != self.out_features:  # padded rows
            y = y[:, : self.out_features]
        return from_kernel_rows(y, x, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, group_size={self.group_size}"


class Int8Embedding(nn.Module):
    """An embedding that looks its rows up in a per-row int8 table (the table a tied int8
    head shares), dequantised to float32 row by row."""

    def __init__(
        self,
        rows: tuple[torch.Tensor, torch.Tensor],
        padding_idx: int | None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        q, scale = rows
        self.num_embeddings, self.embedding_dim = q.shape
        self.padding_idx = padding_idx
        self.dtype = dtype  # the float table's: what the layers above it take
        self.register_buffer("qweight", q)
        self.register_buffer("row_scales", scale.to(dtype))  # the lookup is not a kernel call

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.qweight[ids].to(self.dtype) * self.row_scales[ids, None]

    @property
    def weight(self) -> torch.Tensor:
        """The dequantised table (what code that reads ``embedding.weight`` expects)."""
        return self.qweight.to(self.dtype) * self.row_scales[:, None]

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 rows"


def quantized_linear(
    layer: nn.Linear, weights: str, group_size: int, rows: tuple | None = None
) -> WeightOnlyLinear:
    bias = None if layer.bias is None else nn.Parameter(layer.bias.detach(), requires_grad=False)
    if weights == "int8":
        return Int8Linear(layer.weight, bias, rows)
    return Int4Linear(layer.weight, group_size, bias)


def quantize_model(
    model: nn.Module, weights: str, group_size: int = 32, own_remaining: bool = True
) -> int:
    """Swap every ``nn.Linear`` of ``model`` (the LM head included) for a ``weights``
    (:data:`QUANTIZED_FORMATS`) layer; the number of layers swapped.

    Layers are swapped one at a time and each float weight is released with its layer
    (unless something else holds it; ``own_remaining``: copy the parameters left, norms and
    biases, out of the checkpoint's memory mapping, see ``own_remaining_parameters``). A head tied to the input embedding is quantised once:
    the embedding becomes an :class:`Int8Embedding` over the head's int8 rows (an ``int4``
    head keeps an int8 table for the lookup), and both float references go. An untied
    input embedding becomes an :class:`Int8Embedding` of its own (a lookup reads one row
    per token: this saves memory, not time)."""
    if weights not in QUANTIZED_FORMATS:
        raise InvalidParameterError(
            f"weights={weights!r} is invalid: accepted {', '.join(map(repr, QUANTIZED_FORMATS))}"
        )
    model.eval()
    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    tied = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.Linear)
        and isinstance(embedding, nn.Embedding)
        and child.weight is embedding.weight
    ]
    swapped = 0
    if tied:  # the shared table once: int8 rows serve the lookup (and an int8 head)
        rows = int8_rows(embedding.weight)
        for parent, name, child in tied:
            setattr(parent, name, quantized_linear(child, weights, group_size, rows))
            swapped += 1
        table = Int8Embedding(rows, embedding.padding_idx, embedding.weight.dtype)
        replace_module(model, embedding, table)
        del tied, child, rows, table, embedding
    elif isinstance(embedding, nn.Embedding):  # untied: its own int8 rows (only memory)
        table = Int8Embedding(
            int8_rows(embedding.weight), embedding.padding_idx, embedding.weight.dtype
        )
        replace_module(model, embedding, table)
        del table, embedding
    layers = [
        (parent, name)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) is nn.Linear
    ]
    for parent, name in layers:
        setattr(parent, name, quantized_linear(getattr(parent, name), weights, group_size))
        swapped += 1
    if own_remaining:  # norms and biases out of the checkpoint's mapping
        own_remaining_parameters([model])
    return swapped


def quantized_twin(model: nn.Module, weights: str, group_size: int = 32) -> nn.Module:
    """A copy of ``model`` with ``weights`` linear layers; ``model`` is left as it was and
    the twin shares its other tensors (norms, an untied embedding) instead of copying them,
    so a twin costs only its quantised weights."""
    shared = {id(tensor): tensor for tensor in [*model.parameters(), *model.buffers()]}
    twin = copy.deepcopy(model, shared)
    quantize_model(twin, weights, group_size, own_remaining=False)
    return twin


def replace_module(model: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """Every reference of ``model``'s submodules to ``old`` now points to ``new``."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if child is old:
                setattr(parent, name, new)


def weights_of(model: nn.Module) -> str:
    """The format of ``model``'s linear layers: ``float32``, ``int8`` or ``int4``."""
    formats = {m.format for m in model.modules() if isinstance(m, WeightOnlyLinear)}
    return formats.pop() if len(formats) == 1 else "float32"


def model_bytes(model: nn.Module) -> int:
    """Bytes of ``model``'s weights: parameters, buffers and oneDNN-packed copies (held as
    plain attributes by ``PrepackedLinear``), each shared tensor once."""
    tensors = [*model.parameters(), *model.buffers()]
    tensors += [
        m.packed for m in model.modules() if isinstance(getattr(m, "packed", None), torch.Tensor)
    ]
    seen: dict[int, int] = {}
    for tensor in tensors:
        if tensor.device.type == "meta":
            continue
        try:
            key = tensor.data_ptr()
        except (RuntimeError, NotImplementedError):  # oneDNN's opaque packed layout
            key = id(tensor)
        seen[key] = tensor.numel() * tensor.element_size()
    return sum(seen.values())
