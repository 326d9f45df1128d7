"""Transposed 2-D convolution (conv_transpose2d) and conv2d's weight gradient as an op (conv2d_weight).

These are the ops conv2d's gradients are made of: conv2d's input gradient is a conv_transpose2d of the
output gradient with the same weight, its weight gradient a conv2d_weight. Each backward rule here is made of
conv2d, conv_transpose2d and conv2d_weight again (through ``Function.call``), so the three close under
differentiation and are differentiable to any order. Derivation: docs/ops.md#conv_transpose2d.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from microgradcnn._checks import check_int
from microgradcnn.ops import conv  # conv.Conv2dFn is read at call time: conv.py's backward uses these ops
from microgradcnn.ops.linalg import add_bias
from microgradcnn.ops.window import (
    IntPair,
    col2im,
    fill_columns,
    im2col,
    image_chunks,
    int_pair,
    out_size,
    padded_input,
    window_slices,
)
from microgradcnn.tensor import Array, Context, Function, Tensor

Pair = tuple[int, int]


def needs_grad(ctx: Any) -> tuple[bool, ...]:
    """Which positional inputs want a gradient: the engine's ``ctx.needs_input_grad``.

    A Context recorded by an engine that does not set it answers from its parents' ``requires_grad``; a
    bare kernel run (``Function.call`` on arrays) gets ``()``: nothing is saved for a backward there.
    """
    needs = getattr(ctx, "needs_input_grad", None)
    if needs is None:
        return tuple(p.requires_grad for p in ctx.parents)
    return needs


def transposed_size(size: int, kernel: int, stride: int, padding: int, output_padding: int,
                    dilation: int) -> int:
    """conv_transpose2d's output length along one axis, PyTorch's rule:
    ``(size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1``."""
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


# Below this input width conv_transpose2d's adds run with the batch axis innermost: the second conv of a
# LeNet (8-wide rows) takes 0.6-0.8x the time from batch 16 up; at 16-wide rows (CIFAR's second conv) the
# kernel gains ~10 % but the training step none, the transposed gradient costing the pool before it a copy.
_SHORT_ROW = 16


def conv_transpose2d_kernel(x: Array, w: Array, out_shape: tuple[int, int, int, int], stride: Pair,
                            padding: Pair, dilation: Pair, groups: int) -> Array:
    """conv_transpose2d without bias on arrays: x (N, C_in, H, W), w (C_in, C_out/G, KH, KW) -> out_shape.

    Each input pixel's columns W^T @ x (one GEMM per group over the whole batch), added back onto the output
    positions a conv2d of that output would read them from (col2im). This is also conv2d's input gradient.

    Short rows (x narrower than ``_SHORT_ROW``, groups=1) work with the batch axis innermost: x copied to
    (C_in, H, W, N), the columns (C_out*KH*KW, H*W*N) and the output built as (C_out, OH, OW, N) and returned
    as an (N, C_out, OH, OW) view of it. Each kernel offset's add then runs over W*N contiguous elements at a
    time instead of one W-long row. Wider rows keep x's (C_in, N, H, W) order and ``col2im``: there the
    adds gain less than the transposed output costs its consumer.
    """
    n, c_in, h, wd = x.shape
    _, _, kh, kw = w.shape
    per_group = c_in // groups
    if groups != 1 or wd >= _SHORT_ROW:
        x2 = x.transpose(1, 0, 2, 3).reshape(groups, per_group, n * h * wd)  # free in a conv2d output's order
        cols = np.matmul(w.reshape(groups, per_group, -1).transpose(0, 2, 1), x2)  # (G, C_out/G*KH*KW, N*H*W)
        return col2im(cols, out_shape, (kh, kw), (h, wd), stride, padding, dilation)
    _, c_out, oh, ow = out_shape
    ph, pw = padding
    x2 = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).reshape(c_in, h * wd * n)
    parts = np.dot(w.reshape(c_in, -1).T, x2).reshape(c_out, kh * kw, h, wd, n)
    planes = np.zeros((c_out, oh + 2 * ph, ow + 2 * pw, n), dtype=parts.dtype)
    for k, (rows, cols) in enumerate(window_slices((kh, kw), (h, wd), stride, dilation)):
        planes[:, rows, cols, :] += parts[:, k]
    return planes[:, ph : ph + oh, pw : pw + ow, :].transpose(3, 0, 1, 2)


def conv2d_weight_kernel(cols: Array, grad: Array, weight_size: tuple[int, ...], groups: int) -> Array:
    """conv2d's weight gradient from the input's im2col columns (G, C/G*KH*KW, N*OH*OW) and grad (N, OC, OH,
    OW): the sum over every image and output position of grad x patch, one GEMM per group."""
    oc = grad.shape[1]
    g2 = grad.transpose(1, 0, 2, 3).reshape(groups, oc // groups, -1)  # free in a conv2d output's order
    if groups == 1:
        # computed transposed, cols @ g2^T: OpenBLAS runs this operand order ~1.4x faster than g2 @ cols^T
        # (the long N*OH*OW axis is then the inner one of both operands as stored)
        return np.dot(cols[0], g2[0].T).T.reshape(weight_size)
    return np.matmul(g2, cols.transpose(0, 2, 1)).reshape(weight_size)


def conv2d_weight_from_input(x: Array, grad: Array, weight_size: tuple[int, ...], *, stride: Pair,
                             padding: Pair, dilation: Pair, groups: int) -> Array:
    """conv2d's weight gradient on arrays from the input x (N, C, H, W) itself and grad (N, OC, OH, OW).

    groups=1 copies x's patches a chunk of images at a time (``window.image_chunks``) into one reused
    buffer and sums the chunks' products, so neither a whole batch's patches nor their memory is needed;
    a batch that fits in one chunk (and grouped convolutions) is one ``conv2d_weight_kernel`` call.
    """
    n, oc, oh, ow = grad.shape
    kernel, per = tuple(weight_size[2:]), oh * ow
    k = x.shape[1] * kernel[0] * kernel[1]
    chunks = image_chunks(n, (k * x.itemsize + oc * grad.itemsize) * per)
    if groups != 1 or len(chunks) <= 1:
        cols = im2col(x, kernel, (oh, ow), stride, padding, dilation, groups)
        return conv2d_weight_kernel(cols, grad, weight_size, groups)
    xp = padded_input(x, padding)
    g2 = grad.transpose(1, 0, 2, 3).reshape(oc, n * per)  # free in a conv2d output's order
    buffer = np.empty((k, chunks[0][1] * per), dtype=x.dtype)
    total = None
    for first, count in chunks:
        cols = buffer[:, : count * per]
        fill_columns(cols, xp, kernel, (oh, ow), stride, dilation, first, count)
        part = np.dot(cols, g2[:, first * per : (first + count) * per].T)  # (K, OC): the fast order, as above
        total = part if total is None else np.add(total, part, out=total)
    return total.T.reshape(weight_size)


class ConvTranspose2dFn(Function):
    """out = the adjoint of conv2d applied to x: each input pixel spreads x * weight over a KH x KW window.

    out[n, g*C_out/G + o, s*p + d*i - pad, s*q + d*j - pad] += x[n, g*C_in/G + c, p, q] * w[g*C_in/G + c,
    o, i, j]. Backward: dx = conv2d(grad, w) (its first H x W outputs), dw = conv2d_weight(grad, x) (the
    roles of conv2d's input and output gradient swapped), db = grad summed over N, H, W; all with the same
    stride, padding, dilation and groups.
    """

    name = "conv_transpose2d"
    differentiable_backward = True

    @staticmethod
    def forward(
        ctx: Context,
        x: Array,
        w: Array,
        b: Array | None = None,
        *,
        stride: Pair,
        padding: Pair,
        output_padding: Pair,
        dilation: Pair,
        groups: int,
    ) -> Array:
        n, _, h, wd = x.shape
        _, c_out_g, kh, kw = w.shape
        oh = transposed_size(h, kh, stride[0], padding[0], output_padding[0], dilation[0])
        ow = transposed_size(wd, kw, stride[1], padding[1], output_padding[1], dilation[1])
        out = conv_transpose2d_kernel(x, w, (n, c_out_g * groups, oh, ow), stride, padding, dilation, groups)
        if b is not None:
            out = add_bias(out, b[:, None, None])
        ctx.save_for_backward(x, w)
        return out

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, ...]:
        x, w = ctx.saved_tensors
        needs = needs_grad(ctx)
        geometry = _geometry(ctx.attrs)
        # output_padding at or above the stride (allowed below the dilation) adds output rows from which a
        # conv2d reads windows starting past x's last row: they received no x, so they give it no gradient
        dx = _first(conv.Conv2dFn.call(grad, w, **geometry), x.shape) if needs[0] else None
        dw = Conv2dWeightFn.call(grad, x, weight_size=tuple(w.shape), **geometry) if needs[1] else None
        if len(needs) == 2:
            return dx, dw
        return dx, dw, (grad.sum(axis=(0, 2, 3)) if needs[2] else None)


class Conv2dWeightFn(Function):
    """conv2d's weight gradient as an op of (x, grad_output): dw[o, c, i, j] = sum over n, p, q of
    grad_output[n, o, p, q] * x[n, g*C/G + c, s*p + d*i - pad, s*q + d*j - pad] (o in group g).

    Bilinear in its two inputs. Backward, for an upstream gradient G of the weight's shape:
    d/dx = conv_transpose2d(grad_output, G) (with the output_padding that restores x's size) and
    d/dgrad_output = conv2d(x, G) (its first OH x OW outputs); same stride, padding, dilation and groups.
    """

    name = "conv2d_weight"
    differentiable_backward = True

    @staticmethod
    def forward(
        ctx: Context,
        x: Array,
        grad_output: Array,
        *,
        weight_size: tuple[int, int, int, int],
        stride: Pair,
        padding: Pair,
        dilation: Pair,
        groups: int,
    ) -> Array:
        ctx.save_for_backward(x, grad_output)
        return conv2d_weight_from_input(x, grad_output, weight_size, stride=stride, padding=padding,
                                        dilation=dilation, groups=groups)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, ...]:
        x, grad_output = ctx.saved_tensors
        needs = needs_grad(ctx)
        geometry = _geometry(ctx.attrs)
        dx = dgy = None
        if needs[0]:
            extra = restoring_padding(x.shape, ctx.attrs["weight_size"], grad_output.shape, geometry)
            dx = ConvTranspose2dFn.call(grad_output, grad, output_padding=extra, **geometry)
        if needs[1]:
            # x may hold rows past grad_output's last window (conv_transpose2d's weight gradient passes its
            # output gradient as x): only the windows grad_output has get a gradient
            dgy = _first(conv.Conv2dFn.call(x, grad, **geometry), grad_output.shape)
        return dx, dgy


def restoring_padding(x_shape: tuple[int, ...], weight_size: tuple[int, ...], out_shape: tuple[int, ...],
                      geometry: dict[str, Any]) -> Pair:
    """The output_padding with which conv_transpose2d of a conv2d's (N, OC, OH, OW) output gives back the
    conv2d input's shape ``x_shape``.

    conv2d reads no window from the last (H + 2p - d(k-1) - 1) % s rows (and columns) of its input:
    output_padding gives them back (as zeros), so the input gradient has x's shape.
    """
    (sh, sw), (ph, pw), (dh, dw) = geometry["stride"], geometry["padding"], geometry["dilation"]
    (kh, kw), (oh, ow) = weight_size[2:], out_shape[2:]
    return (x_shape[2] + 2 * ph - dh * (kh - 1) - 1 - (oh - 1) * sh,
            x_shape[3] + 2 * pw - dw * (kw - 1) - 1 - (ow - 1) * sw)


def _first(t: Any, shape: tuple[int, ...]) -> Any:
    """``t`` (N, C, H', W') cut to its first ``shape[2:]`` rows and columns (``t`` itself when it fits)."""
    h, w = shape[2:]
    return t if t.shape[2:] == (h, w) else t[:, :, :h, :w]


def _geometry(attrs: dict[str, Any]) -> dict[str, Any]:
    """The stride, padding, dilation and groups that conv2d and both of these ops share."""
    return {"stride": attrs["stride"], "padding": attrs["padding"], "dilation": attrs["dilation"],
            "groups": attrs["groups"]}


def _tensor(value: Any) -> Tensor:
    return value if isinstance(value, Tensor) else Tensor(value)


def check_output_padding(output_padding: Pair, stride: Pair, dilation: Pair, where: str) -> None:
    """PyTorch's rule: each axis's output_padding is smaller than its stride or its dilation.

    Raises:
        ValueError: naming ``where`` and the three pairs, when an axis breaks it.
    """
    for extra, s, d in zip(output_padding, stride, dilation, strict=True):
        if extra >= s and extra >= d:
            raise ValueError(f"{where}: output_padding {output_padding} must be smaller than either stride "
                             f"{stride} or dilation {dilation} in each axis")


def conv_transpose2d(
    x: Any,
    weight: Any,
    bias: Any = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    output_padding: IntPair = 0,
    groups: int = 1,
    dilation: IntPair = 1,
) -> Tensor:
    """Transposed 2-D convolution, as ``torch.nn.functional.conv_transpose2d`` (the gradient of conv2d
    with respect to its input, used as a layer: it upsamples by ``stride``).

    Shapes: x (N, C_in, H, W), weight (C_in, C_out/groups, KH, KW), bias (C_out,) or None -> (N, C_out, OH,
    OW) with ``OH = (H - 1)*stride - 2*padding + dilation*(KH - 1) + output_padding + 1`` (OW likewise).
    ``stride``, ``padding``, ``output_padding`` and ``dilation`` are an int or an (h, w) pair;
    ``output_padding`` adds rows/columns at the bottom/right (of the sizes a conv2d with this stride maps
    to the same H) and must be smaller than the stride or the dilation of its axis.

    Raises:
        ValueError: naming both shapes, when x or weight is not 4-d or their channels and ``groups``
            disagree; naming the values, for an output_padding too large, a bias that is not (C_out,) or
            no output position left (padding too large).
        TypeError: for a non-integer stride, padding, output_padding, dilation or groups.

    >>> x = Tensor(np.ones((1, 1, 2, 2)))
    >>> conv_transpose2d(x, Tensor(np.ones((1, 1, 2, 2))), stride=2).data[0, 0]
    array([[1., 1., 1., 1.],
           [1., 1., 1., 1.],
           [1., 1., 1., 1.],
           [1., 1., 1., 1.]])
    """
    op = "conv_transpose2d"
    x, weight = _tensor(x), _tensor(weight)
    xs, ws = x.data.shape, weight.data.shape
    if len(xs) != 4 or len(ws) != 4:
        raise ValueError(f"{op}: x {xs} and weight {ws} must be 4-d: (N, C_in, H, W) and "
                         "(C_in, C_out/groups, KH, KW)")
    groups = check_int(groups, "groups", op, minimum=1)
    if xs[1] != ws[0] or ws[0] % groups:
        raise ValueError(f"{op}: x {xs} and weight {ws} disagree with groups={groups}: want C_in ({xs[1]}) "
                         f"= weight.shape[0] ({ws[0]}), divisible by groups")
    s = int_pair(stride, "stride", op, 1)
    p = int_pair(padding, "padding", op, 0)
    extra = int_pair(output_padding, "output_padding", op, 0)
    d = int_pair(dilation, "dilation", op, 1)
    check_output_padding(extra, s, d, op)
    size = tuple(transposed_size(xs[2 + k], ws[2 + k], s[k], p[k], extra[k], d[k]) for k in (0, 1))
    if min(size) < 1:
        raise ValueError(f"{op}: no output left: input {xs[2:]} of x {xs} with kernel {ws[2:]}, stride {s}, "
                         f"dilation {d} and output_padding {extra} gives {size} after padding {p}")
    attrs = {"stride": s, "padding": p, "output_padding": extra, "dilation": d, "groups": groups}
    if bias is None:
        return ConvTranspose2dFn.apply(x, weight, **attrs)
    bias = _tensor(bias)
    c_out = ws[1] * groups
    if bias.data.shape != (c_out,):
        raise ValueError(f"{op}: bias {bias.data.shape} must be (C_out,) = ({c_out},) for weight {ws} "
                         f"and groups={groups}")
    return ConvTranspose2dFn.apply(x, weight, bias, **attrs)


def conv2d_weight(
    input: Any,
    weight_size: Sequence[int],
    grad_output: Any,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    groups: int = 1,
) -> Tensor:
    """The gradient of ``conv2d(input, weight, ...)`` with respect to a weight of shape ``weight_size``, given
    the output's gradient ``grad_output``, as ``torch.nn.grad.conv2d_weight``; differentiable in both.

    Shapes: input (N, C, H, W), weight_size (OC, C/groups, KH, KW), grad_output (N, OC, OH, OW) with OH, OW
    conv2d's output size for these arguments -> (OC, C/groups, KH, KW).

    Raises:
        ValueError: naming the shapes, when input or grad_output is not 4-d or disagrees with weight_size,
            groups or conv2d's output size; naming the value, for a weight_size entry below 1.
        TypeError: for a weight_size that is not 4 ints, or a non-integer stride, padding, dilation or groups.

    >>> x = Tensor(np.arange(9.0).reshape(1, 1, 3, 3))
    >>> conv2d_weight(x, (1, 1, 2, 2), np.ones((1, 1, 2, 2))).data[0, 0]
    array([[ 8., 12.],
           [20., 24.]])
    """
    op = "conv2d_weight"
    x, gy = _tensor(input), _tensor(grad_output)
    if isinstance(weight_size, str | bytes) or not isinstance(weight_size, Sequence) or len(weight_size) != 4:
        raise TypeError(f"{op}: weight_size must be 4 ints (OC, C/groups, KH, KW), got {weight_size!r}")
    size = tuple(check_int(v, f"weight_size entry of {tuple(weight_size)!r}", op, minimum=1)
                 for v in weight_size)
    xs, gs = x.data.shape, gy.data.shape
    if len(xs) != 4 or len(gs) != 4:
        raise ValueError(f"{op}: input {xs} and grad_output {gs} must be 4-d: (N, C, H, W) and "
                         "(N, OC, OH, OW)")
    groups = check_int(groups, "groups", op, minimum=1)
    s = int_pair(stride, "stride", op, 1)
    p = int_pair(padding, "padding", op, 0)
    d = int_pair(dilation, "dilation", op, 1)
    if xs[0] != gs[0] or xs[1] != size[1] * groups or gs[1] != size[0] or size[0] % groups:
        raise ValueError(f"{op}: input {xs}, grad_output {gs} and weight_size {size} disagree with "
                         f"groups={groups}: want equal N, C = weight_size[1] * groups, OC = weight_size[0] "
                         "divisible by groups")
    out = tuple(out_size(xs[2 + k], size[2 + k], s[k], p[k], d[k]) for k in (0, 1))
    if gs[2:] != out:
        raise ValueError(f"{op}: grad_output {gs} must have conv2d's output size {out} for input {xs}, "
                         f"kernel {size[2:]}, stride {s}, padding {p} and dilation {d}")
    return Conv2dWeightFn.apply(x, gy, weight_size=size, stride=s, padding=p, dilation=d, groups=groups)
