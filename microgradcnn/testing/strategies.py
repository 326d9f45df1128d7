"""Every hypothesis strategy of the project: tensors, shapes, and one ``OpCase`` strategy per registered op.

Needs the ``testing`` extra (``pip install "microgradcnn[testing]"``). Public building blocks for your own
property tests: ``tensors``, ``arrays``, ``shapes``, ``broadcastable_shapes``, ``floats``, ``away_from_zero``,
``spaced_arrays``, ``distinct_arrays``, ``axes``, ``conv2d_configs``, ``conv_transpose2d_configs``,
``pool2d_configs``, ``class_targets``; ``stroke_images`` for image-preprocessing tests.
Sizes are small (sides up to ``MAX_SIDE``; conv/pool images up to 9x9) so a property test of 100 gradient
checks takes seconds. Values are drawn away from the points where finite differences lie (relu at 0, ties
under max, log near 0): ``tensors(avoid_kinks=True)`` and ``spaced_arrays`` for your own ops; so a failing
check means a wrong gradient, not a kink. Guide: docs/testing.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
except ModuleNotFoundError as err:  # pragma: no cover - depends on the environment
    raise ModuleNotFoundError(
        'microgradcnn.testing.strategies needs hypothesis: pip install "microgradcnn[testing]"'
    ) from err

from microgradcnn import ops
from microgradcnn._checks import check_int
from microgradcnn.ops.reduce import normalize_axes
from microgradcnn.tensor import Tensor

MAX_SIDE = 4


@dataclass(frozen=True)
class OpCase:
    """One drawn problem for an op: ``fn(*inputs)`` returns a Tensor whose gradients get checked."""

    fn: Callable[..., Tensor]
    inputs: tuple[Any, ...]


def floats(low: float = -2.0, high: float = 2.0) -> st.SearchStrategy[float]:
    """Finite float64 values in [low, high]."""
    return st.floats(low, high, allow_nan=False, allow_infinity=False, width=64)


def away_from_zero(low: float = 0.1, high: float = 2.0) -> st.SearchStrategy[float]:
    """Values with ``low <= |x| <= high``: keeps relu, abs and division away from their kink or pole."""
    return st.builds(lambda s, m: s * m, st.sampled_from([-1.0, 1.0]), floats(low, high))


def shapes(min_dims: int = 0, max_dims: int = 3, min_side: int = 1, max_side: int = MAX_SIDE) -> Any:
    """Array shapes: tuples of ``min_dims`` to ``max_dims`` sides in [min_side, max_side]; ``()`` included."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def broadcastable_shapes(num_shapes: int = 2, max_dims: int = 3, max_side: int = MAX_SIDE) -> Any:
    """Tuples of ``num_shapes`` shapes that broadcast together (size-1 axes, missing axes, 0-d included)."""
    return hnp.mutually_broadcastable_shapes(
        num_shapes=num_shapes, min_dims=0, max_dims=max_dims, max_side=max_side
    ).map(lambda r: r.input_shapes)


def arrays(shape: Any, elements: st.SearchStrategy[float] | None = None, dtype: Any = np.float64) -> Any:
    """NumPy arrays of ``dtype`` and ``shape`` (or a strategy of shapes); elements default to ``floats()``."""
    return hnp.arrays(dtype, shape, elements=elements if elements is not None else floats())


def tensors(
    shape: Any = None,
    dtype: Any = np.float64,
    elements: st.SearchStrategy[float] | None = None,
    requires_grad: bool = True,
    *,
    avoid_kinks: bool = False,
    spacing: float = 0.1,
) -> st.SearchStrategy[Tensor]:
    """Leaf ``Tensor``s of ``shape`` (a shape or a strategy of shapes; default: any shape up to 3-d).

    Values come from ``elements`` (default: float64 in [-2, 2]). With ``avoid_kinks`` they come from
    ``spaced_arrays`` instead: ``|x| >= spacing`` and every two values at least ``spacing`` apart, so relu,
    abs, max and max-pooling are smooth within any finite-difference step well below ``spacing``.

    >>> from hypothesis import find
    >>> find(tensors((2, 2), avoid_kinks=True), lambda t: True).shape
    (2, 2)

    Raises:
        ValueError: for ``avoid_kinks`` with ``elements`` (it draws its own values) or ``spacing <= 0``.
    """
    shape = shape if shape is not None else shapes()
    if avoid_kinks:
        if elements is not None:
            raise ValueError(
                "tensors: give elements= or avoid_kinks=True, not both (avoid_kinks draws its own values)"
            )
        values = spaced_arrays(shape, spacing, dtype)
    else:
        values = arrays(shape, elements, dtype)
    return values.map(lambda a: Tensor(a, requires_grad=requires_grad))


def spaced_arrays(shape: Any, spacing: float = 0.1, dtype: Any = np.float64) -> st.SearchStrategy[np.ndarray]:
    """Arrays of ``shape`` away from every kink: ``|x| >= spacing``, and any two values ``spacing`` apart.

    Drawn as gaps of 1.01 to 2 ``spacing`` accumulated outwards from zero on either side, then shuffled:
    relu and abs never see x near 0, and max or max-pool never see a tie (the 1 % margin survives rounding
    to float32). Values reach about ``±2 * spacing * size``. ``shape`` may be a strategy of shapes.

    Raises:
        ValueError: for ``spacing <= 0``.
    """
    if not spacing > 0:
        raise ValueError(f"spaced_arrays: spacing must be positive, got {spacing!r}")
    return _spaced_arrays(shape, float(spacing), dtype)


@st.composite
def _spaced_arrays(draw: st.DrawFn, shape: Any, spacing: float, dtype: Any) -> np.ndarray:
    shape = draw(shape) if isinstance(shape, st.SearchStrategy) else tuple(shape)
    size = int(np.prod(shape))
    gaps = draw(hnp.arrays(np.float64, (size,), elements=st.floats(1.01, 2.0)))
    negatives = draw(st.integers(0, size))  # how many values go below zero
    values = spacing * np.concatenate([-np.cumsum(gaps[:negatives]), np.cumsum(gaps[negatives:])])
    perm = draw(st.permutations(range(size))) if size > 1 else list(range(size))
    return values[np.asarray(perm, dtype=np.intp)].reshape(shape).astype(dtype)


@st.composite
def distinct_arrays(draw: st.DrawFn, shape: Any, spacing: float = 0.1) -> np.ndarray:
    """float64 arrays of ``shape`` whose values differ by at least ``spacing``: no ties for max or max-pool.

    A shuffled grid ``spacing * (k - size/2)``, so a finite-difference step never changes which is largest.
    Zero may be among the values; ``spaced_arrays`` also keeps away from it.
    """
    shape = draw(shape) if isinstance(shape, st.SearchStrategy) else shape
    size = int(np.prod(shape))
    perm = draw(st.permutations(range(size))) if size > 1 else list(range(size))
    return (spacing * (np.asarray(perm, dtype=np.float64) - size / 2)).reshape(shape)


def default_cases(
    num_inputs: int, min_dims: int = 1, max_dims: int = 2, max_side: int = 3, spacing: float = 0.1
) -> st.SearchStrategy[tuple[Tensor, ...]]:
    """What ``check_op`` draws for an op with no cases of its own: ``num_inputs`` float64 leaf tensors.

    All of one shared shape (``min_dims`` to ``max_dims`` sides of 1 to ``max_side``), so elementwise and
    broadcasting ops accept them; their values come from one ``spaced_arrays`` draw over all inputs
    together: every value at least ``spacing`` from zero and from every other value *of any input*, so relu,
    abs, max(x, y), x / y and comparisons between inputs stay away from their kinks and poles. Values reach
    about ``±2 * spacing * num_inputs * size`` (±1.8 for one 3x3 input). Ops that need other inputs
    (positive values, matching matrix shapes, labels) bring their own with ``cases=`` or ``register_cases``.

    Raises:
        TypeError: for a ``num_inputs`` that is not an int.
        ValueError: for ``num_inputs < 1`` or ``spacing <= 0``.
    """
    num_inputs = check_int(num_inputs, "num_inputs", "default_cases", minimum=1)
    stacked = shapes(min_dims, max_dims, max_side=max_side).map(lambda shape: (num_inputs, *shape))
    return spaced_arrays(stacked, spacing).map(lambda a: tuple(_grad(a[i].copy()) for i in range(num_inputs)))


def class_targets(n: int, num_classes: int) -> st.SearchStrategy[np.ndarray]:
    """int64 class indices of shape (n,), each in [0, num_classes)."""
    return hnp.arrays(np.int64, (n,), elements=st.integers(0, num_classes - 1))


# ------------------------------------------------------------------------------ images for the image pipeline
IMAGE_LAYOUTS = ("gray", "gray1", "bgr", "bgra", "uint16", "float32", "bool")
"""How ``stroke_images`` hands an image over: 2-D uint8, (H, W, 1), BGR, BGRA with a transparent background,
16-bit, float 0..1, or a bool mask."""


@st.composite
def stroke_images(draw: st.DrawFn, max_side: int = 300, max_strokes: int = 4) -> np.ndarray:
    """Images such as a scan or a photo of a digit gives, drawn as bars, lines and dots of one ink on plain
    paper: sides 1..``max_side`` (1-px-wide and very elongated canvases included), 0..``max_strokes``
    strokes of any width (hairlines to blobs), any paper and ink grey (equal ones give a blank image), in
    one of ``IMAGE_LAYOUTS``. Returns an array in OpenCV's layout, as ``image.preprocess_digit`` takes it.
    """
    import cv2  # only this strategy needs OpenCV

    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    paper, ink = draw(st.integers(0, 255)), draw(st.integers(0, 255))
    canvas = np.full((h, w), paper, np.uint8)
    mask = np.zeros((h, w), np.uint8)  # where ink was put: the opaque part of a transparent image
    for _ in range(draw(st.integers(0, max_strokes))):
        kind = draw(st.sampled_from(["bar", "line", "dot"]))
        x0, y0 = draw(st.integers(0, w - 1)), draw(st.integers(0, h - 1))
        if kind == "dot":
            radius = draw(st.integers(0, max(1, min(h, w) // 4)))
            for target, value in ((canvas, ink), (mask, 255)):
                cv2.circle(target, (x0, y0), radius, value, -1)
            continue
        x1, y1 = draw(st.integers(0, w - 1)), draw(st.integers(0, h - 1))
        if kind == "bar":  # an axis-aligned filled rectangle: a straight "1" or a dash
            rows, cols = slice(min(y0, y1), max(y0, y1) + 1), slice(min(x0, x1), max(x0, x1) + 1)
            canvas[rows, cols], mask[rows, cols] = ink, 255
        else:
            thickness = draw(st.integers(1, max(1, min(h, w) // 3)))
            line_type = draw(st.sampled_from([cv2.LINE_8, cv2.LINE_AA]))
            for target, value in ((canvas, ink), (mask, 255)):
                cv2.line(target, (x0, y0), (x1, y1), value, thickness, line_type)
    layout = draw(st.sampled_from(IMAGE_LAYOUTS))
    if layout == "gray1":
        return canvas[:, :, None]
    if layout == "bgr":
        return cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR)
    if layout == "bgra":
        return np.dstack([cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR), mask])
    if layout == "uint16":
        return canvas.astype(np.uint16) * np.uint16(257)
    if layout == "float32":
        return canvas.astype(np.float32) / np.float32(255.0)
    if layout == "bool":
        return canvas > 127
    return canvas


def _grad(a: np.ndarray) -> Tensor:
    return Tensor(a, requires_grad=True)


def _binary(fn: Callable[..., Tensor], right: st.SearchStrategy[float] | None = None) -> Any:
    @st.composite
    def cases(draw: st.DrawFn) -> OpCase:
        sa, sb = draw(broadcastable_shapes())
        a = draw(arrays(sa))
        b = draw(arrays(sb, right))
        return OpCase(fn, (_grad(a), _grad(b)))

    return cases


def _unary(fn: Callable[..., Tensor], elements: st.SearchStrategy[float] | None = None) -> Any:
    return lambda: arrays(shapes(), elements).map(lambda a: OpCase(fn, (_grad(a),)))


@st.composite
def axes(draw: st.DrawFn, ndim: int) -> int | tuple[int, ...] | None:
    """An ``axis`` argument for a tensor of ``ndim`` dims: None, an int, or a tuple; negative ones too."""
    if ndim == 0:
        return None
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        return None
    if kind == "int":
        return draw(st.integers(-ndim, ndim - 1))
    chosen = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    return tuple(a - ndim if draw(st.booleans()) else a for a in chosen)


def _reduction(name: str, values: Callable[[tuple[int, ...]], Any]) -> Any:
    @st.composite
    def cases(draw: st.DrawFn) -> OpCase:
        shape = draw(shapes())
        x = draw(values(shape))
        axis, keepdims = draw(axes(len(shape))), draw(st.booleans())
        fn = getattr(ops, name)
        return OpCase(lambda t: fn(t, axis=axis, keepdims=keepdims), (_grad(x),))

    return cases


@st.composite
def pow_cases(draw: st.DrawFn) -> OpCase:
    """x ** p with p in a few integer and fractional exponents; x > 0 so every p is smooth."""
    p = draw(st.sampled_from([-2.0, -1.0, 0.5, 1.0, 2.0, 3.0, 2.5]))
    x = draw(arrays(shapes(), floats(0.5, 2.0)))
    return OpCase(lambda t: ops.pow(t, p), (_grad(x),))


@st.composite
def rpow_cases(draw: st.DrawFn) -> OpCase:
    """b ** x for a positive base."""
    b = draw(st.sampled_from([0.5, 2.0, float(np.e), 10.0]))
    x = draw(arrays(shapes(), floats(-2.0, 2.0)))
    return OpCase(lambda t: ops.pow(b, t), (_grad(x),))


@st.composite
def reshape_cases(draw: st.DrawFn) -> OpCase:
    """A reshape to another shape of the same size, sometimes with -1."""
    shape = draw(shapes())
    size = int(np.prod(shape))
    target = draw(st.sampled_from([(-1,), tuple(reversed(shape)), (1, *shape), (size, 1), (-1, 1)]))
    return OpCase(lambda t: ops.reshape(t, target), (_grad(draw(arrays(shape))),))


@st.composite
def transpose_cases(draw: st.DrawFn) -> OpCase:
    """A permutation of the axes (or None: reversed)."""
    shape = draw(shapes())
    perm = draw(st.none() | st.permutations(range(len(shape))).map(tuple))
    return OpCase(lambda t: ops.transpose(t, perm), (_grad(draw(arrays(shape))),))


@st.composite
def getitem_cases(draw: st.DrawFn) -> OpCase:
    """Indexing with an int, a slice, None, or an integer array with repeated indices."""
    shape = draw(shapes(min_dims=1))
    n = shape[0]
    index = draw(
        st.one_of(
            st.integers(-n, n - 1),
            st.builds(
                slice,
                st.none() | st.integers(-n, n),
                st.none() | st.integers(-n, n),
                st.sampled_from([None, 1, 2, -1]),
            ),
            st.just((None, Ellipsis)),
            st.lists(st.integers(-n, n - 1), min_size=1, max_size=5).map(np.asarray),
            st.tuples(
                st.lists(st.integers(0, n - 1), min_size=1, max_size=3).map(np.asarray), st.just(Ellipsis)
            ),
        )
    )
    return OpCase(lambda t: ops.getitem(t, index), (_grad(draw(arrays(shape))),))


@st.composite
def broadcast_to_cases(draw: st.DrawFn) -> OpCase:
    """x broadcast to a shape with added leading axes and stretched size-1 axes."""
    target = draw(shapes())
    # x: a suffix of the target's axes, each kept or shrunk to 1
    tail = target[len(target) - draw(st.integers(0, len(target))) :]
    shape = tuple(1 if draw(st.booleans()) else s for s in tail)
    return OpCase(lambda t: ops.broadcast_to(t, target), (_grad(draw(arrays(shape))),))


@st.composite
def scatter_cases(draw: st.DrawFn) -> OpCase:
    """Values scattered into zeros with an int, a slice, or an integer array with repeated indices."""
    shape = draw(shapes(min_dims=1))
    n = shape[0]
    index = draw(
        st.one_of(
            st.integers(-n, n - 1),
            st.builds(slice, st.none() | st.integers(-n, n), st.none() | st.integers(-n, n)),
            st.lists(st.integers(-n, n - 1), min_size=1, max_size=5).map(np.asarray),
        )
    )
    values = draw(arrays(np.zeros(shape)[index].shape))
    return OpCase(lambda t: ops.scatter(t, shape, index), (_grad(values),))


@st.composite
def matmul_cases(draw: st.DrawFn) -> OpCase:
    """(n,k)@(k,m), batched with broadcasting batch axes, and 1-d operands on either side."""
    n, k, m, b = (draw(st.integers(1, 3)) for _ in range(4))
    kind = draw(st.sampled_from(["2d", "batched", "broadcast", "vec_mat", "mat_vec", "dot"]))
    sa, sb = {
        "2d": ((n, k), (k, m)),
        "batched": ((b, n, k), (b, k, m)),
        "broadcast": ((1, n, k), (b, 1, k, m)),
        "vec_mat": ((k,), (b, k, m)),
        "mat_vec": ((b, n, k), (k,)),
        "dot": ((k,), (k,)),
    }[kind]
    return OpCase(ops.matmul, (_grad(draw(arrays(sa))), _grad(draw(arrays(sb)))))


def _int_or_pair(draw: st.DrawFn, h: int, w: int) -> int | tuple[int, int]:
    """``h`` alone when both sides agree (sometimes), else ``(h, w)``: both spellings get used."""
    return h if h == w and draw(st.booleans()) else (h, w)


@st.composite
def conv2d_configs(
    draw: st.DrawFn,
    max_n: int = 3,
    max_channels: int = 4,
    max_side: int = 9,
    max_kernel: int = 4,
    max_stride: int = 3,
    max_padding: int = 2,
    max_dilation: int = 2,
    dtype: Any = np.float64,
) -> dict[str, Any]:
    """conv2d problems: a dict of x, weight, bias (or None), stride, padding, dilation, groups (NumPy arrays).

    Every argument combination whose output is non-empty: groups divides both channel counts (``groups =
    C_in`` gives depthwise), stride/padding/dilation come as an int or an (h, w) pair, and H, W start at the
    smallest size the dilated kernel needs (so they may exceed ``max_side`` only when that is below it).
    Call as ``F.conv2d(cfg["x"], cfg["weight"], cfg["bias"], stride=..., ...)`` or pass the arrays to torch.
    """
    n = draw(st.integers(1, max_n))
    groups = draw(st.integers(1, max_channels))
    c = groups * draw(st.integers(1, max_channels // groups))
    oc = groups * draw(st.integers(1, max_channels // groups))
    kh, kw, sh, sw, ph, pw, dh, dw = (
        draw(st.integers(low, high))
        for low, high in [(1, max_kernel)] * 2 + [(1, max_stride)] * 2 + [(0, max_padding)] * 2
        + [(1, max_dilation)] * 2
    )
    # Non-empty output: H + 2 * padding >= dilation * (kernel - 1) + 1.
    low_h, low_w = max(1, dh * (kh - 1) + 1 - 2 * ph), max(1, dw * (kw - 1) + 1 - 2 * pw)
    h, w = draw(st.integers(low_h, max(low_h, max_side))), draw(st.integers(low_w, max(low_w, max_side)))
    return {
        "x": draw(arrays((n, c, h, w), dtype=dtype)),
        "weight": draw(arrays((oc, c // groups, kh, kw), dtype=dtype)),
        "bias": draw(st.none() | arrays((oc,), dtype=dtype)),
        "stride": _int_or_pair(draw, sh, sw),
        "padding": _int_or_pair(draw, ph, pw),
        "dilation": _int_or_pair(draw, dh, dw),
        "groups": groups,
    }


@st.composite
def conv_transpose2d_configs(
    draw: st.DrawFn,
    max_n: int = 2,
    max_channels: int = 4,
    max_side: int = 5,
    max_kernel: int = 3,
    max_stride: int = 3,
    max_padding: int = 2,
    max_dilation: int = 2,
    dtype: Any = np.float64,
) -> dict[str, Any]:
    """conv_transpose2d problems: a dict of x, weight, bias (or None), stride, padding, output_padding,
    dilation, groups.

    Every combination PyTorch accepts: groups divides both channel counts, weight is (C_in, C_out/groups,
    KH, KW), output_padding is below the stride or the dilation of its axis (both kinds drawn), and padding
    leaves a non-empty output. Call as ``F.conv_transpose2d(cfg["x"], cfg["weight"], cfg["bias"],
    stride=..., ...)`` or pass the arrays to torch.
    """
    n = draw(st.integers(1, max_n))
    groups = draw(st.integers(1, max_channels))
    c_in = groups * draw(st.integers(1, max_channels // groups))
    c_out = groups * draw(st.integers(1, max_channels // groups))
    geometry = []
    for _ in range(2):  # per axis: side, kernel, stride, dilation, output_padding, padding
        h, k = draw(st.integers(1, max_side)), draw(st.integers(1, max_kernel))
        s, d = draw(st.integers(1, max_stride)), draw(st.integers(1, max_dilation))
        extra = draw(st.integers(0, max(s, d) - 1))
        # output (h-1)s - 2p + d(k-1) + extra + 1 >= 1
        p = draw(st.integers(0, min(max_padding, ((h - 1) * s + d * (k - 1) + extra) // 2)))
        geometry.append((h, k, s, d, extra, p))
    (h, kh, sh, dh, eh, ph), (w, kw, sw, dw, ew, pw) = geometry
    return {
        "x": draw(arrays((n, c_in, h, w), dtype=dtype)),
        "weight": draw(arrays((c_in, c_out // groups, kh, kw), dtype=dtype)),
        "bias": draw(st.none() | arrays((c_out,), dtype=dtype)),
        "stride": _int_or_pair(draw, sh, sw),
        "padding": _int_or_pair(draw, ph, pw),
        "output_padding": _int_or_pair(draw, eh, ew),
        "dilation": _int_or_pair(draw, dh, dw),
        "groups": groups,
    }


@st.composite
def pool2d_configs(
    draw: st.DrawFn,
    max_n: int = 3,
    max_channels: int = 4,
    max_side: int = 9,
    max_kernel: int = 4,
    max_stride: int = 3,
    max_padding: int = 2,
    max_dilation: int = 2,
    distinct: bool = True,
    dtype: Any = np.float64,
) -> dict[str, Any]:
    """max_pool2d / avg_pool2d problems: a dict of x (N, C, H, W), kernel_size, stride (or None), padding,
    dilation (for max_pool2d only), ceil_mode and count_include_pad (for avg_pool2d only).

    Padding is at most half the kernel (PyTorch's rule), windows may overlap (stride < kernel) or skip input
    (stride > kernel), ceil_mode windows may hang past the padded input, and the output is non-empty with
    every (dilated) window holding an input element. With ``distinct`` (the default) all values of x differ
    by at least 0.1, so no window has a tied maximum and a finite-difference step never changes the argmax.
    """
    from microgradcnn.ops.pool import pool_geometry

    n, c = draw(st.integers(1, max_n)), draw(st.integers(1, max_channels))
    ceil_mode = draw(st.booleans())
    stride_drawn = draw(st.booleans())
    sides = []
    for _ in range(2):
        k, d = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_dilation))
        p = draw(st.integers(0, min(max_padding, k // 2)))
        s = draw(st.integers(1, max_stride)) if stride_drawn else k
        low = max(1, d * (k - 1) + 1 - 2 * p)
        size = draw(st.integers(low, max(low, max_side)))
        out, _ = pool_geometry(size, k, s, p, d, ceil_mode)
        taps = np.arange(out)[:, None] * s + np.arange(k) * d - p
        if not ((taps >= 0) & (taps < size)).any(axis=1).all():
            d = 1  # a dilated window stepped over the whole input: refused by max_pool2d
        sides.append((size, k, s, p, d))
    (h, kh, sh, ph, dh), (w, kw, sw, pw, dw) = sides
    shape = (n, c, h, w)
    x = draw(distinct_arrays(shape)).astype(dtype) if distinct else draw(arrays(shape, dtype=dtype))
    stride = _int_or_pair(draw, sh, sw) if stride_drawn else None
    return {"x": x, "kernel_size": _int_or_pair(draw, kh, kw), "stride": stride,
            "padding": _int_or_pair(draw, ph, pw), "dilation": _int_or_pair(draw, dh, dw),
            "ceil_mode": ceil_mode, "count_include_pad": draw(st.booleans())}


def pool2d_args(name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``name`` ("max_pool2d" or "avg_pool2d") in a ``pool2d_configs`` dict."""
    extra = ("dilation",) if name == "max_pool2d" else ("count_include_pad",)
    return {k: cfg[k] for k in ("kernel_size", "stride", "padding", "ceil_mode", *extra)}


def _conv2d_case(cfg: dict[str, Any]) -> OpCase:
    attrs = {k: cfg[k] for k in ("stride", "padding", "dilation", "groups")}
    tensors = [cfg[k] for k in ("x", "weight", "bias") if cfg[k] is not None]
    return OpCase(lambda *ts: ops.conv2d(*ts, **attrs), tuple(_grad(a) for a in tensors))


def conv2d_cases(**overrides: Any) -> st.SearchStrategy[OpCase]:
    """conv2d gradient problems: ``conv2d_configs(**overrides)`` with x, weight and bias all checked."""
    return conv2d_configs(**overrides).map(_conv2d_case)


def _conv_transpose2d_case(cfg: dict[str, Any]) -> OpCase:
    attrs = {k: cfg[k] for k in ("stride", "padding", "output_padding", "groups", "dilation")}
    tensors = [cfg[k] for k in ("x", "weight", "bias") if cfg[k] is not None]
    return OpCase(lambda *ts: ops.conv_transpose2d(*ts, **attrs), tuple(_grad(a) for a in tensors))


def conv_transpose2d_cases(**overrides: Any) -> st.SearchStrategy[OpCase]:
    """conv_transpose2d gradient problems: ``conv_transpose2d_configs(**overrides)``, x, weight and bias."""
    return conv_transpose2d_configs(**overrides).map(_conv_transpose2d_case)


def conv2d_weight_cases(**overrides: Any) -> st.SearchStrategy[OpCase]:
    """conv2d_weight gradient problems: a ``conv2d_configs(**overrides)`` input and a drawn output gradient
    of conv2d's output shape; both are checked."""

    @st.composite
    def case(draw: st.DrawFn) -> OpCase:
        cfg = draw(conv2d_configs(**overrides))
        attrs = {k: cfg[k] for k in ("stride", "padding", "dilation", "groups")}
        x, size = cfg["x"], cfg["weight"].shape
        out_shape = ops.conv2d(x, cfg["weight"], **attrs).shape
        grad_output = draw(arrays(out_shape, dtype=x.dtype))
        return OpCase(lambda t, g: ops.conv2d_weight(t, size, g, **attrs), (_grad(x), _grad(grad_output)))

    return case()


def _pool2d_cases(name: str, distinct: bool) -> Callable[..., st.SearchStrategy[OpCase]]:
    def cases(**overrides: Any) -> st.SearchStrategy[OpCase]:
        def case(cfg: dict[str, Any]) -> OpCase:
            fn = getattr(ops, name)
            args = pool2d_args(name, cfg)
            return OpCase(lambda t: fn(t, **args), (_grad(cfg["x"]),))

        return pool2d_configs(**{"distinct": distinct, **overrides}).map(case)

    return cases


def avg_pool2d_backward_cases(**overrides: Any) -> st.SearchStrategy[OpCase]:
    """avg_pool2d's input-gradient op: a ``pool2d_configs(**overrides)`` geometry and an output gradient."""
    from microgradcnn.ops.pool import AvgPool2dBackwardFn, _pool_args

    def case(cfg: dict[str, Any]) -> OpCase:
        x = Tensor(cfg["x"])
        args = pool2d_args("avg_pool2d", cfg)
        geometry = (args[k] for k in ("kernel_size", "stride", "padding", "ceil_mode"))
        attrs = _pool_args("avg_pool2d", x, *geometry)
        attrs["count_include_pad"] = args["count_include_pad"]
        grad = ops.avg_pool2d(x, **args).data + 0.5  # any values of the output's shape
        return OpCase(lambda g: AvgPool2dBackwardFn.apply(g, x_shape=x.shape, **attrs), (_grad(grad),))

    return pool2d_configs(**{"distinct": False, **overrides}).map(case)


@st.composite
def linear_cases(draw: st.DrawFn, max_side: int = MAX_SIDE) -> OpCase:
    """x (..., in) with 0 to 2 leading axes, weight (out, in), and a bias or none."""
    fan_in, fan_out = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    lead = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    inputs = [draw(arrays((*lead, fan_in))), draw(arrays((fan_out, fan_in)))]
    if draw(st.booleans()):
        inputs.append(draw(arrays((fan_out,))))
    return OpCase(ops.linear, tuple(_grad(a) for a in inputs))


def _softmax_cases(name: str) -> Callable[..., st.SearchStrategy[OpCase]]:
    @st.composite
    def cases(draw: st.DrawFn, max_side: int = MAX_SIDE) -> OpCase:
        shape = draw(shapes(min_dims=1, max_side=max_side))
        axis = draw(st.integers(-len(shape), len(shape) - 1))
        fn = getattr(ops, name)
        return OpCase(lambda t: fn(t, axis=axis), (_grad(draw(arrays(shape, floats(-5.0, 5.0)))),))

    return cases


def _class_weights(c: int) -> Any:
    """None or positive per-class weights (C,): a zero divisor for the mean stays impossible."""
    return st.one_of(st.none(), arrays((c,), floats(0.5, 2.0)))


@st.composite
def _classification(draw: st.DrawFn, max_n: int, max_classes: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Scores (N, C) or spatial (N, C, d1[, d2]) in [-5, 5], class-index targets (N, d1, ...) with some set
    to the drawn ``ignore_index`` (-100 or a class) but never all, and that ignore_index."""
    n, c = draw(st.integers(1, max_n)), draw(st.integers(1, max_classes))
    spatial = draw(st.sampled_from([(), (), (2,), (1, 2)]))
    scores = draw(arrays((n, c, *spatial), floats(-5.0, 5.0)))
    target = draw(hnp.arrays(np.int64, (n, *spatial), elements=st.integers(0, c - 1))).reshape(-1)
    # A class as ignore_index needs a second class for the first target, which is always kept (an all-ignored
    # mean is NaN, as in PyTorch: no gradient to check).
    ignore_index = draw(st.sampled_from([-100, -100, *range(c)])) if c > 1 else -100
    if ignore_index >= 0:
        target[0] = (ignore_index + 1) % c
    target[draw(hnp.arrays(np.bool_, target.shape)) & (np.arange(target.size) > 0)] = ignore_index
    return scores, target.reshape((n, *spatial)), ignore_index


@st.composite
def cross_entropy_cases(draw: st.DrawFn, max_n: int = 4, max_classes: int = 5) -> OpCase:
    """Logits (N, C) or spatial (N, C, d...) against class indices (some ignored, by -100 or a class) or
    class probabilities (a Tensor target that requires grad too), with or without class weights, every
    reduction and label smoothing 0 to 1."""
    logits, target, ignore_index = draw(_classification(max_n, max_classes))
    c = logits.shape[1]
    weight = draw(_class_weights(c))
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    eps = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    kw = {"weight": weight, "reduction": reduction, "label_smoothing": eps}
    if draw(st.booleans()):  # class probabilities, differentiated too
        probs = draw(arrays(logits.shape, floats(0.0, 1.0)))
        return OpCase(lambda t, q: ops.cross_entropy(t, q, **kw), (_grad(logits), _grad(probs)))
    return OpCase(lambda t: ops.cross_entropy(t, target, ignore_index=ignore_index, **kw), (_grad(logits),))


@st.composite
def nll_loss_cases(draw: st.DrawFn, max_n: int = 4, max_classes: int = 5) -> OpCase:
    """Log-probabilities (N, C) or spatial against class indices (some ignored), weights, every reduction."""
    log_probs, target, ignore_index = draw(_classification(max_n, max_classes))
    weight = draw(_class_weights(log_probs.shape[1]))
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))

    def fn(t: Tensor) -> Tensor:
        return ops.nll_loss(t, target, weight=weight, ignore_index=ignore_index, reduction=reduction)

    return OpCase(fn, (_grad(log_probs),))


@st.composite
def mse_loss_cases(draw: st.DrawFn) -> OpCase:
    """Input and target of one shape (0-d included), both differentiated, every reduction."""
    shape = draw(shapes())
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    x, t = draw(arrays(shape)), draw(arrays(shape))
    return OpCase(lambda a, b: ops.mse_loss(a, b, reduction=reduction), (_grad(x), _grad(t)))


@st.composite
def binary_cross_entropy_with_logits_cases(draw: st.DrawFn) -> OpCase:
    """Logits in [-5, 5] and targets in [0, 1] of one shape (both differentiated), with or without an
    element weight (the full shape or the last axis) and a pos_weight (the last axis), every reduction."""
    shape = draw(shapes(min_dims=1))
    x, y = draw(arrays(shape, floats(-5.0, 5.0))), draw(arrays(shape, floats(0.0, 1.0)))
    weight = draw(st.one_of(st.none(), arrays(st.sampled_from([shape, shape[-1:]]), floats(0.5, 2.0))))
    pos_weight = draw(st.one_of(st.none(), arrays(shape[-1:], floats(0.5, 3.0))))
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    kw = {"weight": weight, "pos_weight": pos_weight, "reduction": reduction}
    return OpCase(lambda a, b: ops.binary_cross_entropy_with_logits(a, b, **kw), (_grad(x), _grad(y)))


@st.composite
def cat_cases(draw: st.DrawFn, max_tensors: int = 3) -> OpCase:
    """1 to ``max_tensors`` tensors of up to 3 axes, equal except along the (possibly negative) axis."""
    shape = draw(shapes(min_dims=1))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    sizes = draw(st.lists(st.integers(1, MAX_SIDE), min_size=1, max_size=max_tensors))
    ax = axis % len(shape)
    parts = [draw(arrays((*shape[:ax], n, *shape[ax + 1 :]))) for n in sizes]
    return OpCase(lambda *ts: ops.cat(ts, axis=axis), tuple(_grad(a) for a in parts))


@st.composite
def stack_cases(draw: st.DrawFn, max_tensors: int = 3) -> OpCase:
    """1 to ``max_tensors`` tensors of one shape (0-d included) and a new axis in [-ndim - 1, ndim]."""
    shape = draw(shapes())
    axis = draw(st.integers(-len(shape) - 1, len(shape)))
    parts = draw(st.lists(arrays(shape), min_size=1, max_size=max_tensors))
    return OpCase(lambda *ts: ops.stack(ts, axis=axis), tuple(_grad(a) for a in parts))


@st.composite
def where_cases(draw: st.DrawFn) -> OpCase:
    """A boolean condition and two operands, the three broadcasting together (missing and size-1 axes)."""
    sc, sa, sb = draw(broadcastable_shapes(num_shapes=3))
    cond = draw(hnp.arrays(np.bool_, sc))
    return OpCase(lambda a, b: ops.where(cond, a, b), (_grad(draw(arrays(sa))), _grad(draw(arrays(sb)))))


def _extremum_cases(name: str) -> Callable[..., st.SearchStrategy[OpCase]]:
    @st.composite
    def cases(draw: st.DrawFn) -> OpCase:
        # a and b drawn as one spaced array: no value of a is within a finite-difference step of one of b
        sa, sb = draw(broadcastable_shapes())
        na, nb = int(np.prod(sa)), int(np.prod(sb))
        values = draw(spaced_arrays((na + nb,)))
        a, b = values[:na].reshape(sa), values[na:].reshape(sb)
        return OpCase(getattr(ops, name), (_grad(a), _grad(b)))

    return cases


@st.composite
def clip_cases(draw: st.DrawFn) -> OpCase:
    """clip with either bound or both (min > max too), x kept 0.05 away from both bounds (the kinks)."""
    low, high = draw(st.sampled_from([(-0.5, 0.5), (None, 0.3), (-0.2, None), (1.0, -1.0), (0.0, 0.0)]))
    bounds = [b for b in (low, high) if b is not None]
    elements = floats().filter(lambda v: all(np.abs(v - b) > 0.05 for b in bounds))
    x = draw(arrays(shapes(), elements))
    return OpCase(lambda t: ops.clip(t, low, high), (_grad(x),))


@st.composite
def expand_cases(draw: st.DrawFn) -> OpCase:
    """A shape with size-1 axes stretched, up to 2 new leading axes, and -1 for some kept sizes."""
    shape = draw(shapes(max_side=3))
    shape = tuple(1 if draw(st.booleans()) else s for s in shape)
    lead = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    tail = tuple(
        draw(st.integers(1, 3)) if s == 1 and draw(st.booleans()) else -1 if draw(st.booleans()) else s
        for s in shape
    )
    return OpCase(lambda t: ops.expand(t, (*lead, *tail)), (_grad(draw(arrays(shape))),))


@st.composite
def flip_cases(draw: st.DrawFn) -> OpCase:
    """A flip along None (every axis), one axis or a tuple of them."""
    shape = draw(shapes())
    axis = draw(axes(len(shape)))
    return OpCase(lambda t: ops.flip(t, axis), (_grad(draw(arrays(shape))),))


@st.composite
def pad_cases(draw: st.DrawFn) -> OpCase:
    """PyTorch-order pad tuples for the last 1 to ndim axes: widths -2 to 2, crops never beyond an axis."""
    shape = draw(shapes(min_dims=1))
    reached = draw(st.integers(1, len(shape)))
    widths: list[int] = []
    for s in reversed(shape[-reached:]):  # last axis first, as F.pad reads them
        lo = draw(st.integers(-min(2, s), 2))
        hi = draw(st.integers(-min(2, s + min(lo, 0)), 2))
        widths += [lo, hi]
    value = draw(st.sampled_from([0.0, 1.5]))
    return OpCase(lambda t: ops.pad(t, tuple(widths), value=value), (_grad(draw(arrays(shape))),))


def _moment_cases(name: str) -> Callable[..., st.SearchStrategy[OpCase]]:
    @st.composite
    def cases(draw: st.DrawFn) -> OpCase:
        # spaced values: no slice is constant, where std has its kink; ddof only below the slice size
        shape = draw(shapes())
        axis, keepdims = draw(axes(len(shape))), draw(st.booleans())
        n = int(np.prod([shape[a] for a in normalize_axes(axis, shape, name)]))
        ddof = draw(st.integers(0, min(n - 1, 2)))
        fn = getattr(ops, name)
        x = draw(spaced_arrays(shape))
        return OpCase(lambda t: fn(t, axis=axis, ddof=ddof, keepdims=keepdims), (_grad(x),))

    return cases


@st.composite
def squeeze_cases(draw: st.DrawFn) -> OpCase:
    """squeeze of None, one axis or a tuple, on shapes with size-1 axes (naming other axes too)."""
    shape = tuple(1 if draw(st.booleans()) else s for s in draw(shapes()))
    axis = draw(axes(len(shape)))
    return OpCase(lambda t: ops.squeeze(t, axis), (_grad(draw(arrays(shape))),))


@st.composite
def unsqueeze_cases(draw: st.DrawFn) -> OpCase:
    """unsqueeze at any axis in [-ndim - 1, ndim]."""
    shape = draw(shapes())
    axis = draw(st.integers(-len(shape) - 1, len(shape)))
    return OpCase(lambda t: ops.unsqueeze(t, axis), (_grad(draw(arrays(shape))),))


@st.composite
def permute_cases(draw: st.DrawFn) -> OpCase:
    """A permutation of every axis, some given as negative axes."""
    shape = draw(shapes())
    perm = draw(st.permutations(range(len(shape))))
    perm = tuple(a - len(shape) if draw(st.booleans()) else a for a in perm)
    return OpCase(lambda t: ops.permute(t, perm), (_grad(draw(arrays(shape))),))


# Ops composed from registered ones (no registry entry of their own): their cases, for check_op(name, cases=).
# minimum is -maximum(-a, -b), min is -max(-x), expand records broadcast_to.
COMPOSED_CASES: dict[str, Callable[..., st.SearchStrategy[OpCase]]] = {
    "squeeze": squeeze_cases,
    "unsqueeze": unsqueeze_cases,
    "permute": permute_cases,
    "min": _reduction("min", lambda s: distinct_arrays(s)),
    "expand": expand_cases,
    "minimum": _extremum_cases("minimum"),
}


# Every registered op name -> a factory returning a strategy of OpCases (check_op calls it with its strategy
# overrides; entries without parameters take none). tests/ops/test_registry.py fails when a built-in op has
# no entry here; testing.register_cases adds entries for users' ops.
OP_CASES: dict[str, Callable[..., st.SearchStrategy[OpCase]]] = {
    "add": _binary(ops.add),
    "sub": _binary(ops.sub),
    "mul": _binary(ops.mul),
    "div": _binary(ops.div, away_from_zero(0.5, 2.0)),
    "neg": _unary(ops.neg),
    "pow": pow_cases,
    "rpow": rpow_cases,
    "exp": _unary(ops.exp),
    "log": _unary(ops.log, floats(0.5, 3.0)),
    "relu": _unary(ops.relu, away_from_zero(0.01, 2.0)),
    "tanh": _unary(ops.tanh),
    "sigmoid": _unary(ops.sigmoid, floats(-5.0, 5.0)),
    "sum": _reduction("sum", lambda s: arrays(s)),
    "mean": _reduction("mean", lambda s: arrays(s)),
    "max": _reduction("max", lambda s: distinct_arrays(s)),
    "reshape": reshape_cases,
    "transpose": transpose_cases,
    "getitem": getitem_cases,
    "scatter": scatter_cases,
    "broadcast_to": broadcast_to_cases,
    "matmul": matmul_cases,
    "linear": linear_cases,
    "conv2d": conv2d_cases,
    "conv_transpose2d": conv_transpose2d_cases,
    "conv2d_weight": conv2d_weight_cases,
    "max_pool2d": _pool2d_cases("max_pool2d", distinct=True),
    "avg_pool2d": _pool2d_cases("avg_pool2d", distinct=False),
    "avg_pool2d_backward": avg_pool2d_backward_cases,
    "softmax": _softmax_cases("softmax"),
    "log_softmax": _softmax_cases("log_softmax"),
    "cross_entropy": cross_entropy_cases,
    "nll_loss": nll_loss_cases,
    "mse_loss": mse_loss_cases,
    "binary_cross_entropy_with_logits": binary_cross_entropy_with_logits_cases,
    "cat": cat_cases,
    "stack": stack_cases,
    "where": where_cases,
    "maximum": _extremum_cases("maximum"),
    "abs": _unary(ops.abs, away_from_zero(0.01, 2.0)),
    "sqrt": _unary(ops.sqrt, floats(0.5, 3.0)),
    "clip": clip_cases,
    "flip": flip_cases,
    "pad": pad_cases,
    "logsumexp": _reduction("logsumexp", lambda s: arrays(s, floats(-5.0, 5.0))),
    "var": _moment_cases("var"),
    "std": _moment_cases("std"),
}


# ---- activations and batch norm -------------------------------------------------------------------------
@st.composite
def leaky_relu_cases(draw: st.DrawFn) -> OpCase:
    """leaky_relu with slopes below, at and above 0 (and above 1); x keeps 0.05 away from the kink."""
    slope = draw(st.sampled_from([0.01, 0.2, -0.5, 0.0, 1.5]))
    x = draw(arrays(shapes(), away_from_zero(0.05, 3.0)))
    return OpCase(lambda t: ops.leaky_relu(t, slope), (_grad(x),))


@st.composite
def elu_cases(draw: st.DrawFn) -> OpCase:
    """elu with several alphas; x keeps 0.05 away from 0, where the derivative jumps unless alpha = 1."""
    alpha = draw(st.sampled_from([1.0, 0.5, 2.0]))
    x = draw(arrays(shapes(), away_from_zero(0.05, 4.0)))
    return OpCase(lambda t: ops.elu(t, alpha), (_grad(x),))


@st.composite
def softplus_cases(draw: st.DrawFn) -> OpCase:
    """softplus with several betas and thresholds, some inside the drawn range; x keeps 0.05 / beta away
    from the switch to the linear branch at beta * x = threshold."""
    beta = draw(st.sampled_from([1.0, 0.5, 3.0]))
    threshold = draw(st.sampled_from([20.0, 1.0, 0.5]))
    x = draw(arrays(shapes(), floats(-4.0, 4.0)))
    near = np.abs(beta * x - threshold) < 0.05
    x = np.where(near, x + 0.1 / beta, x)
    return OpCase(lambda t: ops.softplus(t, beta, threshold), (_grad(x),))


@st.composite
def batch_norm_cases(draw: st.DrawFn, max_n: int = 3, max_channels: int = 3) -> OpCase:
    """The training-mode op on (N, C), (N, C, L) and (N, C, H, W), with or without weight and bias.

    Values are a shuffled grid 0.3 apart, so no channel is nearly constant: its tiny variance would make
    the normalisation (and central differences of it) ill-conditioned.
    """
    spatial = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    n = draw(st.integers(1 if spatial and int(np.prod(spatial)) > 1 else 2, max_n))
    c = draw(st.integers(1, max_channels))
    x = draw(distinct_arrays((n, c, *spatial), spacing=0.3))
    eps = draw(st.sampled_from([1e-5, 0.1]))
    if draw(st.booleans()):
        w, b = draw(arrays((c,), floats(-2.0, 2.0))), draw(arrays((c,)))
        fn = ops.norm.BatchNormFn
        return OpCase(lambda *ts: fn.apply(*ts, eps=eps), (_grad(x), _grad(w), _grad(b)))
    return OpCase(lambda t: ops.norm.BatchNormFn.apply(t, eps=eps), (_grad(x),))


OP_CASES.update(
    {
        "erf": _unary(ops.erf, floats(-3.0, 3.0)),
        "gelu": _unary(ops.gelu, floats(-4.0, 4.0)),
        "leaky_relu": leaky_relu_cases,
        "elu": elu_cases,
        "softplus": softplus_cases,
        "batch_norm": batch_norm_cases,
    }
)
