"""The ONNX mapping of every built-in op that a model's forward uses: one ``register_exporter`` entry each.

Not mapped: the training losses ``cross_entropy``, ``nll_loss``, ``mse_loss`` and
``binary_cross_entropy_with_logits`` (not part of a served model), the ops only backward rules record
(``scatter``, ``avg_pool2d_backward``, ``conv2d_weight``: gradients, not a model's forward) and
``getitem`` with arrays, ``None`` or ``Ellipsis`` in the index.
"""

from __future__ import annotations

import math

import numpy as np

from microgradcnn.onnx.exporter import Graph
from microgradcnn.onnx.registry import OnnxError, register_exporter
from microgradcnn.tensor import Context

_INT64_MAX = 2**63 - 1


def _unary(op_name: str, op_type: str) -> None:
    @register_exporter(op_name)
    def exporter(g: Graph, ctx: Context, inputs: list[str], out: str) -> None:
        g.node(op_type, inputs, out)

    exporter.__qualname__ = f"export_{op_name}"


for _name, _type in [
    ("add", "Add"), ("sub", "Sub"), ("mul", "Mul"), ("div", "Div"), ("matmul", "MatMul"),
    ("neg", "Neg"), ("exp", "Exp"), ("log", "Log"), ("relu", "Relu"), ("tanh", "Tanh"),
    ("sigmoid", "Sigmoid"), ("erf", "Erf"),
]:
    _unary(_name, _type)  # one node of the same inputs: ONNX broadcasts as NumPy does


def _pads(padding: tuple[int, int]) -> list[int]:
    return [padding[0], padding[1], padding[0], padding[1]]  # ONNX: all begins, then all ends


@register_exporter("conv2d")
def export_conv2d(g: Graph, ctx: Context, inputs: list[str], out: str) -> None:
    a = ctx.attrs
    g.node("Conv", inputs, out, kernel_shape=list(ctx.parents[1].shape[2:]), strides=list(a["stride"]),
           pads=_pads(a["padding"]), dilations=list(a["dilation"]), group=a["groups"])


@register_exporter("conv_transpose2d")
def export_conv_transpose2d(g: Graph, ctx: Context, inputs: list[str], out: str) -> None:
    a = ctx.attrs  # the weight is (C_in, C_out/G, KH, KW), ONNX's ConvTranspose layout
    g.node("ConvTranspose", inputs, out, kernel_shape=list(ctx.parents[1].shape[2:]),
           strides=list(a["stride"]), pads=_pads(a["padding"]), dilations=list(a["dilation"]),
           group=a["groups"], output_padding=list(a["output_padding"]))


@register_exporter("broadcast_to")
def export_broadcast_to(g: Graph, ctx: Context, inputs: list[str], out: str) -> None:
    g.node("Expand", [inputs[0], g.constant(list(ctx.attrs["shape"]), "shape")], out)


@register_exporter("max_pool2d")
def export_max_pool2d(g: Graph, ctx: Context, inputs: list[str], out: str) -> None:
    a = ctx.attrs
    g.node("MaxPool", inputs, out, kernel_shape=list(a["kernel_size"]), strides=list(a["stride"]),
           pads=_pads(a["padding"]))


@register_exporter("avg_pool2d")
def export_avg_pool2d(g: Graph, ctx: Context, inputs: list[str], out: str) -> None:
    a = ctx.attrs
    g.node("AveragePool", inputs, out, kernel_shape=list(a["kernel_size"]), strides=list(a["stride"]),
           pads=_pads(a["padding"]), count_include_pad=1)  # the padding zeros count, as ours and PyTorch's


@register_exporter("linear")
def export_linear(g: Graph, ctx: Context, inputs: list[str], out: str) -> None:
    if ctx.parents[0].ndim == 2:  # Gemm, as PyTorch writes nn.Linear: Y = X W^T + b
        g.node("Gemm", inputs, out, transB=1)
        return
    wt = g.node("Transpose", [inputs[1]], perm=[1, 0])
    if len(inputs) == 2:
        g.node("MatMul", [inputs[0], wt], out)
    else:
        g.node("Add", [g.node("MatMul", [inputs[0], wt]), inputs[2]], out)


@register_exporter("pow")
def export_pow(g: Graph, ctx: Context, inputs: list[str], out: str) -> None:
    exponent = g.constant(ctx.attrs["exponent"], "exponent", dtype=ctx.parents[0].dtype)
    g.node("Pow", [inputs[0], exponent], out)


@register_exporter("rpow")
def export_rpow(g: Graph, ctx: Context, inputs: list[str], out: str) -> None:
    base = g.constant(ctx.attrs["base"], "base", dtype=ctx.parents[0].dtype)
    g.node("Pow", [base, inputs[0]], out)


@register_exporter("softmax")
def export_softmax(g: Graph, ctx: Context, inputs: list[str], out: str) -> None:
    g.node("Softmax", inputs, out, axis=ctx.attrs["axis"])


@register_exporter("log_softmax")
def export_log_softmax(g: Graph, ctx: Context, inputs: list[str], out: str) -> None:
    g.node("LogSoftmax", inputs, out, axis=ctx.attrs["axis"])


@register_exporter("transpose")
def export_transpose(g: Graph, ctx: Context, inputs: list[str], out: str) -> None:
    g.node("Transpose", inputs, out, perm=list(ctx.attrs["axes"]))


def reduce(g: Graph, op_type: str, x: str, axes: tuple[int, ...] | None, keepdims: bool, out: str) -> None:
    """A Reduce* node over ``axes`` (None: all). Its axes are an input from opset 18 (ReduceSum: 13)."""
    keep = int(bool(keepdims))
    if axes is None:
        g.node(op_type, [x], out, keepdims=keep)
    elif op_type == "ReduceSum" or g.opset >= 18:
        g.node(op_type, [x, g.constant(list(axes), "axes")], out, keepdims=keep)
    else:
        g.node(op_type, [x], out, axes=list(axes), keepdims=keep)


def _reduction(op_name: str, op_type: str) -> None:
    @register_exporter(op_name)
    def exporter(g: Graph, ctx: Context, inputs: list[str], out: str) -> None:
        axes = ctx.attrs["axis"]
        if axes == ():  # a reduction over no axes (a 0-d input) is the identity
            g.node("Identity", inputs, out)
            return
        reduce(g, op_type, inputs[0], axes, ctx.attrs["keepdims"], out)

    exporter.__qualname__ = f"export_{op_name}"


for _name, _type in [("sum", "ReduceSum"), ("mean", "ReduceMean"), ("max", "ReduceMax")]:
    _reduction(_name, _type)


@register_exporter("reshape")
def export_reshape(g: Graph, ctx: Context, inputs: list[str], out: str) -> None:
    """Flatten for ``(N, ...) -> (N, -1)`` (what PyTorch writes for nn.Flatten), else Reshape. Under
    dynamic_batch a target that keeps the batch axis says 0 ("as the input's") there, never the example's
    batch size, and -1 for the product of the rest."""
    src, target = ctx.parents[0].shape, tuple(ctx.attrs["shape"])
    resolved = tuple(s if s != -1 else math.prod(src) // max(1, -math.prod(target)) for s in target)
    keeps_batch = len(src) >= 1 and len(target) >= 1 and resolved[0] == src[0]
    if keeps_batch and len(target) == 2 and len(src) >= 2:
        g.node("Flatten", inputs, out, axis=1)
        return
    shape = [-1 if t == -1 else r for t, r in zip(target, resolved, strict=True)]
    if g.dynamic_batch and keeps_batch:
        shape[0] = 0
        if len(shape) > 1 and -1 not in shape:  # let the runtime work out one axis, never the batch
            shape[-1] = -1
    g.node("Reshape", [inputs[0], g.constant(shape, "shape")], out)


# ---- activations and batch statistics (ops/activation.py, ops/norm.py) -------------------------------------
_SQRT1_2 = 1.0 / math.sqrt(2.0)


@register_exporter("leaky_relu")
def export_leaky_relu(g: Graph, ctx: Context, inputs: list[str], out: str) -> None:
    g.node("LeakyRelu", inputs, out, alpha=float(ctx.attrs["negative_slope"]))


@register_exporter("elu")
def export_elu(g: Graph, ctx: Context, inputs: list[str], out: str) -> None:
    g.node("Elu", inputs, out, alpha=float(ctx.attrs["alpha"]))


@register_exporter("gelu")
def export_gelu(g: Graph, ctx: Context, inputs: list[str], out: str) -> None:
    """The exact (erf) gelu: one Gelu node from opset 20, before it x * (erf(x / sqrt 2) + 1) / 2."""
    if g.opset >= 20:
        g.node("Gelu", inputs, out)
        return
    dtype = ctx.parents[0].dtype
    erf = g.node("Erf", [g.node("Mul", [inputs[0], g.constant(_SQRT1_2, "inv_sqrt2", dtype=dtype)])])
    cdf = g.node("Mul", [g.node("Add", [erf, g.constant(1.0, "one", dtype=dtype)]),
                         g.constant(0.5, "half", dtype=dtype)])
    g.node("Mul", [inputs[0], cdf], out)


@register_exporter("softplus")
def export_softplus(g: Graph, ctx: Context, inputs: list[str], out: str) -> None:
    """Softplus(beta x) / beta, and x itself where beta x > threshold (ours and PyTorch's switch): ONNX's
    Softplus has neither beta nor threshold, so both are written around it."""
    dtype, beta, threshold = ctx.parents[0].dtype, ctx.attrs["beta"], ctx.attrs["threshold"]
    x = inputs[0]
    z = x if beta == 1.0 else g.node("Mul", [x, g.constant(beta, "beta", dtype=dtype)])
    soft = g.node("Softplus", [z])
    if beta != 1.0:
        soft = g.node("Div", [soft, g.constant(beta, "beta", dtype=dtype)])
    linear = g.node("Greater", [z, g.constant(threshold, "threshold", dtype=dtype)])
    g.node("Where", [linear, x, soft], out)


@register_exporter("batch_norm")
def export_batch_norm(g: Graph, ctx: Context, inputs: list[str], out: str) -> None:
    """The batch-statistics op, which an eval-mode export records only for ``track_running_stats=False``
    (eval-mode BatchNorm with running statistics records mul and add). Written out, as ours: the mean and
    the biased variance over N and the spatial axes, (x - mean) / sqrt(var + eps), then * weight + bias.
    Not BatchNormalization with training_mode=1: that form also outputs running statistics and ONNX
    Runtime's inference builds do not run it."""
    x, ndim, dtype = inputs[0], ctx.parents[0].ndim, ctx.parents[0].dtype
    axes = (0, *range(2, ndim))
    mean = g.fresh("batch_mean")
    reduce(g, "ReduceMean", x, axes, True, mean)
    centered = g.node("Sub", [x, mean])
    var = g.fresh("batch_var")
    reduce(g, "ReduceMean", g.node("Mul", [centered, centered]), axes, True, var)
    std = g.node("Sqrt", [g.node("Add", [var, g.constant(ctx.attrs["eps"], "eps", dtype=dtype)])])
    if len(inputs) == 1:
        g.node("Div", [centered, std], out)
        return
    shape = g.constant([1, -1] + [1] * (ndim - 2), "channel_shape")
    weight, bias = (g.node("Reshape", [p, shape]) for p in inputs[1:3])
    g.node("Add", [g.node("Mul", [g.node("Div", [centered, std]), weight]), bias], out)


@register_exporter("getitem")
def export_getitem(g: Graph, ctx: Context, inputs: list[str], out: str) -> None:
    """Ints and slices (NumPy basic indexing without None or Ellipsis): one Slice, then a Squeeze of the
    axes an int removed. Open slice ends stay open, so a slice over the batch axis keeps it dynamic."""
    index = ctx.attrs["index"]
    items = index if isinstance(index, tuple) else (index,)
    starts, ends, axes, steps, squeeze = [], [], [], [], []
    for axis, item in enumerate(items):
        if isinstance(item, slice):
            step = 1 if item.step is None else int(item.step)
            if item == slice(None):
                continue
            start = item.start if item.start is not None else (0 if step > 0 else -1)
            stop = item.stop if item.stop is not None else (_INT64_MAX if step > 0 else -_INT64_MAX - 1)
            starts.append(int(start)), ends.append(int(stop)), axes.append(axis), steps.append(step)
        elif isinstance(item, int) or (hasattr(item, "__index__") and not hasattr(item, "shape")):
            i = int(item)
            end = i + 1 if i != -1 else _INT64_MAX  # -1 + 1 would be 0, the start, not the end
            starts.append(i), ends.append(end), axes.append(axis), steps.append(1), squeeze.append(axis)
        else:
            raise OnnxError(
                f"onnx.export: op 'getitem' has no ONNX mapping for index {index!r} (ints and slices only)"
            )
    x = inputs[0]
    if not axes:
        g.node("Identity", [x], out)
        return
    consts = [g.constant(v, hint) for v, hint in
              [(starts, "starts"), (ends, "ends"), (axes, "axes"), (steps, "steps")]]
    if not squeeze:
        g.node("Slice", [x, *consts], out)
        return
    g.node("Squeeze", [g.node("Slice", [x, *consts]), g.constant(squeeze, "axes")], out)


# ---- the tensor ops (ops/combine.py and the newer elementwise, shape and reduce ops) -----------------------
# min, minimum, squeeze, unsqueeze, permute and expand record neg, max, maximum, reshape, transpose and
# broadcast_to: mapped above.
_unary("abs", "Abs")
_unary("sqrt", "Sqrt")
_unary("maximum", "Max")  # NaN propagates in both
_reduction("logsumexp", "ReduceLogSumExp")


@register_exporter("cat")
def export_cat(g: Graph, ctx: Context, inputs: list[str], out: str) -> None:
    g.node("Concat", inputs, out, axis=ctx.attrs["axis"])


@register_exporter("stack")
def export_stack(g: Graph, ctx: Context, inputs: list[str], out: str) -> None:
    axes = g.constant([ctx.attrs["axis"]], "axes")
    g.node("Concat", [g.node("Unsqueeze", [x, axes]) for x in inputs], out, axis=ctx.attrs["axis"])


@register_exporter("where")
def export_where(g: Graph, ctx: Context, inputs: list[str], out: str) -> None:
    g.node("Where", [g.constant(ctx.attrs["cond"], "cond", dtype=np.bool_), *inputs], out)


@register_exporter("clip")
def export_clip(g: Graph, ctx: Context, inputs: list[str], out: str) -> None:
    dtype, a = ctx.parents[0].dtype, ctx.attrs
    # "" omits an optional input: no bound on that side
    bounds = ["" if a[k] is None else g.constant(a[k], k, dtype=dtype) for k in ("min", "max")]
    g.node("Clip", [inputs[0], *bounds], out)


@register_exporter("flip")
def export_flip(g: Graph, ctx: Context, inputs: list[str], out: str) -> None:
    axes = list(ctx.attrs["axes"])
    if not axes:
        g.node("Identity", inputs, out)
        return
    n = len(axes)
    consts = [g.constant(v, hint) for v, hint in
              [([-1] * n, "starts"), ([-_INT64_MAX - 1] * n, "ends"), (axes, "axes"), ([-1] * n, "steps")]]
    g.node("Slice", [inputs[0], *consts], out)


@register_exporter("pad")
def export_pad(g: Graph, ctx: Context, inputs: list[str], out: str) -> None:
    widths = ctx.attrs["widths"]  # ONNX's pads: every axis's begin, then every end; negative ones crop
    pads = g.constant([lo for lo, _ in widths] + [hi for _, hi in widths], "pads")
    value = g.constant(ctx.attrs["value"], "value", dtype=ctx.parents[0].dtype)
    g.node("Pad", [inputs[0], pads, value], out, mode="constant")


def _moment(op_name: str, root: bool) -> None:
    @register_exporter(op_name)
    def exporter(g: Graph, ctx: Context, inputs: list[str], out: str) -> None:
        """sum((x - mean)^2) / (n - ddof), two passes as ours; std takes the Sqrt of it."""
        axes, dtype = ctx.attrs["axis"], ctx.parents[0].dtype
        n = math.prod(ctx.parents[0].shape[a] for a in axes)
        dof = g.constant(max(n - ctx.attrs["ddof"], 0), "dof", dtype=dtype)
        if axes == ():  # a 0-d input: x - x = 0 over one element, divided by the degrees of freedom
            d = g.node("Sub", [inputs[0], inputs[0]])
            g.node("Sqrt" if root else "Identity", [g.node("Div", [d, dof])], out)
            return
        mean = g.fresh("mean")
        reduce(g, "ReduceMean", inputs[0], axes, True, mean)
        d = g.node("Sub", [inputs[0], mean])
        total = g.fresh("sum_sq")
        reduce(g, "ReduceSum", g.node("Mul", [d, d]), axes, ctx.attrs["keepdims"], total)
        if root:
            g.node("Sqrt", [g.node("Div", [total, dof])], out)
        else:
            g.node("Div", [total, dof], out)

    exporter.__qualname__ = f"export_{op_name}"


_moment("var", root=False)
_moment("std", root=True)
