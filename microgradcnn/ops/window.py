"""Window helpers shared by the convolutions and the pools: argument pairs, output sizes, strided window
views (im2col) and adding window parts back onto the input (col2im), all NCHW."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from microgradcnn._checks import check_int, is_int
from microgradcnn.tensor import Array

IntPair = int | tuple[int, int]


def int_pair(value: Any, what: str, op: str, minimum: int) -> tuple[int, int]:
    """``value`` (an int or an ``(h, w)`` pair of ints) as a pair, each at least ``minimum``.

    The int rule is ``microgradcnn._checks.check_int``'s (bools and floats refused, NumPy ints accepted).

    Raises:
        TypeError: naming ``op`` and ``what``, for anything but an int or a pair of ints (bools included).
        ValueError: naming ``op`` and ``what``, for a value below ``minimum``.
    """
    # The common cases first, without the general checks: this runs for every conv and pool call.
    if type(value) is int and value >= minimum:
        return (value, value)
    plain_pair = type(value) is tuple and len(value) == 2 and type(value[0]) is type(value[1]) is int
    if plain_pair and min(value) >= minimum:
        return value
    if isinstance(value, tuple | list) and len(value) == 2:
        entry = f"{what} entry of {tuple(value)!r}"
        return tuple(check_int(v, entry, op, minimum=minimum) for v in value)  # type: ignore[return-value]
    if not is_int(value):
        raise TypeError(f"{op}: {what} must be an int or an (h, w) pair of ints, got {value!r}")
    one = check_int(value, what, op, minimum=minimum)
    return (one, one)


def out_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """Output length along one axis: ``(size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1``."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


@functools.lru_cache(maxsize=256)
def window_slices(
    kernel: tuple[int, int], out: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int] = (1, 1)
) -> tuple[tuple[slice, slice], ...]:
    """For each kernel offset ``(i, j)``, row-major: the (rows, cols) slices of the padded input it meets.

    ``xp[:, :, rows, cols]`` is then an (N, C, OH, OW) view: element ``[n, c, p, q]`` is the input under
    offset ``(i, j)`` of the window of output ``(p, q)``. Looping over the KH*KW offsets (never over pixels)
    with these views is how col2im adds patches back and how the pools find their maxima and sums.
    """
    (kh, kw), (oh, ow), (sh, sw), (dh, dw) = kernel, out, stride, dilation
    return tuple(
        (slice(i * dh, i * dh + sh * (oh - 1) + 1, sh), slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))
        for i in range(kh)
        for j in range(kw)
    )


def pad_hw(x: Array, padding: tuple[int, int], value: float = 0.0) -> Array:
    """``x`` (N, C, H, W) with ``padding`` rows/cols of ``value`` on both sides of H and W (x itself if 0)."""
    ph, pw = padding
    if ph == pw == 0:
        return x
    n, c, h, w = x.shape
    xp = np.full((n, c, h + 2 * ph, w + 2 * pw), value, dtype=x.dtype)  # ~10x less overhead than np.pad
    xp[:, :, ph : ph + h, pw : pw + w] = x
    return xp


def scatter_windows(
    parts: Any,
    shape: tuple[int, ...],
    padding: tuple[int, int],
    slices: Sequence[tuple[slice, slice]],
    overlap: bool,
    dtype: Any,
) -> Array:
    """The transpose of reading windows: each offset's part added back where it was read from; (N, C, H, W).

    ``parts`` yields one (N, C, OH, OW) array (or broadcastable value) per entry of ``slices``; they are added
    into zeros of ``shape`` plus ``padding``, and the padding is cut off. ``overlap`` False (windows tile or
    skip, never share an element) lets each offset write its disjoint positions instead of adding; then
    ``parts`` may also be a function that fills the views (one argument per offset) in place.
    """
    n, c, h, w = shape
    ph, pw = padding
    dxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=dtype)
    if callable(parts) and not overlap:
        parts(*(dxp[:, :, rows, cols] for rows, cols in slices))
        return dxp[:, :, ph : ph + h, pw : pw + w]
    for (rows, cols), part in zip(slices, parts, strict=True):
        if overlap:
            dxp[:, :, rows, cols] += part
        else:
            dxp[:, :, rows, cols] = part
    return dxp[:, :, ph : ph + h, pw : pw + w]


def _patches(xp: Array, kernel: tuple[int, int], out: tuple[int, int], stride: tuple[int, int],
             dilation: tuple[int, int], first: int = 0, count: int | None = None) -> Array:
    """The im2col patches of images ``first .. first+count`` (all by default) of ``xp`` (N, C, Hp, Wp, one
    plain buffer) as a strided view (C, KH, KW, count, OH, OW), no copy.

    Element ``[c, i, j, n, p, q]`` is ``xp[first + n, c, s*p + d*i, s*q + d*j]``. Built with the ndarray
    constructor over xp's buffer: ~4 us, where ``sliding_window_view`` costs ~40 us (10 % of a batch-1 step).
    """
    (kh, kw), (oh, ow), (sh, sw), (dh, dw) = kernel, out, stride, dilation
    n, c = xp.shape[:2]
    s_n, s_c, s_h, s_w = xp.strides
    strides = (s_c, s_h * dh, s_w * dw, s_n, s_h * sh, s_w * sw)
    count = n - first if count is None else count
    return np.ndarray((c, kh, kw, count, oh, ow), xp.dtype, xp, first * s_n, strides)


# The convolution kernels copy patches a chunk of images at a time, about this many bytes of patches and
# output per chunk, so that the GEMM reads each chunk from the L2 cache right after the copy put it there,
# instead of a whole batch's patches (KH*KW copies of the input) going out to DRAM and back in between.
CHUNK_BYTES = 1 << 20


def image_chunks(n: int, bytes_per_image: int) -> list[tuple[int, int]]:
    """(first, count) of the consecutive image chunks that cover a batch of ``n``: ``CHUNK_BYTES`` each at
    most, one image at least."""
    step = max(1, CHUNK_BYTES // max(1, bytes_per_image))
    return [(first, min(step, n - first)) for first in range(0, n, step)]


def padded_input(x: Array, padding: tuple[int, int]) -> Array:
    """``x`` padded with zeros, as the one plain buffer the ``_patches`` views need."""
    return np.ascontiguousarray(pad_hw(x, padding))


def fill_columns(cols: Array, xp: Array, kernel: tuple[int, int], out: tuple[int, int],
                 stride: tuple[int, int], dilation: tuple[int, int], first: int, count: int) -> None:
    """Copy the patches of images ``first .. first+count`` of the padded ``xp`` into ``cols``, their
    (C*KH*KW, count*OH*OW) block of im2col's columns (a view of the whole matrix is fine)."""
    c = xp.shape[1]
    # copy=False: a view of cols or an error, never a silent copy the patches would land in
    np.copyto(cols.reshape(c, kernel[0], kernel[1], count, out[0], out[1], copy=False),
              _patches(xp, kernel, out, stride, dilation, first, count))


def im2col(
    x: Array,
    kernel: tuple[int, int],
    out: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int = 1,
) -> Array:
    """The patches of ``x`` (N, C, H, W) copied once as columns: (G, C/G*KH*KW, N*OH*OW), a fresh array.

    Row ``(c, i, j)`` of group ``g`` (channel ``g*C/G + c``), column ``(n, p, q)`` holds
    ``x[n, g*C/G + c, s*p + d*i - pad, s*q + d*j - pad]`` (0 in the padding): a convolution is then one GEMM
    per group. The copy is also a snapshot: later edits of ``x`` do not reach it.
    """
    n = x.shape[0]
    cols = _patches(padded_input(x, padding), kernel, out, stride, dilation)
    return cols.reshape(groups, cols.shape[0] // groups * kernel[0] * kernel[1], n * out[0] * out[1])


def col2im(
    cols: Array,
    shape: tuple[int, int, int, int],
    kernel: tuple[int, int],
    out: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> Array:
    """The transpose of ``im2col``: each column entry added back onto the input position it was read from.

    ``cols`` holds C*KH*KW*N*OH*OW values in im2col's order (any shape, e.g. (G, C/G*KH*KW, N*OH*OW));
    returns an (N, C, H, W) array for ``shape`` = (N, C, H, W), where positions read by several windows get
    the sum of their entries and those read by none (or only padding) get 0. One strided add per kernel
    offset, into a (C, N, ...) buffer laid out like the columns, returned as an (N, C, H, W) view of it.
    """
    n, c, h, w = shape
    kh, kw = kernel
    parts = cols.reshape(c, kh * kw, n, out[0], out[1])
    slices = window_slices(kernel, out, stride, dilation)
    planes = scatter_windows((parts[:, k] for k in range(kh * kw)), (c, n, h, w), padding, slices, True,
                             cols.dtype)
    return planes.transpose(1, 0, 2, 3)
