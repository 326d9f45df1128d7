"""2-D pooling: max_pool2d (gradient to the first maximum), avg_pool2d and adaptive_avg_pool2d, PyTorch's
NCHW arguments and output-size rules (dilation, ceil_mode, count_include_pad)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from microgradcnn._checks import check_int
from microgradcnn.ops.shape import ScatterFn, scatter_kernel
from microgradcnn.ops.window import IntPair, int_pair, scatter_windows, window_slices
from microgradcnn.tensor import Array, Context, Function, Tensor

Pair = tuple[int, int]


def pool_geometry(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool
                   ) -> tuple[int, int]:
    """(output length, padded length) of a pool along one axis, PyTorch's rule.

    ``out = (size + 2*padding - dilation*(kernel-1) - 1) // stride + 1``, rounded up with ``ceil_mode``,
    where a last window that would start past the input and the left padding (``(out-1)*stride >= size +
    padding``) is dropped. The padded length covers every window: ceil_mode windows may hang past the right
    padding, and that overhang is padded too (with -inf for max, zeros that never count for avg).
    """
    span = dilation * (kernel - 1) + 1
    out = (size + 2 * padding - span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and out > 0 and (out - 1) * stride >= size + padding:
        out -= 1
    return out, max(size + 2 * padding, (out - 1) * stride + span)


@functools.lru_cache(maxsize=256)
def _stages(
    x_shape: tuple[int, ...], kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
    dilation: tuple[int, int] = (1, 1), ceil_mode: bool = False,
) -> tuple[Sequence[tuple[slice, slice]], Sequence[tuple[slice, slice]], tuple[int, int]]:
    """The two 1-d passes of a pool over the padded input: column windows first, then row windows.

    A 2-d window's max (or sum) is the max over its rows of each row's max over its columns. Done in that
    order, the first pass reads whole rows, where NumPy's inner loop runs over all N*C*H rows at once instead
    of over OW-long pieces: for the seed's 2x2 max-pool that is ~5x faster than four 2-d strided views.
    Returns (column slices into the padded (N, C, Hp, Wp) input, giving (N, C, Hp, OW) views;
    row slices into that (N, C, Hp, OW) result, giving (N, C, OH, OW) views; the padded size (Hp, Wp)).
    """
    (oh, hp), (ow, wp) = (pool_geometry(x_shape[2 + a], kernel[a], stride[a], padding[a], dilation[a],
                                         ceil_mode) for a in (0, 1))
    by_cols = window_slices((1, kernel[1]), (hp, ow), (1, stride[1]), (1, dilation[1]))
    by_rows = window_slices((kernel[0], 1), (oh, ow), (stride[0], 1), (dilation[0], 1))
    return by_cols, by_rows, (hp, wp)


def _pad_to(x: Array, padding: tuple[int, int], size: tuple[int, int], value: float) -> Array:
    """``x`` (N, C, H, W) placed at ``padding`` in an (N, C, *size) array of ``value`` (x itself if unpadded).

    The right/bottom side gets whatever ``size`` leaves: the padding plus any ceil_mode overhang.
    """
    n, c, h, w = x.shape
    if size == (h, w):
        return x
    (ph, pw) = padding
    xp = np.full((n, c, *size), value, dtype=x.dtype)  # ~10x less overhead than np.pad
    xp[:, :, ph : ph + h, pw : pw + w] = x
    return xp


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
def _window_starts(planes_shape: tuple[int, int, int, int]) -> Array:
    """Flat index of each 2x2 window's top-left element in (A, B, H, W) planes stored one after another.

    Shape (A, B, H // 2, W // 2), intp, read-only; cached because a training loop asks for the same one
    every step (2 MiB for a batch-256 seed CNN: a few shapes at most are kept).
    """
    a, b, h, w = planes_shape
    plane_starts = np.arange(a * b).reshape(a, b, 1, 1) * (h * w)
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
    in row-major order as its offset from the window's top-left element, in the smallest int that holds it
    (uint8 below 255-wide rows: 1 byte kept per output until backward, not 8); ``_winners_from_offsets``
    turns them into flat indices into those planes, for backward's one scatter.
    """
    order = _plane_order(x)
    planes = np.ascontiguousarray(x.transpose(order))  # no copy for a conv output or any NCHW array
    a, b, h, w = planes.shape
    count, size = a * b, h * w
    flat = planes.reshape(count, size)
    out = np.empty((count, h // 2, w // 2), dtype=x.dtype)
    offsets = np.empty(out.shape, dtype=_offset_type(w)) if track else None
    per = max(1, _CHUNK_BYTES // (size * x.itemsize))
    for first in range(0, count, per):
        chunk = slice(first, first + per)
        _pool_planes(flat[chunk].reshape(-1), (h, w), out[chunk], None if offsets is None else offsets[chunk])
    shape = (a, b, h // 2, w // 2)
    return out.reshape(shape), None if offsets is None else offsets.reshape(shape), order


def _offset_type(w: int) -> Any:
    """The int type of a 2x2 window's winner offsets (0, 1, W or W + 1) for rows ``w`` long."""
    return np.uint8 if w < 255 else np.int64


def _winners_from_offsets(offsets: Array, planes_shape: tuple[int, ...]) -> Array:
    """Flat indices into (A, B, H, W) planes (x's memory order) of the winners ``_max_pool_2x2`` recorded as
    offsets (A, B, OH, OW) from each window's top-left element: those elements' indices plus the offsets."""
    return _window_starts(planes_shape) + offsets  # intp: the starts' type wins over uint8's


def _pool_planes(f: Array, hw: tuple[int, int], out: Array, offsets: Array | None) -> None:
    """Fill ``out`` (M, OH, OW) from M consecutive h x w planes flattened into ``f``, and ``offsets`` (M, OH,
    OW, of ``_offset_type(w)``) when given with each winner's offset from its window's top-left element.

    With W the row length: ``pair[k] = max(f[k], f[k+1])`` and ``quad[k] = max(pair[k], pair[k+W])``; the
    output is ``quad`` read at each window's top-left k (the other k are windows the pool does not use).
    The winner is the bottom pair only if strictly greater than the top one, and in the chosen pair the
    right element only if strictly greater than the left: the first maximum in row-major order.
    """
    h, w = hw
    steps = (h * w, 2 * w, 2)  # from window top-left to the next plane, window row, window column
    pair = np.maximum(f[:-1], f[1:])
    quad = np.maximum(pair[:-w], pair[w:])
    np.copyto(out, np.ndarray(out.shape, f.dtype, quad, 0, tuple(s * f.itemsize for s in steps)))
    if offsets is None:
        return
    right = f[1:] > f[:-1]  # right[k]: f[k+1] beats f[k]
    bottom = pair[w:] > pair[:-w]  # bottom[k]: the pair one row down beats the pair at k
    n = bottom.size
    # The winner's offset from k, for every k at once in contiguous small-int passes:
    # bottom ? W + right[k+W] : right[k]  ==  right[k] + bottom * (W + right[k+W] - right[k])  (mod 2**8)
    small = _offset_type(w)
    offset = np.subtract(right[w:].view(np.uint8), right[:n].view(np.uint8), dtype=small)
    offset += small(w)
    offset *= bottom.view(np.uint8)
    offset += right[:n].view(np.uint8)
    at_starts = np.ndarray(out.shape, offset.dtype, offset, 0, tuple(s * offset.itemsize for s in steps))
    np.copyto(offsets, at_starts)


def _is_2x2(kernel_size: Pair, stride: Pair, padding: Pair) -> bool:
    """Whether the pool takes the 2x2 / stride 2 / no padding fast path (``_max_pool_2x2``)."""
    return kernel_size == stride == (2, 2) and padding == (0, 0)


class MaxPool2dFn(Function):
    """out[n, c, p, q] = max of the window; backward routes each output's grad to its window's first maximum.

    Two passes (docs/ops.md#max_pool2d): a running max over the KW column offsets, then over the KH row
    offsets (``dilation`` apart), each keeping a small-int array of which offset won. A later offset wins only
    when strictly greater, so the winner is the earliest maximal row and, in it, the earliest maximal column:
    the first maximum in row-major order, PyTorch's choice. The common 2x2 / stride 2 / no-padding pool takes
    a faster path with the same semantics (``_max_pool_2x2``) that records each window's winning flat index
    directly. Backward is a ``scatter`` of grad to the winners, whose own backward is a gather (``getitem``)
    at them: the op differentiates to any order.
    """

    name = "max_pool2d"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array, *, kernel_size: Pair, stride: Pair, padding: Pair,
                dilation: Pair = (1, 1), ceil_mode: bool = False) -> Array:
        track = ctx.needs_input_grad[0]  # which offset won: only backward needs it
        # ceil_mode adds a window only on an odd side; dilation changes every window: the general path
        odd = ceil_mode and (x.shape[2] % 2 or x.shape[3] % 2)
        if dilation == (1, 1) and not odd and _is_2x2(kernel_size, stride, padding):
            out, offsets, order = _max_pool_2x2(x, track)
            ctx.save_for_backward(x.shape, offsets, order, True)
            return out.transpose(order)  # (N, C, OH, OW), in x's memory order
        by_cols, by_rows, padded = _stages(x.shape, kernel_size, stride, padding, dilation, ceil_mode)
        xp = _pad_to(x, padding, padded, -np.inf)  # padding never wins (every window holds a real element)
        row_max, arg_col = _running_max([xp[:, :, r, c] for r, c in by_cols], track)  # (N, C, Hp, OW)
        out, arg_row = _running_max([row_max[:, :, r, c] for r, c in by_rows], track)  # (N, C, OH, OW)
        if track:
            winners = _flat_winners(x.shape, out.shape, arg_row, arg_col, stride, padding, dilation)
            ctx.save_for_backward(x.shape, winners, (0, 1, 2, 3), False)
        return out

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array]:
        x_shape, winners, order, as_offsets = ctx.saved_tensors
        if as_offsets:  # the 2x2 path kept the winners as small offsets
            winners = _winners_from_offsets(winners, tuple(x_shape[i] for i in order))
        # winners index x's planes in ``order`` (x's memory order for the 2x2 path): grad in that order too
        values = grad.transpose(order)
        (kh, kw), (sh, sw) = ctx.attrs["kernel_size"], ctx.attrs["stride"]
        dh, dw = ctx.attrs.get("dilation", (1, 1))
        size = x_shape[0] * x_shape[1] * x_shape[2] * x_shape[3]
        # windows share no element when a stride covers the dilated kernel: winners are then unique
        unique = sh >= dh * (kh - 1) + 1 and sw >= dw * (kw - 1) + 1
        if isinstance(values, np.ndarray):  # scatter's kernel, without ScatterFn.call's dispatch
            # both scatter operands contiguous: ~1.3-2x faster
            planes = scatter_kernel(np.ascontiguousarray(values), (size,), winners, unique)
        else:
            planes = ScatterFn.call(values, shape=(size,), index=winners, unique=unique)
        # dx in x's memory order: a conv2d before the pool reads its gradient without a copy
        return (planes.reshape(tuple(x_shape[i] for i in order)).transpose(order),)


def _flat_winners(x_shape: tuple[int, ...], out_shape: tuple[int, ...], arg_row: Array | None,
                  arg_col: Array | None, stride: Pair, padding: Pair, dilation: Pair) -> Array:
    """Each output's winning input as a flat index into x (N, C, H, W), from the two passes' winning offsets.

    The row pass chose row ``p * sh + arg_row * dh`` of the padded input; in it, the column pass had chosen
    column ``q * sw + arg_col[..., row, q] * dw``. Padding never wins (it is -inf and every window holds a
    real element).
    """
    n, c, h, w = x_shape
    oh, ow = out_shape[2:]
    rows = np.arange(oh, dtype=np.intp)[:, None] * stride[0] + np.zeros((n, c, 1, ow), dtype=np.intp)
    if arg_row is not None:
        rows += arg_row.astype(np.intp) * dilation[0]  # the uint8 offset times dilation may pass 255
    cols = np.arange(ow, dtype=np.intp) * stride[1]
    if arg_col is not None:
        cols = cols + np.take_along_axis(arg_col, rows, axis=2).astype(np.intp) * dilation[1]
    planes = np.arange(n * c, dtype=np.intp).reshape(n, c, 1, 1) * (h * w)
    return planes + (rows - padding[0]) * w + (cols - padding[1])


@functools.lru_cache(maxsize=64)
def _avg_scale(x_shape: tuple[int, ...], kernel: Pair, stride: Pair, padding: Pair, ceil_mode: bool,
               count_include_pad: bool) -> float | Array:
    """1 / divisor of each avg_pool2d window: a float when all windows share KH*KW, else (OH, OW) float64.

    PyTorch's divisor, one axis at a time (it factorises): a window starting at ``start = o*stride - padding``
    spans ``[start, min(start + kernel, size + padding))``: a ceil_mode window hanging past the padded input
    counts only up to its end. With ``count_include_pad`` that span's length is the divisor; without, only
    its part inside the input, ``[max(start, 0), min(end, size))``.
    """
    lengths = []
    for a in (0, 1):
        size, k, s, p = x_shape[2 + a], kernel[a], stride[a], padding[a]
        out, _ = pool_geometry(size, k, s, p, 1, ceil_mode)
        start = np.arange(out) * s - p
        end = np.minimum(start + k, size + p)
        lengths.append(end - start if count_include_pad else np.minimum(end, size) - np.maximum(start, 0))
    divisor = lengths[0][:, None] * lengths[1]
    if (divisor == kernel[0] * kernel[1]).all():
        return 1.0 / (kernel[0] * kernel[1])
    scale = 1.0 / divisor
    scale.setflags(write=False)
    return scale


def _scaled(values: Array, scale: float | Array) -> Array:
    """``values`` times the pool's 1/divisor in values' dtype (a float32 grad stays float32)."""
    return values * (values.dtype.type(scale) if isinstance(scale, float) else scale.astype(values.dtype))


class AvgPool2dFn(Function):
    """out[n, c, p, q] = sum of the window / its divisor: KH*KW (padding zeros included, PyTorch's default)
    or, with ``count_include_pad`` False or ceil_mode windows hanging past the padded input, PyTorch's count.

    Same two passes as max_pool2d, summing. Backward gives every window element grad / divisor: the
    ``avg_pool2d_backward`` op, whose own backward is this pool again (the adjoint of a linear map's adjoint
    is the map). Derivation: docs/ops.md#avg_pool2d.
    """

    name = "avg_pool2d"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array, *, kernel_size: Pair, stride: Pair, padding: Pair,
                ceil_mode: bool = False, count_include_pad: bool = True) -> Array:
        by_cols, by_rows, padded = _stages(x.shape, kernel_size, stride, padding, (1, 1), ceil_mode)
        xp = _pad_to(x, padding, padded, 0.0)
        row_sum = _running_sum([xp[:, :, r, c] for r, c in by_cols])  # (N, C, Hp, OW)
        out = _running_sum([row_sum[:, :, r, c] for r, c in by_rows])  # (N, C, OH, OW)
        scale = _avg_scale(x.shape, kernel_size, stride, padding, ceil_mode, count_include_pad)
        if isinstance(scale, float):
            out *= out.dtype.type(scale)  # a float32 scalar keeps float32
        else:
            out *= scale.astype(out.dtype)
        ctx.save_for_backward(x.shape)
        return out

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array]:
        (x_shape,) = ctx.saved_tensors
        return (AvgPool2dBackwardFn.call(grad, x_shape=x_shape, **ctx.attrs),)


class AvgPool2dBackwardFn(Function):
    """avg_pool2d's input gradient as an op: each output's grad / divisor added to every element of its
    window, giving an (N, C, H, W) array of ``x_shape``. Backward: ``avg_pool2d`` of the upstream gradient."""

    name = "avg_pool2d_backward"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, grad: Array, *, x_shape: tuple[int, ...], kernel_size: Pair, stride: Pair,
                padding: Pair, ceil_mode: bool = False, count_include_pad: bool = True) -> Array:
        (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
        by_cols, by_rows, (hp, wp) = _stages(x_shape, kernel_size, stride, padding, (1, 1), ceil_mode)
        # every window element gets 1/divisor of its output's grad
        share = _scaled(grad, _avg_scale(x_shape, kernel_size, stride, padding, ceil_mode, count_include_pad))
        n, c, _, ow = grad.shape
        d_row_sum = scatter_windows((share for _ in by_rows), (n, c, hp, ow), (0, 0), by_rows, sh < kh,
                                    share.dtype)
        # into the whole padded input (ceil_mode overhang included), then cut out x
        inner = (n, c, hp - 2 * ph, wp - 2 * pw)
        dx = scatter_windows((d_row_sum for _ in by_cols), inner, padding, by_cols, sw < kw, share.dtype)
        return dx[:, :, : x_shape[2], : x_shape[3]]

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array]:
        attrs = {k: v for k, v in ctx.attrs.items() if k != "x_shape"}
        return (AvgPool2dFn.call(grad, **attrs),)


def _flag(value: Any, what: str, op: str) -> bool:
    """A bool argument (NumPy's bool too); anything else is a TypeError naming ``op``."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{op}: {what} must be a bool, got {value!r}")
    return bool(value)


def _pool_args(op: str, x: Tensor, kernel_size: Any, stride: Any, padding: Any, ceil_mode: Any = False,
               dilation: Any = None) -> dict[str, Any]:
    """Validated pooling attrs, as (h, w) pairs; stride None means kernel_size (PyTorch's default).

    ``dilation`` None leaves it out of the attrs (avg_pool2d has none).
    """
    shape = x.data.shape
    if len(shape) != 4:
        raise ValueError(f"{op}: x {shape} must be 4-d (N, C, H, W)")
    kernel = int_pair(kernel_size, "kernel_size", op, 1)
    step = kernel if stride is None else int_pair(stride, "stride", op, 1)
    pad = int_pair(padding, "padding", op, 0)
    dil = (1, 1) if dilation is None else int_pair(dilation, "dilation", op, 1)
    ceil = _flag(ceil_mode, "ceil_mode", op)
    if pad[0] > kernel[0] // 2 or pad[1] > kernel[1] // 2:
        raise ValueError(f"{op}: padding {pad} must be at most half the kernel {kernel} (PyTorch's rule)")
    outs = [pool_geometry(shape[2 + a], kernel[a], step[a], pad[a], dil[a], ceil)[0] for a in (0, 1)]
    if min(outs) < 1:
        raise ValueError(
            f"{op}: output size {tuple(outs)} is too small: input {shape[2:]} of x {shape} with kernel "
            f"{kernel}, stride {step}, padding {pad}" + ("" if dilation is None else f", dilation {dil}")
        )
    # A dilated window may step over the whole input (its max would be -inf and lead nowhere). Undilated
    # windows always hold an input element (padding <= kernel / 2, and a ceil_mode window starts inside the
    # input or the left padding), so the common case skips this NumPy work: it runs on every pool call.
    for a in (0, 1) if dil != (1, 1) else ():
        taps = np.arange(outs[a])[:, None] * step[a] + np.arange(kernel[a]) * dil[a] - pad[a]
        if not ((taps >= 0) & (taps < shape[2 + a])).any(axis=1).all():
            raise ValueError(
                f"{op}: with kernel {kernel}, padding {pad} and dilation {dil} some window of the input "
                f"{shape[2:]} holds only padding"
            )
    attrs = {"kernel_size": kernel, "stride": step, "padding": pad, "ceil_mode": ceil}
    if dilation is not None:
        attrs["dilation"] = dil
    return attrs


def max_pool2d(x: Any, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0,
               dilation: IntPair = 1, ceil_mode: bool = False) -> Tensor:
    """Max over each KH x KW window, as ``torch.nn.functional.max_pool2d``.

    Shapes: x (N, C, H, W) -> (N, C, OH, OW), ``OH = (H + 2*padding - dilation*(KH-1) - 1) // stride + 1``
    (OW likewise); with ``ceil_mode`` the division rounds up, but a last window must start inside the input
    or the left padding (PyTorch's rule). Each argument is an int or an (h, w) pair; stride defaults to
    kernel_size; ``dilation`` spaces the window's elements. Windows may overlap and need not tile the input.
    Padding counts as -inf. The gradient of each output goes to exactly one input: the first maximum of its
    window in row-major order (ties never double a gradient); overlapping windows add.

    Raises:
        ValueError: for a non-4-d x, padding above half the kernel, an output size below 1, or a dilated
            window that holds only padding.
        TypeError: for a non-integer kernel_size, stride, padding or dilation, or a non-bool ceil_mode.

    >>> max_pool2d(Tensor(np.arange(16.0).reshape(1, 1, 4, 4)), 2).data[0, 0]
    array([[ 5.,  7.],
           [13., 15.]])
    """
    x = x if isinstance(x, Tensor) else Tensor(x)
    attrs = _pool_args("max_pool2d", x, kernel_size, stride, padding, ceil_mode, dilation)
    return MaxPool2dFn.apply(x, **attrs)


def avg_pool2d(x: Any, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0,
               ceil_mode: bool = False, count_include_pad: bool = True) -> Tensor:
    """Mean over each KH x KW window, as ``torch.nn.functional.avg_pool2d``.

    Shapes and arguments as ``max_pool2d`` (without dilation). Padding counts as zeros. The divisor is
    PyTorch's: with ``count_include_pad`` (the default) a window's length along each axis runs from its start
    to the end of the padded input at most, so it is KH*KW except for ceil_mode windows hanging past the
    padding; without, only the window's elements inside the input count. Each window element, padding
    included, gets grad / divisor of its output's gradient.

    Raises:
        ValueError: for a non-4-d x, padding above half the kernel, or an output size below 1.
        TypeError: for a non-integer kernel_size, stride or padding, or a non-bool ceil_mode or
            count_include_pad.

    >>> avg_pool2d(Tensor(np.arange(16.0).reshape(1, 1, 4, 4)), 2).data[0, 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]])
    """
    x = x if isinstance(x, Tensor) else Tensor(x)
    attrs = _pool_args("avg_pool2d", x, kernel_size, stride, padding, ceil_mode)
    attrs["count_include_pad"] = _flag(count_include_pad, "count_include_pad", "avg_pool2d")
    return AvgPool2dFn.apply(x, **attrs)


def _adaptive_matrix(size: int, out: int, dtype: Any) -> Array:
    """(out, size) averaging matrix of adaptive pooling along one axis: row o is 1/len on PyTorch's window
    ``[floor(o*size/out), ceil((o+1)*size/out))``, 0 elsewhere."""
    o = np.arange(out)
    start, end = (o * size) // out, -((-(o + 1) * size) // out)
    at = np.arange(size)
    inside = (at >= start[:, None]) & (at < end[:, None])
    return (inside / (end - start)[:, None]).astype(dtype)


def adaptive_avg_pool2d(x: Any, output_size: int | tuple[int | None, int | None] | None) -> Tensor:
    """Average pooling to a fixed output size, as ``torch.nn.functional.adaptive_avg_pool2d``.

    Shapes: x (N, C, H, W) -> (N, C, OH, OW) for ``output_size`` an int (OH = OW) or an (OH, OW) pair, where
    None keeps that input size. Output ``(p, q)`` is the mean of rows ``[floor(p*H/OH), ceil((p+1)*H/OH))``
    and the columns likewise (PyTorch's windows: they overlap when a size does not divide). Output size 1 is
    global average pooling (``x.mean(axis=(2, 3), keepdims=True)``); otherwise the pool is the linear map
    ``A_h @ x @ A_w.T`` with constant (OH, H) and (OW, W) averaging matrices, so its gradients of every order
    are matmul's.

    Raises:
        ValueError: for a non-4-d x or an output size below 1.
        TypeError: for an output size that is not an int, None or a pair of those.

    >>> adaptive_avg_pool2d(Tensor(np.arange(16.0).reshape(1, 1, 4, 4)), 1).data[0, 0]
    array([[7.5]])
    """
    op = "adaptive_avg_pool2d"
    x = x if isinstance(x, Tensor) else Tensor(x)
    if x.ndim != 4:
        raise ValueError(f"{op}: x {x.shape} must be 4-d (N, C, H, W)")
    pair = output_size if isinstance(output_size, tuple | list) else (output_size, output_size)
    if len(pair) != 2:
        raise TypeError(f"{op}: output_size must be an int, None or an (h, w) pair, got {output_size!r}")
    h, w = x.shape[2:]
    oh, ow = (h if pair[0] is None else check_int(pair[0], "output_size", op, minimum=1),
              w if pair[1] is None else check_int(pair[1], "output_size", op, minimum=1))
    if (oh, ow) == (1, 1):
        return x.mean(axis=(2, 3), keepdims=True)
    out = x if oh == h else _adaptive_matrix(h, oh, x.dtype) @ x  # the identity map needs no product
    return out if ow == w else out @ _adaptive_matrix(w, ow, x.dtype).T
