"""2-D pooling: max_pool2d (gradient to the first maximum) and avg_pool2d, PyTorch's NCHW arguments."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from microgradcnn.ops.shape import ScatterFn, scatter_kernel
from microgradcnn.ops.window import IntPair, int_pair, out_size, pad_hw, scatter_windows, window_slices
from microgradcnn.tensor import Array, Context, Function, Tensor

Pair = tuple[int, int]


@functools.lru_cache(maxsize=256)
def _stages(
    x_shape: tuple[int, ...], kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
) -> tuple[Sequence[tuple[slice, slice]], Sequence[tuple[slice, slice]]]:
    """The two 1-d passes of a pool over the padded input: column windows first, then row windows.

    A 2-d window's max (or sum) is the max over its rows of each row's max over its columns. Done in that
    order, the first pass reads whole rows, where NumPy's inner loop runs over all N*C*H rows at once instead
    of over OW-long pieces: for the seed's 2x2 max-pool that is ~5x faster than four 2-d strided views.
    Returns (column slices into the padded (N, C, Hp, Wp) input, giving (N, C, Hp, OW) views;
    row slices into that (N, C, Hp, OW) result, giving (N, C, OH, OW) views).
    """
    hp = x_shape[2] + 2 * padding[0]
    oh, ow = (out_size(x_shape[2 + a], kernel[a], stride[a], padding[a]) for a in (0, 1))
    by_cols = window_slices((1, kernel[1]), (hp, ow), (1, stride[1]))
    by_rows = window_slices((kernel[0], 1), (oh, ow), (stride[0], 1))
    return by_cols, by_rows


def _running_max(views: list[Array], track: bool = True) -> tuple[Array, Array | None]:
    """Elementwise max of same-shape views, and which view (0, 1, ...) holds it: the first one on ties.

    The index array is None for a single view (always 0) or when ``track`` is False (no backward will
    run: inference skips the comparisons). The max is a fresh array, never a view.
    """
    if len(views) == 1:
        return views[0].copy(), None
    if not track:
        best = np.maximum(views[0], views[1])
        for view in views[2:]:
            np.maximum(best, view, out=best)
        return best, None
    wins = views[1] > views[0]  # strictly greater: a tie keeps the earlier view, i.e. the first maximum
    arg = wins.view(np.uint8) if len(views) <= 256 else wins.astype(np.intp)  # bool is 0/1 already
    best = np.maximum(views[0], views[1])
    for k, view in enumerate(views[2:], start=2):
        np.copyto(arg, k, where=view > best)
        np.maximum(best, view, out=best)
    return best, arg


def _running_sum(views: list[Array]) -> Array:
    """Elementwise sum of same-shape views, as a fresh array."""
    if len(views) == 1:
        return views[0].copy()
    total = views[0] + views[1]
    for view in views[2:]:
        np.add(total, view, out=total)
    return total


@functools.lru_cache(maxsize=4)
def _window_starts(planes: int, h: int, w: int) -> Array:
    """Flat index of each 2x2 window's top-left element in ``planes`` h x w planes stored one after another.

    Shape (planes, h // 2, w // 2), intp, read-only; cached because a training loop asks for the same one
    every step (2 MiB for a batch-256 seed CNN: a few shapes at most are kept).
    """
    plane_starts = np.arange(planes)[:, None, None] * (h * w)
    starts = plane_starts + np.arange(h // 2)[:, None] * (2 * w) + np.arange(w // 2) * 2
    starts.setflags(write=False)
    return starts


def _plane_order(x: Array) -> tuple[int, int, int, int]:
    """The axis order, (0, 1, 2, 3) or (1, 0, 2, 3), that lists x's (N, C) axes outermost-in-memory first."""
    return (1, 0, 2, 3) if x.strides[1] > x.strides[0] else (0, 1, 2, 3)


# A chunk of planes and the four same-size temporaries of its passes stay in the 2 MiB L2 cache (a whole
# batch-256 seed-CNN feature map, 5.5 MB, does not: its passes would each stream through DRAM).
_CHUNK_BYTES = 1 << 20


def _max_pool_2x2(x: Array, track: bool) -> tuple[Array, Array | None, tuple[int, int, int, int]]:
    """2x2 max-pool with stride 2 and no padding, on contiguous memory: (out, winners or None, axis order).

    The general two passes read every other element (stride-2 loops, ~2 ns an element on these machines);
    this works on the flat buffer instead, where every pass is a contiguous SIMD loop (~0.4 ns). ``out``
    and the winners are (A, B, OH, OW) in the returned axis order, x's memory order, so a conv2d output
    (stored channels-outer) is read without a copy. Winners, when tracked, are each window's first maximum
    in row-major order as a flat index into those planes; backward is then one scatter.
    """
    order = _plane_order(x)
    planes = np.ascontiguousarray(x.transpose(order))  # no copy for a conv output or any NCHW array
    a, b, h, w = planes.shape
    count, size = a * b, h * w
    flat = planes.reshape(count, size)
    out = np.empty((count, h // 2, w // 2), dtype=x.dtype)
    # winners, and the window starts of all planes: each chunk's winners index the whole buffer
    every = (np.empty(out.shape, dtype=np.intp), _window_starts(count, h, w)) if track else None
    per = max(1, _CHUNK_BYTES // (size * x.itemsize))
    for first in range(0, count, per):
        chunk = slice(first, first + per)
        tracked = None if every is None else (every[0][chunk], every[1][chunk])
        _pool_planes(flat[chunk].reshape(-1), (h, w), out[chunk], tracked)
    shape = (a, b, h // 2, w // 2)
    return out.reshape(shape), None if every is None else every[0].reshape(shape), order


def _pool_planes(f: Array, hw: tuple[int, int], out: Array, tracked: tuple[Array, Array] | None) -> None:
    """Fill ``out`` (M, OH, OW) from M consecutive h x w planes flattened into ``f``; with ``tracked``, a pair
    (winners, starts) of (M, OH, OW) arrays, also fill ``winners``.

    With W the row length: ``pair[k] = max(f[k], f[k+1])`` and ``quad[k] = max(pair[k], pair[k+W])``; the
    output is ``quad`` read at each window's top-left k (the other k are windows the pool does not use).
    The winner is the bottom pair only if strictly greater than the top one, and in the chosen pair the
    right element only if strictly greater than the left: the first maximum in row-major order. Winners are
    ``starts`` (each window's top-left flat index) plus the winner's offset from it.
    """
    h, w = hw
    steps = (h * w, 2 * w, 2)  # from window top-left to the next plane, window row, window column
    pair = np.maximum(f[:-1], f[1:])
    quad = np.maximum(pair[:-w], pair[w:])
    np.copyto(out, np.ndarray(out.shape, f.dtype, quad, 0, tuple(s * f.itemsize for s in steps)))
    if tracked is None:
        return
    winners, starts = tracked
    right = f[1:] > f[:-1]  # right[k]: f[k+1] beats f[k]
    bottom = pair[w:] > pair[:-w]  # bottom[k]: the pair one row down beats the pair at k
    n = bottom.size
    # The winner's offset from k, for every k at once in contiguous small-int passes:
    # bottom ? W + right[k+W] : right[k]  ==  right[k] + bottom * (W + right[k+W] - right[k])  (mod 2**8)
    small = np.uint8 if w < 255 else np.int64
    offset = np.subtract(right[w:].view(np.uint8), right[:n].view(np.uint8), dtype=small)
    offset += small(w)
    offset *= bottom.view(np.uint8)
    offset += right[:n].view(np.uint8)
    at_starts = np.ndarray(out.shape, offset.dtype, offset, 0, tuple(s * offset.itemsize for s in steps))
    np.add(starts, at_starts, out=winners)


def _is_2x2(kernel_size: Pair, stride: Pair, padding: Pair) -> bool:
    """Whether the pool takes the 2x2 / stride 2 / no padding fast path (``_max_pool_2x2``)."""
    return kernel_size == stride == (2, 2) and padding == (0, 0)


class MaxPool2dFn(Function):
    """out[n, c, p, q] = max of the window; backward routes each output's grad to its window's first maximum.

    Two passes (docs/ops.md#max_pool2d): a running max over the KW column offsets, then over the KH row
    offsets, each keeping a small-int array of which offset won. A later offset wins only when strictly
    greater, so the winner is the earliest maximal row and, in it, the earliest maximal column: the first
    maximum in row-major order, PyTorch's choice. The common 2x2 / stride 2 / no-padding pool takes a faster
    path with the same semantics (``_max_pool_2x2``) that records each window's winning flat index directly.
    Backward is a ``scatter`` of grad to the winners, whose own backward is a gather (``getitem``) at them:
    the op differentiates to any order.
    """

    name = "max_pool2d"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array, *, kernel_size: Pair, stride: Pair, padding: Pair) -> Array:
        track = ctx.needs_input_grad[0]  # which offset won: only backward needs it
        if _is_2x2(kernel_size, stride, padding):
            out, winners, order = _max_pool_2x2(x, track)
            ctx.save_for_backward(x.shape, winners, order)
            return out.transpose(order)  # (N, C, OH, OW), in x's memory order
        by_cols, by_rows = _stages(x.shape, kernel_size, stride, padding)
        xp = pad_hw(x, padding, -np.inf)  # padding never wins a max (and every window holds a real element)
        row_max, arg_col = _running_max([xp[:, :, r, c] for r, c in by_cols], track)  # (N, C, Hp, OW)
        out, arg_row = _running_max([row_max[:, :, r, c] for r, c in by_rows], track)  # (N, C, OH, OW)
        if track:
            winners = _flat_winners(x.shape, out.shape, arg_row, arg_col, stride, padding)
            ctx.save_for_backward(x.shape, winners, (0, 1, 2, 3))
        return out

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array]:
        x_shape, winners, order = ctx.saved_tensors
        # winners index x's planes in ``order`` (x's memory order for the 2x2 path): grad in that order too
        values = grad.transpose(order)
        (kh, kw), (sh, sw) = ctx.attrs["kernel_size"], ctx.attrs["stride"]
        size, unique = x_shape[0] * x_shape[1] * x_shape[2] * x_shape[3], sh >= kh and sw >= kw
        if isinstance(values, np.ndarray):  # scatter's kernel, without ScatterFn.call's dispatch
            # both scatter operands contiguous: ~1.3-2x faster
            planes = scatter_kernel(np.ascontiguousarray(values), (size,), winners, unique)
        else:
            planes = ScatterFn.call(values, shape=(size,), index=winners, unique=unique)
        # dx in x's memory order: a conv2d before the pool reads its gradient without a copy
        return (planes.reshape(tuple(x_shape[i] for i in order)).transpose(order),)


def _flat_winners(x_shape: tuple[int, ...], out_shape: tuple[int, ...], arg_row: Array | None,
                  arg_col: Array | None, stride: Pair, padding: Pair) -> Array:
    """Each output's winning input as a flat index into x (N, C, H, W), from the two passes' winning offsets.

    The row pass chose row ``p * sh + arg_row`` of the padded input; in it, the column pass had chosen column
    ``q * sw + arg_col[..., row, q]``. Padding never wins (it is -inf and every window holds a real element).
    """
    n, c, h, w = x_shape
    oh, ow = out_shape[2:]
    rows = np.arange(oh, dtype=np.intp)[:, None] * stride[0] + np.zeros((n, c, 1, ow), dtype=np.intp)
    if arg_row is not None:
        rows += arg_row
    cols = np.arange(ow, dtype=np.intp) * stride[1]
    if arg_col is not None:
        cols = cols + np.take_along_axis(arg_col, rows, axis=2)
    planes = np.arange(n * c, dtype=np.intp).reshape(n, c, 1, 1) * (h * w)
    return planes + (rows - padding[0]) * w + (cols - padding[1])


class AvgPool2dFn(Function):
    """out[n, c, p, q] = mean of the KH*KW window, padding zeros included (PyTorch's default).

    Same two passes as max_pool2d, summing. Backward gives every window element grad / (KH*KW): the
    ``avg_pool2d_backward`` op, whose own backward is this pool again (the adjoint of a linear map's adjoint
    is the map). Derivation: docs/ops.md#avg_pool2d.
    """

    name = "avg_pool2d"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array, *, kernel_size: Pair, stride: Pair, padding: Pair) -> Array:
        by_cols, by_rows = _stages(x.shape, kernel_size, stride, padding)
        xp = pad_hw(x, padding)
        row_sum = _running_sum([xp[:, :, r, c] for r, c in by_cols])  # (N, C, Hp, OW)
        out = _running_sum([row_sum[:, :, r, c] for r, c in by_rows])  # (N, C, OH, OW)
        out *= out.dtype.type(1.0 / (kernel_size[0] * kernel_size[1]))  # a float32 scalar keeps float32
        ctx.save_for_backward(x.shape)
        return out

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array]:
        (x_shape,) = ctx.saved_tensors
        return (AvgPool2dBackwardFn.call(grad, x_shape=x_shape, **ctx.attrs),)


class AvgPool2dBackwardFn(Function):
    """avg_pool2d's input gradient as an op: each output's grad / (KH*KW) added to every element of its
    window, giving an (N, C, H, W) array of ``x_shape``. Backward: ``avg_pool2d`` of the upstream gradient."""

    name = "avg_pool2d_backward"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, grad: Array, *, x_shape: tuple[int, ...], kernel_size: Pair, stride: Pair,
                padding: Pair) -> Array:
        (kh, kw), (sh, sw) = kernel_size, stride
        by_cols, by_rows = _stages(x_shape, kernel_size, stride, padding)
        share = grad * grad.dtype.type(1.0 / (kh * kw))  # every window element gets 1/n of its output's grad
        n, c, _, ow = grad.shape
        row_sum_shape = (n, c, x_shape[2] + 2 * padding[0], ow)
        d_row_sum = scatter_windows((share for _ in by_rows), row_sum_shape, (0, 0), by_rows, sh < kh,
                                    share.dtype)
        return scatter_windows((d_row_sum for _ in by_cols), x_shape, padding, by_cols, sw < kw, share.dtype)

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array]:
        attrs = {k: ctx.attrs[k] for k in ("kernel_size", "stride", "padding")}
        return (AvgPool2dFn.call(grad, **attrs),)


def _pool_args(
    op: str, x: Tensor, kernel_size: Any, stride: Any, padding: Any
) -> dict[str, tuple[int, int]]:
    """Validated pooling attrs, as (h, w) pairs; stride None means kernel_size (PyTorch's default)."""
    shape = x.data.shape
    if len(shape) != 4:
        raise ValueError(f"{op}: x {shape} must be 4-d (N, C, H, W)")
    kernel = int_pair(kernel_size, "kernel_size", op, 1)
    step = kernel if stride is None else int_pair(stride, "stride", op, 1)
    pad = int_pair(padding, "padding", op, 0)
    if pad[0] > kernel[0] // 2 or pad[1] > kernel[1] // 2:
        raise ValueError(f"{op}: padding {pad} must be at most half the kernel {kernel} (PyTorch's rule)")
    if shape[2] + 2 * pad[0] < kernel[0] or shape[3] + 2 * pad[1] < kernel[1]:  # out_size < 1
        raise ValueError(
            f"{op}: no output fits: input {x.shape[2:]} of x {x.shape} with padding {pad} is smaller than "
            f"the kernel {kernel}"
        )
    return {"kernel_size": kernel, "stride": step, "padding": pad}


def max_pool2d(x: Any, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0) -> Tensor:
    """Max over each KH x KW window, as ``torch.nn.functional.max_pool2d`` (no dilation, no ceil_mode).

    Shapes: x (N, C, H, W) -> (N, C, OH, OW), ``OH = (H + 2*padding - KH) // stride + 1`` (OW likewise).
    Each argument is an int or an (h, w) pair; stride defaults to kernel_size. Windows may overlap and need
    not tile the input. Padding counts as -inf. The gradient of each output goes to exactly one input: the
    first maximum of its window in row-major order (ties never double a gradient); overlapping windows add.

    Raises:
        ValueError: for a non-4-d x, padding above half the kernel, or a kernel larger than the padded input.
        TypeError: for a non-integer kernel_size, stride or padding.

    >>> max_pool2d(Tensor(np.arange(16.0).reshape(1, 1, 4, 4)), 2).data[0, 0]
    array([[ 5.,  7.],
           [13., 15.]])
    """
    x = x if isinstance(x, Tensor) else Tensor(x)
    return MaxPool2dFn.apply(x, **_pool_args("max_pool2d", x, kernel_size, stride, padding))


def avg_pool2d(x: Any, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0) -> Tensor:
    """Mean over each KH x KW window, as ``torch.nn.functional.avg_pool2d`` (count_include_pad=True).

    Shapes and arguments as ``max_pool2d``. Padding counts as zeros that are part of every window's
    KH*KW, so each window element, padding included, gets 1/(KH*KW) of its output's gradient.

    Raises:
        ValueError: for a non-4-d x, padding above half the kernel, or a kernel larger than the padded input.
        TypeError: for a non-integer kernel_size, stride or padding.

    >>> avg_pool2d(Tensor(np.arange(16.0).reshape(1, 1, 4, 4)), 2).data[0, 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]])
    """
    x = x if isinstance(x, Tensor) else Tensor(x)
    return AvgPool2dFn.apply(x, **_pool_args("avg_pool2d", x, kernel_size, stride, padding))
