"""2-D convolution (conv2d), NCHW as in PyTorch: im2col and batched matmuls."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from microgradcnn._checks import check_int
from microgradcnn.ops import window
from microgradcnn.ops.conv_transpose import (
    Conv2dWeightFn,
    ConvTranspose2dFn,
    conv2d_weight_from_input,
    conv2d_weight_kernel,
    restoring_padding,
)
from microgradcnn.ops.linalg import add_bias, bias_fits_in_place
from microgradcnn.ops.window import IntPair, im2col, int_pair, out_size
from microgradcnn.tensor import Array, Context, Function, Tensor

# Patches up to this size are kept from forward for dW (cheaper than copying them again); bigger ones are
# made again in backward, a chunk at a time: a batch-256 CIFAR-shaped CNN would otherwise hold 66 MB of them
# (KH*KW copies of each conv's input) from forward to backward, more than PyTorch's whole step.
_KEEP_PATCHES_BYTES = 16 << 20


def _patches_times_weights(x: Array, w: Array, b: Array | None, out_hw: tuple[int, int],
                           geometry: tuple[tuple[int, int], ...], keep: bool) -> tuple[Array, Array | None]:
    """groups=1 conv2d on arrays: out (OC, N*OH*OW) = w2 @ cols (+ bias), and cols (1, C*KH*KW, N*OH*OW)
    or None.

    The columns are filled a chunk of images at a time (``window.image_chunks``), and each chunk multiplied
    into its block of output columns, the bias added, while both are still in cache. With ``keep`` they are
    the whole batch's im2col, returned for dW; without, one chunk's buffer reused by every chunk.
    """
    stride, padding, dilation = geometry
    n, c = x.shape[:2]
    oc, _, kh, kw = w.shape
    k, per = c * kh * kw, out_hw[0] * out_hw[1]
    w2 = w.reshape(oc, k)
    dtype = np.result_type(x, w)
    chunks = window.image_chunks(n, (k * x.itemsize + oc * dtype.itemsize) * per)
    if len(chunks) <= 1:  # one copy and one product, without the loop's slicing (~5 us at batch 1)
        cols = im2col(x, (kh, kw), out_hw, stride, padding, dilation)
        out = np.dot(w2, cols[0])
        return (out if b is None else add_bias(out, b[:, None])), cols if keep else None
    xp = window.padded_input(x, padding)
    out = np.empty((oc, n * per), dtype=dtype)
    in_place_bias = b is not None and bias_fits_in_place(out, b)
    width = n * per if keep else chunks[0][1] * per
    cols = np.empty((k, width), dtype=x.dtype)
    for first, count in chunks:
        columns = slice(first * per, (first + count) * per)
        patches = cols[:, columns] if keep else cols[:, : count * per]
        window.fill_columns(patches, xp, (kh, kw), out_hw, stride, dilation, first, count)
        block = out[:, columns]
        np.matmul(w2, patches, out=block)
        if in_place_bias:
            block += b[:, None]  # while the block is still in cache
    if b is not None and not in_place_bias:
        out = add_bias(out, b[:, None])
    return out, cols[None] if keep else None


@functools.lru_cache(maxsize=8)
def _ones(size: int, dtype: Any) -> Array:
    ones = np.ones(size, dtype=dtype)
    ones.setflags(write=False)
    return ones


class Conv2dFn(Function):
    """out[n, o] = bias[o] + sum over c, i, j of weight[o, c, i, j] * x[n, c, s*p + d*i, s*q + d*j].

    im2col: the patches are copied once into ``cols`` (G, C/G*KH*KW, N*OH*OW) and multiplied by the weight
    as (G, OC/G, C/G*KH*KW) in one GEMM per group (one ``np.dot`` when groups=1): the BLAS call sees the
    whole batch, instead of one small product per image that stalls on thread hand-offs. The result is
    laid out (OC, N, OH, OW) and returned as an (N, OC, OH, OW) view of it, so no transpose is copied;
    backward reads its gradient in that order for free when it comes back in it. Backward is made of ops:
    dx is a ``conv_transpose2d`` of grad with the same weight, dW a ``conv2d_weight`` of x and grad (in an
    ordinary backward, its kernel on the forward's saved patches), so conv2d differentiates to any order.
    Derivation: docs/ops.md#conv2d.
    """

    name = "conv2d"
    differentiable_backward = True

    @staticmethod
    def forward(
        ctx: Context,
        x: Array,
        w: Array,
        b: Array | None = None,
        *,
        stride: tuple[int, int],
        padding: tuple[int, int],
        dilation: tuple[int, int],
        groups: int,
    ) -> Array:
        n, _, h, wd = x.shape
        oc, _, kh, kw = w.shape
        oh = out_size(h, kh, stride[0], padding[0], dilation[0])
        ow = out_size(wd, kw, stride[1], padding[1], dilation[1])
        patch_bytes = x.itemsize * x.shape[1] * kh * kw * n * oh * ow
        keep = ctx.needs_input_grad[1] and patch_bytes <= _KEEP_PATCHES_BYTES
        if groups == 1:
            out, cols = _patches_times_weights(x, w, b, (oh, ow), (stride, padding, dilation), keep)
        else:
            cols = im2col(x, (kh, kw), (oh, ow), stride, padding, dilation, groups)
            out = np.matmul(w.reshape(groups, oc // groups, -1), cols).reshape(oc, n * oh * ow)
            if b is not None:
                out = add_bias(out, b[:, None])
        # The patches are needed only for dW: a frozen weight does not keep ~KH*KW copies of the input alive,
        # nor does a big batch (dW makes them again). x itself is saved too (no copy): under create_graph dW
        # is recomputed from it as a recorded op.
        ctx.save_for_backward(x, w, cols if keep else None)
        return out.reshape(oc, n, oh, ow).transpose(1, 0, 2, 3)

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array | None, ...]:
        x, w, cols = ctx.saved_tensors
        needs = ctx.needs_input_grad
        geometry = ctx.attrs  # forward's keywords: exactly stride, padding, dilation and groups
        fast = isinstance(grad, np.ndarray)  # an ordinary backward: arrays, and the forward's patches
        if fast:
            # In forward's (OC, N, OH, OW) memory order (free when grad already is): every use below is a view
            grad = np.ascontiguousarray(grad.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
        dx = dw = None
        if needs[0]:
            # the adjoint of the convolution: each output's grad spread back over its window by w
            extra = restoring_padding(x.shape, w.shape, grad.shape, geometry)
            dx = ConvTranspose2dFn.call(grad, w, output_padding=extra, **geometry)
        if needs[1]:
            # dW = sum over every image and output position of grad x patch; the array path reuses the
            # forward's patches when it kept them, and calls conv2d_weight's kernel directly when not
            if fast and cols is not None:
                dw = conv2d_weight_kernel(cols, grad, w.shape, geometry["groups"])
            elif fast:
                dw = conv2d_weight_from_input(x, grad, tuple(w.shape), **geometry)
            else:
                dw = Conv2dWeightFn.call(x, grad, weight_size=tuple(w.shape), **geometry)
        if len(needs) == 2:
            return dx, dw
        if not needs[2]:
            return dx, dw, None
        if not fast:
            return dx, dw, grad.sum(axis=(0, 2, 3))
        # a BLAS dot with ones sums each row ~4x faster than ndarray.sum's pairwise loop
        g2 = grad.transpose(1, 0, 2, 3).reshape(w.shape[0], -1)  # a view in forward's order
        return dx, dw, np.matmul(g2, _ones(g2.shape[1], g2.dtype))


def conv2d(
    x: Any,
    weight: Any,
    bias: Any = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    groups: int = 1,
) -> Tensor:
    """2-D cross-correlation, as ``torch.nn.functional.conv2d`` (no string padding modes).

    Shapes: x (N, C, H, W), weight (OC, C/groups, KH, KW), bias (OC,) or None -> (N, OC, OH, OW) with
    ``OH = (H + 2*padding - dilation*(KH - 1) - 1) // stride + 1`` (OW likewise). ``stride``, ``padding``
    and ``dilation`` are an int or an (h, w) pair; ``groups`` splits the channels into independent groups
    (``groups=C`` is a depthwise convolution).

    Raises:
        ValueError: naming both shapes, when x or weight is not 4-d, their channels or ``groups`` disagree,
            or bias is not (OC,); naming the sizes, when no output position fits.
        TypeError: for a non-integer stride, padding, dilation or groups.

    >>> x = Tensor(np.arange(16.0).reshape(1, 1, 4, 4))
    >>> conv2d(x, Tensor(np.ones((1, 1, 2, 2))), stride=2).data[0, 0]
    array([[10., 18.],
           [42., 50.]])
    """
    x = x if isinstance(x, Tensor) else Tensor(x)
    weight = weight if isinstance(weight, Tensor) else Tensor(weight)
    # Plain tuples and ints from here on: this runs on every conv call, and each Tensor property or
    # generator costs about a microsecond at batch 1 (docs/benchmarks.md, graph overhead).
    xs, ws = x.data.shape, weight.data.shape
    if len(xs) != 4 or len(ws) != 4:
        raise ValueError(
            f"conv2d: x {xs} and weight {ws} must be 4-d: (N, C, H, W) and (OC, C/groups, KH, KW)"
        )
    groups = check_int(groups, "groups", "conv2d", minimum=1)
    c, oc = xs[1], ws[0]
    if c % groups or oc % groups or ws[1] * groups != c:
        raise ValueError(
            f"conv2d: x {xs} and weight {ws} disagree with groups={groups}: want C "
            f"({c}) = weight.shape[1] ({ws[1]}) * groups and OC ({oc}) divisible by groups"
        )
    s = int_pair(stride, "stride", "conv2d", 1)
    p = int_pair(padding, "padding", "conv2d", 0)
    d = int_pair(dilation, "dilation", "conv2d", 1)
    # out_size(...) < 1 exactly when the padded input is shorter than the dilated kernel
    if xs[2] + 2 * p[0] < d[0] * (ws[2] - 1) + 1 or xs[3] + 2 * p[1] < d[1] * (ws[3] - 1) + 1:
        raise ValueError(
            f"conv2d: no output fits: input {xs[2:]} of x {xs} with padding {p} is smaller than "
            f"the kernel {ws[2:]} of weight {ws} dilated by {d}"
        )
    if bias is None:
        return Conv2dFn.apply(x, weight, stride=s, padding=p, dilation=d, groups=groups)
    bias = bias if isinstance(bias, Tensor) else Tensor(bias)
    if bias.data.shape != (oc,):
        raise ValueError(f"conv2d: bias {bias.data.shape} must be (OC,) = ({oc},) for weight {ws}")
    return Conv2dFn.apply(x, weight, bias, stride=s, padding=p, dilation=d, groups=groups)
