"""The eager CPU fast path: linear layers run on weights prepacked for oneDNN.

Every draft-and-verify method rests on one fact: a decoder call over k tokens costs about
what a one-token call costs, because at batch 1 the call is bound by reading the weights.
On the AMD CPUs this project runs on, eager ``torch.nn.functional.linear`` breaks it: MKL's
small-batch GEMM makes a 2-8-row matmul cost 2-3 one-row matmuls (measured in the bench,
``python -m bild_exp.bench.call_costs``). oneDNN on a weight reordered once into its blocked
layout (what inductor's weight freezing does) keeps a k-row matmul close to a one-row one
and is also faster at one row.

:func:`prepack_models` swaps every float32 ``nn.Linear`` of CPU models for a
:class:`PrepackedLinear` holding only the packed weight: the original weight tensor is
released (unless something else still holds it, e.g. a language-model head tied to the
input embedding: then the packed copy is extra memory, and an in-place change of the
shared tensor is detected at the next call and the copy repacked). Linear layers shared by
several models (smalls cut from their large model) are packed once.

A prepacked model is for inference: its linear weights are no longer parameters, so
training it is refused with one line (:class:`PrepackedLinear` in train mode).

Numerics: oneDNN sums in another order than MKL, so logits differ from the plain path by
rounding (~1e-6 relative in float32); within the path a row's result does not depend on how
many rows are fed with it, which is what keeps BiLD's lossless settings token-for-token
equal to vanilla decoding (``tests/test_cpu_kernels.py``).
"""

from __future__ import annotations

import itertools
import weakref

import torch
from torch import nn

from bild_exp.errors import InvalidParameterError

CPU_KERNELS = ("auto", "plain", "prepacked")
# Every live prepacked layer by id: the compiled path calls them through an opaque op that
# names the layer by this integer (see prepacked_linear_op).
_LAYERS: weakref.WeakValueDictionary[int, PrepackedLinear] = weakref.WeakValueDictionary()
_NEXT_ID = itertools.count()


def check_cpu_kernels(value: object, name: str = "engine.cpu_kernels") -> str:
    """``value`` if it is one of :data:`CPU_KERNELS`, else a one-line error."""
    if value not in CPU_KERNELS:
        raise InvalidParameterError(
            f"{name}={value!r} is invalid: accepted {', '.join(map(repr, CPU_KERNELS))} "
            "(auto: prepacked for float32 models on a CPU, plain elsewhere)"
        )
    return value


def prepack_supported(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether oneDNN's prepacked linear kernels serve this device and dtype."""
    return device.type == "cpu" and dtype == torch.float32 and torch.backends.mkldnn.is_available()


def resolve_cpu_kernels(value: str, device: torch.device, dtype: torch.dtype) -> str:
    """``plain`` or ``prepacked`` for ``value`` (:data:`CPU_KERNELS`) on this device and
    dtype; ``prepacked`` where it cannot run is a one-line error."""
    check_cpu_kernels(value)
    supported = prepack_supported(device, dtype)
    if value == "prepacked" and not supported:
        raise InvalidParameterError(
            f"engine.cpu_kernels='prepacked' is invalid on device={device.type!r} with "
            f"dtype={str(dtype).removeprefix('torch.')!r}: accepted on a CPU with float32 "
            "weights and oneDNN; use 'auto' or 'plain'"
        )
    if value == "auto":
        return "prepacked" if supported else "plain"
    return value


class PrepackedLinear(nn.Module):
    """``nn.Linear`` on a weight reordered once for oneDNN (see the module docstring)."""

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None, packed: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.bias = bias  # a Parameter stays one (moved with the model, counted in its size)
        self.packed = pack(weight) if packed is None else packed
        # the source tensor, watched only while something else keeps it alive (a tied head)
        self._source = weakref.ref(weight)
        self._source_version = weight._version  # noqa: SLF001
        self.layer_id = next(_NEXT_ID)
        _LAYERS[self.layer_id] = self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():  # one opaque call in the graph: see prepacked_linear_op
            return prepacked_linear_op(x, self.layer_id, self.out_features, self.bias)
        return self.linear(x)

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise InvalidParameterError(
                "a model with engine.cpu_kernels='prepacked' is invalid for training: its "
                "linear weights were packed for inference and released; load it again or "
                "use engine.cpu_kernels='plain'"
            )
        source = self._source()
        if source is not None and source._version != self._source_version:  # noqa: SLF001
            self.packed, self._source_version = pack(source), source._version  # noqa: SLF001
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    @property
    def weight(self) -> torch.Tensor:
        """A stand-in on the meta device with the weight's shape and dtype (model code reads
        ``layer.weight.dtype``, e.g. T5's feed-forward); the values live in ``packed``."""
        return torch.empty(
            (self.out_features, self.in_features), dtype=torch.float32, device="meta"
        )

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, prepacked"


@torch.library.custom_op("bild_exp::prepacked_linear", mutates_args=())
def prepacked_linear_op(
    x: torch.Tensor, layer_id: int, out_features: int, bias: torch.Tensor | None
) -> torch.Tensor:
    """A prepacked layer's linear as one op the compiler does not look into.

    Inductor lowers ``mkldnn._linear_pointwise`` only for weights it packed itself (weight
    freezing), which keeps a packed copy of every weight beside the model's own: a 1.5B +
    0.5B float32 pair then outgrows 24 GB. Through this op the compiled graph calls the
    model's own packed weights (the layer is named by an integer, so the packed tensor never
    enters the graph), compiles everything around them, and holds no second copy."""
    del out_features, bias  # the layer's own (given for the shape function and the graph)
    return _LAYERS[layer_id].linear(x)


@prepacked_linear_op.register_fake
def _(x: torch.Tensor, layer_id: int, out_features: int, bias: torch.Tensor | None) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], out_features))


def pack(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` (out, in) reordered into oneDNN's layout for any number of rows."""
    with torch.no_grad():
        return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)


def prepack_models(models: list[nn.Module | None]) -> int:
    """Swap every float32 ``nn.Linear`` of ``models`` (on a CPU) for a
    :class:`PrepackedLinear`, packing each distinct weight tensor once; the number of
    layers swapped. Entries that are not modules (``None``, an ``EarlyExit`` view of a
    listed large model) are skipped; models must not train afterwards.

    Weights are packed one at a time and each is released as soon as its layers are
    swapped, so memory peaks at the models plus one packed matrix (plus tied copies)."""
    groups: dict[int, list[tuple[nn.Module, str, nn.Linear]]] = {}  # id(weight) -> uses
    for model in models:
        if not isinstance(model, nn.Module):  # None, or an early-exit view of a listed model
            continue
        for parent in model.modules():
            for name, child in parent.named_children():
                if packable(child):
                    groups.setdefault(id(child.weight), []).append((parent, name, child))
    swapped = 0
    for key in list(groups):
        uses = groups.pop(key)
        packed = pack(uses[0][2].weight)
        for parent, name, child in uses:
            layer = PrepackedLinear(child.weight, child.bias, packed)
            layer.training = child.training
            setattr(parent, name, layer)
            swapped += 1
        del uses, child, layer  # the last references this function holds to the weight
    own_remaining_parameters(models)
    return swapped


def own_remaining_parameters(models: list[nn.Module | None]) -> None:
    """Give the parameters left after packing (embeddings, norms) memory of their own.

    ``from_pretrained`` maps safetensors files into memory and its tensors point into the
    mapping; while one tensor of a file lives the whole mapping stays, and every page that
    packing read stays resident (measured: 16.5 GB resident for the Qwen2.5-Coder 1.5B +
    0.5B pair, of which 6.8 GB were pages of weights already packed and released). Each
    parameter (each shared one once) is copied out of the mapping, which then closes."""
    seen: set[int] = set()
    for model in models:
        for parameter in model.parameters() if isinstance(model, nn.Module) else []:
            if id(parameter) not in seen:
                seen.add(id(parameter))
                parameter.data = parameter.data.clone()


def packable(module: nn.Module) -> bool:
    """A plain float32 ``nn.Linear`` on a CPU (subclasses, e.g. quantised ones, are left alone)."""
    return (
        type(module) is nn.Linear
        and module.weight.dtype == torch.float32
        and module.weight.device.type == "cpu"
    )


def is_prepacked(model: nn.Module) -> bool:
    """Whether any linear layer of ``model`` runs prepacked."""
    return any(isinstance(m, PrepackedLinear) for m in model.modules())
