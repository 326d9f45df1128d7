"""The registry ops each ONNX op type becomes: one ``register_importer`` entry each.

Covers what ``export`` writes and what ``torch.onnx.export`` writes for the same models: Conv, MaxPool,
AveragePool, Gemm, MatMul, Add/Sub/Mul/Div/Neg/Pow, Exp/Log, Relu/Tanh/Sigmoid, Flatten, Reshape, Transpose,
Softmax/LogSoftmax, ReduceSum/ReduceMean/ReduceMax, Slice, Squeeze, Unsqueeze, Shape, Gather, Concat (on
integer shape data and float tensors), Constant, Identity and Dropout (inference: the identity);
ConvTranspose, BatchNormalization (inference), Erf, Gelu, LeakyRelu, Elu, Softplus, Abs, Sqrt, Max and Min
(elementwise), Clip, Pad (constant mode), Expand, ReduceLogSumExp, Greater and Where (a boolean
condition: a constant of the file or a comparison in the graph).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from microgradcnn import functional as F
from microgradcnn import ops
from microgradcnn.onnx.loader import Node
from microgradcnn.onnx.registry import OnnxError, register_importer
from microgradcnn.tensor import Tensor


def _tensor(value: Any, node: Node, what: str = "input") -> Tensor:
    if isinstance(value, Tensor):
        return value
    if value is None:
        raise OnnxError(f"the {what} is missing")
    return Tensor(np.asarray(value))


def _ints(value: Any, what: str) -> list[int]:
    """An integer input (shape, axes, ...) as a list of ints; a computed one must not depend on data."""
    if isinstance(value, Tensor):
        raise OnnxError(f"{what} must be constant integers, got a float tensor computed in the graph")
    return [int(v) for v in np.asarray(value).reshape(-1)]


def _elementwise(op_type: str, fn: Any) -> None:
    @register_importer(op_type)
    def importer(node: Node, inputs: list[Any]) -> Any:
        if any(isinstance(v, Tensor) for v in inputs):
            return fn(*(_tensor(v, node) for v in inputs))
        return fn(*inputs)  # integer shape arithmetic, on arrays

    importer.__qualname__ = f"import_{op_type}"


for _type, _fn in [
    ("Add", ops.add), ("Sub", ops.sub), ("Mul", ops.mul), ("Div", ops.div), ("MatMul", ops.matmul),
    ("Neg", ops.neg), ("Exp", ops.exp), ("Log", ops.log), ("Relu", ops.relu), ("Tanh", ops.tanh),
    ("Sigmoid", ops.sigmoid), ("Erf", ops.erf), ("Abs", ops.abs), ("Sqrt", ops.sqrt),
]:
    _elementwise(_type, _fn)


def _pair_attr(node: Node, name: str, default: int, count: int = 2) -> tuple[int, ...]:
    value = node.attrs.get(name, [default] * count)
    if len(value) != count:
        raise OnnxError(f"attribute {name}={value} is not {count} values: only 2-D (NCHW) is supported")
    return tuple(int(v) for v in value)


def _padding(node: Node) -> tuple[int, int]:
    auto = node.attrs.get("auto_pad", "NOTSET")
    if auto not in ("NOTSET", "VALID"):
        raise OnnxError(f"auto_pad={auto} is not supported; export with explicit pads")
    if auto == "VALID":
        return (0, 0)
    pads = _pair_attr(node, "pads", 0, 4)
    if pads[:2] != pads[2:]:
        raise OnnxError(f"asymmetric pads {list(pads)} are not supported (begin and end must agree)")
    return (pads[0], pads[1])


def _pool_window(node: Node) -> dict[str, tuple[int, ...]]:
    if node.attrs.get("ceil_mode", 0):
        raise OnnxError("ceil_mode=1 is not supported")
    if any(d != 1 for d in node.attrs.get("dilations", [1, 1])):
        raise OnnxError(f"dilations {node.attrs['dilations']} are not supported in pooling")
    kernel = _pair_attr(node, "kernel_shape", 1)
    return {"kernel_size": kernel, "stride": _pair_attr(node, "strides", 1), "padding": _padding(node)}


@register_importer("Conv")
def import_conv(node: Node, inputs: list[Any]) -> Tensor:
    x, w, b = [*inputs, None][:3]
    return F.conv2d(_tensor(x, node), _tensor(w, node, "weight"), b, stride=_pair_attr(node, "strides", 1),
                    padding=_padding(node), dilation=_pair_attr(node, "dilations", 1),
                    groups=int(node.attrs.get("group", 1)))


@register_importer("MaxPool")
def import_max_pool(node: Node, inputs: list[Any]) -> Tensor:
    if len(node.outputs) > 1 and node.outputs[1]:
        raise OnnxError("the Indices output is not supported")
    return F.max_pool2d(_tensor(inputs[0], node), **_pool_window(node))


@register_importer("AveragePool")
def import_average_pool(node: Node, inputs: list[Any]) -> Tensor:
    window = _pool_window(node)
    if window["padding"] != (0, 0) and not node.attrs.get("count_include_pad", 0):
        raise OnnxError("count_include_pad=0 with padding is not supported (the padding zeros always count)")
    return F.avg_pool2d(_tensor(inputs[0], node), **window)


@register_importer("Gemm")
def import_gemm(node: Node, inputs: list[Any]) -> Tensor:
    """Y = alpha * A' B' + beta * C: ``linear`` for PyTorch's nn.Linear form (transB=1, alpha=beta=1)."""
    a, b, c = [*inputs, None][:3]
    a, b = _tensor(a, node), _tensor(b, node)
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    trans_a, trans_b = node.attrs.get("transA", 0), node.attrs.get("transB", 0)
    if trans_a:
        a = a.T
    if trans_b and alpha == beta == 1.0 and (c is None or (c.ndim == 1 and c.shape == b.shape[:1])):
        return F.linear(a, b, c)
    y = ops.matmul(a, b.T if trans_b else b)
    if alpha != 1.0:
        y = y * alpha
    if c is not None:
        y = y + (_tensor(c, node) * beta if beta != 1.0 else _tensor(c, node))
    return y


@register_importer("Pow")
def import_pow(node: Node, inputs: list[Any]) -> Tensor:
    x, p = inputs
    if _scalar_constant(p):  # x ** 2: op pow
        return ops.pow(_tensor(x, node), float(np.asarray(getattr(p, "data", p)).reshape(())))
    if _scalar_constant(x):  # 2 ** x: op rpow
        return ops.pow(float(np.asarray(getattr(x, "data", x)).reshape(())), _tensor(p, node))
    return ops.pow(_tensor(x, node), _tensor(p, node))


def _scalar_constant(v: Any) -> bool:
    """A one-element value that no gradient flows to: a constant of the file, not a Parameter."""
    if isinstance(v, Tensor):
        return v.size == 1 and v.is_leaf and not v.requires_grad
    return v is not None and np.size(v) == 1


@register_importer("Softmax")
def import_softmax(node: Node, inputs: list[Any]) -> Tensor:
    return F.softmax(_tensor(inputs[0], node), axis=_softmax_axis(node, inputs[0]))


@register_importer("LogSoftmax")
def import_log_softmax(node: Node, inputs: list[Any]) -> Tensor:
    return F.log_softmax(_tensor(inputs[0], node), axis=_softmax_axis(node, inputs[0]))


def _softmax_axis(node: Node, x: Any) -> int:
    ndim = np.ndim(x.data if isinstance(x, Tensor) else x)
    axis = int(node.attrs.get("axis", -1 if node.opset >= 13 else 1))
    # before opset 13 the axis meant "flatten from here": the same as ours only for the last axis
    if node.opset < 13 and axis % max(ndim, 1) != ndim - 1:
        raise OnnxError(f"axis={axis} under opset {node.opset} (flattening softmax) is supported only for "
                        "the last axis")
    return axis


@register_importer("Flatten")
def import_flatten(node: Node, inputs: list[Any]) -> Tensor:
    x = _tensor(inputs[0], node)
    axis = int(node.attrs.get("axis", 1)) % max(x.ndim, 1) if x.ndim else 0
    if axis == 0:
        return x.reshape(1, -1)
    if axis == 1:
        return ops.flatten(x, 1)
    return x.reshape(math.prod(x.shape[:axis]), -1)


@register_importer("Reshape")
def import_reshape(node: Node, inputs: list[Any]) -> Any:
    x, shape = inputs
    target = _ints(shape, "the shape")
    src = np.shape(x.data if isinstance(x, Tensor) else x)
    if not node.attrs.get("allowzero", 0):  # 0 copies the input's size there
        target = [src[i] if s == 0 else s for i, s in enumerate(target)]
    if not isinstance(x, Tensor):
        return np.reshape(x, target)
    return ops.reshape(x, tuple(target))


@register_importer("Transpose")
def import_transpose(node: Node, inputs: list[Any]) -> Tensor:
    return ops.transpose(_tensor(inputs[0], node), node.attrs.get("perm"))


def _axes(node: Node, inputs: list[Any]) -> list[int] | None:
    if len(inputs) > 1 and inputs[1] is not None:
        return _ints(inputs[1], "the axes")
    return node.attrs.get("axes")


def _reduction(op_type: str, fn: Any) -> None:
    @register_importer(op_type)
    def importer(node: Node, inputs: list[Any]) -> Tensor:
        x = _tensor(inputs[0], node)
        axes = _axes(node, inputs)
        if not axes:
            if node.attrs.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.ndim))
        return fn(x, axis=tuple(axes), keepdims=bool(node.attrs.get("keepdims", 1)))

    importer.__qualname__ = f"import_{op_type}"


for _type, _fn in [
    ("ReduceSum", ops.sum), ("ReduceMean", ops.mean), ("ReduceMax", ops.max),
    ("ReduceLogSumExp", ops.logsumexp),
]:
    _reduction(_type, _fn)


@register_importer("Slice")
def import_slice(node: Node, inputs: list[Any]) -> Any:
    x = inputs[0]
    ndim = np.ndim(x.data if isinstance(x, Tensor) else x)
    starts, ends = _ints(inputs[1], "starts"), _ints(inputs[2], "ends")
    axes = _ints(inputs[3], "axes") if len(inputs) > 3 and inputs[3] is not None else list(range(len(starts)))
    steps = _ints(inputs[4], "steps") if len(inputs) > 4 and inputs[4] is not None else [1] * len(starts)
    index: list[Any] = [slice(None)] * ndim
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        # ONNX clamps out-of-range ends as Python slices do; its "to the end" sentinels are huge ints
        big = 2**62
        index[axis % ndim] = slice(start, None if abs(end) >= big else end, step)
    return x[tuple(index)] if isinstance(x, Tensor) else np.asarray(x)[tuple(index)]


@register_importer("Squeeze")
def import_squeeze(node: Node, inputs: list[Any]) -> Any:
    x = inputs[0]
    shape = np.shape(x.data if isinstance(x, Tensor) else x)
    axes = _axes(node, inputs)
    drop = {a % len(shape) for a in axes} if axes else {i for i, s in enumerate(shape) if s == 1}
    new = tuple(s for i, s in enumerate(shape) if i not in drop)
    return ops.reshape(x, new) if isinstance(x, Tensor) else np.reshape(x, new)


@register_importer("Unsqueeze")
def import_unsqueeze(node: Node, inputs: list[Any]) -> Any:
    x = inputs[0]
    shape = list(np.shape(x.data if isinstance(x, Tensor) else x))
    axes = _axes(node, inputs) or []
    rank = len(shape) + len(axes)
    for a in sorted(a % rank for a in axes):
        shape.insert(a, 1)
    return ops.reshape(x, tuple(shape)) if isinstance(x, Tensor) else np.reshape(x, shape)


@register_importer("Shape")
def import_shape(node: Node, inputs: list[Any]) -> np.ndarray:
    x = inputs[0]
    shape = np.shape(x.data if isinstance(x, Tensor) else x)
    start, end = node.attrs.get("start", 0), node.attrs.get("end", None)
    return np.asarray(shape[start:end], dtype=np.int64)


@register_importer("Gather")
def import_gather(node: Node, inputs: list[Any]) -> Any:
    x, idx = inputs
    axis = int(node.attrs.get("axis", 0))
    if isinstance(x, Tensor):
        index: list[Any] = [slice(None)] * x.ndim
        index[axis % x.ndim] = np.asarray(idx, dtype=np.intp) if np.ndim(idx) else int(idx)
        return x[tuple(index)]
    return np.take(np.asarray(x), np.asarray(idx, dtype=np.intp), axis=axis)


@register_importer("Concat")
def import_concat(node: Node, inputs: list[Any]) -> Any:
    if any(isinstance(v, Tensor) for v in inputs):
        return ops.cat([_tensor(v, node) for v in inputs], axis=int(node.attrs.get("axis", 0)))
    return np.concatenate([np.asarray(v).reshape(-1) if np.ndim(v) == 0 else np.asarray(v) for v in inputs],
                          axis=int(node.attrs.get("axis", 0)))


@register_importer("Constant")
def import_constant(node: Node, inputs: list[Any]) -> Any:
    if "value" in node.attrs:
        value = node.attrs["value"]
    elif "value_float" in node.attrs or "value_floats" in node.attrs:
        value = np.asarray(node.attrs.get("value_float", node.attrs.get("value_floats")), dtype=np.float32)
    elif "value_int" in node.attrs or "value_ints" in node.attrs:
        value = np.asarray(node.attrs.get("value_int", node.attrs.get("value_ints")), dtype=np.int64)
    else:
        raise OnnxError(f"Constant with attributes {sorted(node.attrs)} is not supported")
    value = np.asarray(value)
    return Tensor(value) if value.dtype.kind == "f" else value


@register_importer("Identity")
def import_identity(node: Node, inputs: list[Any]) -> Any:
    return inputs[0]


@register_importer("Dropout")
def import_dropout(node: Node, inputs: list[Any]) -> Any:
    """Inference: the identity (a served model does not drop)."""
    if len(node.outputs) > 1 and node.outputs[1]:
        raise OnnxError("the mask output of Dropout is not supported")
    return inputs[0]


@register_importer("ConvTranspose")
def import_conv_transpose(node: Node, inputs: list[Any]) -> Tensor:
    if "output_shape" in node.attrs:
        raise OnnxError("the output_shape attribute is not supported; export with pads and output_padding")
    x, w, b = [*inputs, None][:3]
    return F.conv_transpose2d(
        _tensor(x, node), _tensor(w, node, "weight"), b, stride=_pair_attr(node, "strides", 1),
        padding=_padding(node), output_padding=_pair_attr(node, "output_padding", 0),
        groups=int(node.attrs.get("group", 1)), dilation=_pair_attr(node, "dilations", 1))


@register_importer("BatchNormalization")
def import_batch_norm(node: Node, inputs: list[Any]) -> Tensor:
    """Inference form (what PyTorch writes for BatchNorm1d/2d in eval): (x - mean) * scale / sqrt(var +
    eps) + B per channel (axis 1). Written with registry ops on all four, so every input gets its true
    gradient: PyTorch's exporter may hand the same initializer to two of them (an untrained layer's
    running_var is its weight's ones), so none can be treated as a constant. Freeze the running statistics
    (``requires_grad = False``) before fine-tuning."""
    if node.attrs.get("training_mode", 0) or (len(node.outputs) > 1 and any(node.outputs[1:])):
        raise OnnxError("training_mode=1 (batch statistics and running-statistic outputs) is not supported")
    x = _tensor(inputs[0], node)
    if x.ndim < 2:
        raise OnnxError(f"input of shape {x.shape} has no channel axis (N, C, ...)")
    scale, bias, mean, var = (_tensor(v, node, what) for v, what in
                              zip(inputs[1:], ("scale", "B", "mean", "var"), strict=True))
    for what, t in (("scale", scale), ("B", bias), ("mean", mean), ("var", var)):
        if t.shape != (x.shape[1],):
            raise OnnxError(f"{what} of shape {t.shape} does not fit input {x.shape} (want ({x.shape[1]},))")
    shape = (1, -1) + (1,) * (x.ndim - 2)
    gain = scale * (var + float(node.attrs.get("epsilon", 1e-5))) ** -0.5
    return (x - mean.reshape(shape)) * gain.reshape(shape) + bias.reshape(shape)


@register_importer("Gelu")
def import_gelu(node: Node, inputs: list[Any]) -> Tensor:
    return F.gelu(_tensor(inputs[0], node), approximate=node.attrs.get("approximate", "none"))


@register_importer("LeakyRelu")
def import_leaky_relu(node: Node, inputs: list[Any]) -> Tensor:
    return F.leaky_relu(_tensor(inputs[0], node), float(node.attrs.get("alpha", 0.01)))


@register_importer("Elu")
def import_elu(node: Node, inputs: list[Any]) -> Tensor:
    return F.elu(_tensor(inputs[0], node), float(node.attrs.get("alpha", 1.0)))


@register_importer("Softplus")
def import_softplus(node: Node, inputs: list[Any]) -> Tensor:
    """ONNX's log(1 + e^x) has no linear switch: ours with a threshold no finite float32 passes (float32's
    largest, so comparing a float32 input with it does not overflow)."""
    return F.softplus(_tensor(inputs[0], node), threshold=float(np.finfo(np.float32).max))


def _data(v: Any) -> np.ndarray:
    return np.asarray(v.data if isinstance(v, Tensor) else v)


@register_importer("Greater")
def import_greater(node: Node, inputs: list[Any]) -> np.ndarray:
    """A boolean array: a comparison has no gradient, so its result is a constant of the forward."""
    return np.greater(_data(inputs[0]), _data(inputs[1]))


@register_importer("Where")
def import_where(node: Node, inputs: list[Any]) -> Any:
    cond, a, b = inputs
    if isinstance(cond, Tensor) or _data(cond).dtype != np.bool_:
        raise OnnxError("the condition must be boolean")
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        return np.where(cond, a, b)
    return ops.where(_data(cond), _tensor(a, node), _tensor(b, node))


def _extremum(op_type: str, fn: Any, array_fn: Any) -> None:
    @register_importer(op_type)
    def importer(node: Node, inputs: list[Any]) -> Any:
        """Elementwise over any number of inputs, folded pairwise (ties split the gradient, as PyTorch)."""
        if not any(isinstance(v, Tensor) for v in inputs):
            return array_fn.reduce([np.asarray(v) for v in inputs]) if len(inputs) > 1 else inputs[0]
        out = _tensor(inputs[0], node)
        for v in inputs[1:]:
            out = fn(out, _tensor(v, node))
        return out

    importer.__qualname__ = f"import_{op_type}"


_extremum("Max", ops.maximum, np.maximum)
_extremum("Min", ops.minimum, np.minimum)


def _learned(v: Any) -> bool:
    """A value a gradient must reach: a float initializer the loaded model holds as a Parameter."""
    return isinstance(v, Tensor) and v.requires_grad


@register_importer("Clip")
def import_clip(node: Node, inputs: list[Any]) -> Tensor:
    """Bounds from the inputs (opset 11 on; an omitted one is no bound) or, before, the attributes. A
    bound that is a Parameter of the loaded model gets its gradient: min(max(x, low), high) with Where."""
    x = _tensor(inputs[0], node)
    if node.opset < 11:
        low, high = node.attrs.get("min"), node.attrs.get("max")
    else:
        low, high = [*inputs[1:], None, None][:2]
    if _learned(low) or _learned(high):
        out = x
        if low is not None:
            out = ops.where(x.data < _data(low), _tensor(low, node), out)
        if high is not None:
            out = ops.where(out.data > _data(high), _tensor(high, node), out)
        return out
    bounds = [None if v is None else float(_data(v).reshape(())) for v in (low, high)]
    return ops.clip(x, *bounds)


@register_importer("Expand")
def import_expand(node: Node, inputs: list[Any]) -> Any:
    """Broadcasts both ways: the result has the broadcast of the input's shape and the given one."""
    x, shape = inputs
    src = np.shape(x.data if isinstance(x, Tensor) else x)
    try:
        target = np.broadcast_shapes(src, tuple(_ints(shape, "the shape")))
    except ValueError:
        raise OnnxError(f"shape {_ints(shape, 'the shape')} does not broadcast with input {src}") from None
    if not isinstance(x, Tensor):
        return np.broadcast_to(x, target).copy()
    return x if target == src else ops.broadcast_to(x, target)


@register_importer("Pad")
def import_pad(node: Node, inputs: list[Any]) -> Tensor:
    """Constant mode: ONNX's pads (every axis's begin, then every end) as PyTorch's last-axis-first pairs."""
    mode = node.attrs.get("mode", "constant")
    if mode != "constant":
        raise OnnxError(f"mode={mode!r} is not supported (constant padding only)")
    x = _tensor(inputs[0], node)
    pads = _ints(inputs[1], "the pads") if node.opset >= 11 else list(node.attrs.get("pads", []))
    value = inputs[2] if node.opset >= 11 and len(inputs) > 2 else node.attrs.get("value", 0.0)
    axes = _ints(inputs[3], "the axes") if len(inputs) > 3 and inputs[3] is not None else range(x.ndim)
    axes = [a % x.ndim for a in axes]
    if len(pads) != 2 * len(axes):
        raise OnnxError(f"{len(pads)} pads for {len(axes)} axes (want a begin and an end for each)")
    widths = dict.fromkeys(range(x.ndim), (0, 0))
    for k, axis in enumerate(axes):
        widths[axis] = (pads[k], pads[k + len(axes)])
    torch_pad = [w for axis in reversed(range(x.ndim)) for w in widths[axis]]
    if _learned(value):  # a Parameter of the loaded model: its gradient is the sum over the padding
        border = ops.pad(Tensor(np.zeros(x.shape, x.dtype)), torch_pad, value=1.0).data
        return ops.pad(x, torch_pad) + value.reshape(()) * border
    return ops.pad(x, torch_pad, value=0.0 if value is None else float(_data(value).reshape(())))
