"""Shape ops: reshape transpose getitem scatter, and flatten composed from reshape."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.exceptions import AxisError

from microgradcnn._checks import check_int, is_real
from microgradcnn.ops.reduce import BroadcastToFn, normalize_axes
from microgradcnn.tensor import Array, Context, Function, Tensor


class ReshapeFn(Function):
    """The same elements in a new shape. Backward: grad reshaped back."""

    name = "reshape"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array, shape: tuple[int, ...]) -> Array:
        ctx.save_for_backward(x.shape)
        try:
            return x.reshape(shape)
        except ValueError:  # checked only on failure: the happy path costs nothing extra
            if shape.count(-1) > 1:
                msg = f"only one axis may be -1, got {shape}"
            else:
                msg = f"cannot reshape a tensor of shape {x.shape} ({x.size} elements) to {shape}"
            raise ValueError(msg) from None

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array]:
        (shape,) = ctx.saved_tensors
        return (grad.reshape(shape),)


def reshape(x: Tensor, shape: Any) -> Tensor:
    """``x`` with the same elements in ``shape`` (an int, or a tuple or list of ints; one entry may be -1).

    Raises:
        TypeError: naming the entry, for one that is not an int (``3.7``, ``2.0`` and ``True`` included).
        ValueError: naming the shape, for two -1 entries or one below -1, and naming both shapes when the
            sizes differ.
    """
    shape = tuple(shape) if isinstance(shape, tuple | list) else (shape,)
    for s in shape:
        if type(s) is not int or s < -1:  # two cheap tests per entry in the usual case, all ints >= -1
            shape = tuple(check_int(s, "shape entry", "reshape") for s in shape)
            if any(s < -1 for s in shape):  # NumPy would read any negative size as -1
                raise ValueError(f"reshape: a size must be -1 or at least 0, got {shape}")
            break
    return ReshapeFn.apply(x, shape=shape)


class TransposeFn(Function):
    """Permute the axes. Backward: grad permuted by the inverse permutation."""

    name = "transpose"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array, axes: tuple[int, ...]) -> Array:
        return np.transpose(x, axes)

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array]:
        return (grad.transpose(tuple(int(a) for a in np.argsort(ctx.attrs["axes"]))),)


def transpose(x: Tensor, axes: Any = None) -> Tensor:
    """Permute the axes of ``x`` (``None``: reverse them), as ``numpy.transpose``; negative axes count from
    the end.

    Raises:
        TypeError: naming the value, for an axis that is not an int.
        numpy.exceptions.AxisError: (a ValueError and an IndexError) for an axis out of range.
        ValueError: naming the shape, for an axis given twice or too few or too many axes.
    """
    shape = x.data.shape
    if axes is None:
        return TransposeFn.apply(x, axes=tuple(range(len(shape) - 1, -1, -1)))
    perm = normalize_axes(axes, shape, "transpose", sort=False)
    if len(perm) != len(shape):
        msg = f"transpose: axes {tuple(axes)} do not permute the {len(shape)} axes of shape {shape}"
        raise ValueError(msg)
    return TransposeFn.apply(x, axes=perm)


def _plain_index(index: Any) -> Any:
    """Tensors inside an index become arrays; lists become integer/bool arrays."""
    items = index if isinstance(index, tuple) else (index,)
    plain = tuple(
        _whole(i.data) if isinstance(i, Tensor) else np.asarray(i) if isinstance(i, list) else i
        for i in items
    )
    return plain if isinstance(index, tuple) else plain[0]


def _whole(data: Array) -> Array:
    """A tensor used as an index (its data is float) as an intp array, refusing fractions and non-finite
    values: a cast would silently truncate ``1.1`` to 1.

    Raises:
        IndexError: naming the first bad value, as NumPy refuses a float array index.
    """
    bad = ~np.isfinite(data) | (data != np.round(data))
    if bad.any():
        raise IndexError(f"getitem: a tensor index must hold whole numbers, got {data[bad].flat[0]}")
    return data.astype(np.intp)


def _is_basic(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return all(i is None or i is Ellipsis or isinstance(i, int | slice | np.integer) for i in items)


class GetitemFn(Function):
    """x[index]. Backward: grad scattered into zeros of x's shape (the ``scatter`` op, whose backward is
    this one), repeated indices adding up."""

    name = "getitem"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array, index: Any) -> Array:
        ctx.save_for_backward(x.shape)
        return x[index]

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array]:
        (shape,) = ctx.saved_tensors
        index = ctx.attrs["index"]
        return (ScatterFn.call(grad, shape=shape, index=index, unique=_is_basic(index)),)


def scatter_kernel(values: Array, shape: tuple[int, ...], index: Any, unique: bool) -> Array:
    """``scatter``'s kernel: zeros(shape) with ``values`` added at ``index`` (assigned, when ``unique``)."""
    out = np.zeros(shape, dtype=values.dtype)
    if unique:
        out[index] = values
    else:
        np.add.at(out, index, values)
    return out


class ScatterFn(Function):
    """zeros(shape) with ``values`` added at ``index`` (NumPy indexing; repeated positions add up).

    The transpose of ``getitem``: each is the other's backward. ``unique`` says no position is indexed
    twice (basic indexing, a max-pool's winners), so a plain assignment does instead of ``np.add.at``.
    """

    name = "scatter"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, values: Array, *, shape: tuple[int, ...], index: Any, unique: bool) -> Array:
        return scatter_kernel(values, shape, index, unique)

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array]:
        return (GetitemFn.call(grad, index=ctx.attrs["index"]),)


def scatter(values: Any, shape: Any, index: Any) -> Tensor:
    """A tensor of zeros of ``shape`` with ``values`` added at ``index``, repeated positions adding up:
    the gradient of ``x[index]``. Shapes: ``values`` has the shape of ``zeros(shape)[index]``.

    Raises:
        IndexError: naming the shape, for an index out of range.
        ValueError: naming the op, when ``values`` does not fit the indexed positions.
    """
    values = values if isinstance(values, Tensor) else Tensor(values)
    shape = tuple(int(s) for s in shape)
    index = _plain_index(index)
    try:
        np.empty(shape)[index]
    except IndexError as err:
        raise IndexError(f"scatter: {err} (shape {shape})") from None
    return ScatterFn.apply(values, shape=shape, index=index, unique=_is_basic(index))


def getitem(x: Tensor, index: Any) -> Tensor:
    """``x[index]`` with ints, slices, None, Ellipsis, and integer or boolean arrays (NumPy semantics).

    Raises:
        IndexError: naming the shape, for an index out of range.
    """
    index = _plain_index(index)
    try:
        x.data[index]
    except IndexError as err:
        raise IndexError(f"getitem: {err} (tensor shape {x.shape})") from None
    return GetitemFn.apply(x, index=index)


def flatten(x: Tensor, start_axis: int = 0) -> Tensor:
    """Merge axes ``start_axis`` .. last into one. Shapes: (N, C, H, W), start_axis=1 -> (N, C*H*W).

    A 0-d tensor becomes shape (1,), as in PyTorch.

    Raises:
        TypeError: for a ``start_axis`` that is not an int.
        numpy.exceptions.AxisError: (a ValueError and an IndexError) for one out of range.
    """
    shape = x.data.shape  # a plain tuple: this runs on every forward of a CNN
    axes = normalize_axes(start_axis, shape, "flatten", what="start_axis")
    if not shape:
        return reshape(x, (1,))
    return ReshapeFn.apply(x, shape=(*shape[: axes[0]], -1))


def new_axis(axis: Any, shape: tuple[int, ...], op: str) -> int:
    """``axis`` as a non-negative axis of a result with one axis more than ``shape`` (``unsqueeze``,
    ``stack``): in ``[-ndim - 1, ndim]``, by ``normalize_axes`` on the result's number of axes.

    Raises:
        TypeError: naming ``op``, for an axis that is not an int (a tuple included).
        numpy.exceptions.AxisError: naming ``op``, the allowed range and ``shape``, for one out of range.
    """
    axis = check_int(axis, "axis", op)
    try:
        (ax,) = normalize_axes(axis, (*shape, 1), op)
    except AxisError:
        nd = len(shape)
        msg = f"{op}: axis {axis} is out of range [{-nd - 1}, {nd}] for a tensor of shape {shape}"
        raise AxisError(msg) from None
    return ax


def squeeze(x: Tensor, axis: Any = None) -> Tensor:
    """``x`` without its size-1 axes: all of them (``axis=None``) or those among ``axis`` (an int or a
    tuple), as ``torch.squeeze``: a named axis whose size is not 1 is left alone. Composed from ``reshape``.

    Raises:
        TypeError: for an axis that is not an int. numpy.exceptions.AxisError: for one out of range.
    """
    shape = x.data.shape
    axes = normalize_axes(axis, shape, "squeeze")
    return ReshapeFn.apply(x, shape=tuple(s for a, s in enumerate(shape) if s != 1 or a not in axes))


def unsqueeze(x: Tensor, axis: int) -> Tensor:
    """``x`` with a new size-1 axis at ``axis`` (in ``[-ndim - 1, ndim]``, as ``torch.unsqueeze``; -1
    appends). Composed from ``reshape``.

    Raises:
        TypeError: for an axis that is not an int. numpy.exceptions.AxisError: for one out of range.
    """
    shape = x.data.shape
    ax = new_axis(axis, shape, "unsqueeze")
    return ReshapeFn.apply(x, shape=(*shape[:ax], 1, *shape[ax:]))


def permute(x: Tensor, axes: Any) -> Tensor:
    """The axes of ``x`` reordered: axis ``i`` of the result is axis ``axes[i]`` of ``x`` (every axis once,
    negative ones counting from the end), as ``torch.permute``. Records the ``transpose`` op.

    Raises:
        TypeError: for an axis that is not an int. ValueError: naming the shape, for an axis out of range
            (``AxisError``) or repeated, or too few or too many axes.
    """
    shape = x.data.shape
    perm = normalize_axes(axes, shape, "permute", sort=False)
    if len(perm) != len(shape):
        raise ValueError(f"permute: axes {tuple(axes)} do not permute the {len(shape)} axes of shape {shape}")
    return TransposeFn.apply(x, axes=perm)


def expand(x: Tensor, shape: Any) -> Tensor:
    """``x`` broadcast to ``shape`` (an int or a tuple or list of ints), as ``torch.Tensor.expand``: new axes
    go in front, a size-1 axis stretches to any size, and -1 keeps an existing axis's size. Records the
    ``broadcast_to`` op (a fresh array; backward: grad summed over the stretched axes).

    Raises:
        TypeError: naming the entry, for a size that is not an int.
        ValueError: naming both shapes, for fewer sizes than ``x`` has axes, a size that differs from a
            non-1 axis, or a -1 (or size below -1) in a new leading axis.
    """
    sizes = tuple(shape) if isinstance(shape, tuple | list) else (shape,)
    sizes = tuple(check_int(s, "size", "expand", minimum=-1) for s in sizes)
    old = x.data.shape
    lead = len(sizes) - len(old)
    if lead < 0:
        raise ValueError(f"expand: {len(sizes)} sizes {sizes} for a tensor of {len(old)} axes {old}")
    if any(s == -1 for s in sizes[:lead]):
        raise ValueError(f"expand: -1 (keep the size) is not allowed in a new leading axis: {sizes}")
    target = sizes[:lead] + tuple(o if s == -1 else s for s, o in zip(sizes[lead:], old, strict=True))
    if any(o not in (1, t) for o, t in zip(old, target[lead:], strict=True)):
        raise ValueError(f"expand: cannot expand shape {old} to {sizes}: only size-1 axes can stretch")
    return BroadcastToFn.apply(x, shape=target)


class FlipFn(Function):
    """The order of the elements reversed along ``axes``. Backward: grad flipped the same way (flip is its
    own inverse and its own adjoint)."""

    name = "flip"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array, axes: tuple[int, ...]) -> Array:
        return np.flip(x, axes)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any]:
        return (FlipFn.call(grad, axes=ctx.attrs["axes"]),)


def flip(x: Tensor, axis: Any = None) -> Tensor:
    """``x`` reversed along ``axis`` (an int or a tuple; None: every axis), as ``numpy.flip`` and
    ``torch.flip``.

    Raises:
        TypeError: for an axis that is not an int.
        ValueError: for an axis out of range (``AxisError``) or repeated.
    """
    return FlipFn.apply(x, axes=normalize_axes(axis, x.data.shape, "flip"))


class PadFn(Function):
    """x widened by ``widths`` (one (before, after) pair per axis, NumPy order) filled with ``value``; a
    negative width crops instead. Backward: grad with the opposite widths and value 0, the op's adjoint:
    the padding is cut off again and a cropped border gets gradient 0."""

    name = "pad"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array, widths: tuple[tuple[int, int], ...], value: float) -> Array:
        # Crop first (the negative widths), then place what is left inside a filled array (the positive ones).
        crop = tuple(slice(-min(lo, 0), s + min(hi, 0)) for (lo, hi), s in zip(widths, x.shape, strict=True))
        kept = x[crop]
        grow = [(max(lo, 0), max(hi, 0)) for lo, hi in widths]
        if not any(lo or hi for lo, hi in grow):
            return kept
        out = np.full([s + lo + hi for s, (lo, hi) in zip(kept.shape, grow, strict=True)], value, x.dtype)
        out[tuple(slice(lo, lo + s) for s, (lo, _) in zip(kept.shape, grow, strict=True))] = kept
        return out

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any]:
        back = tuple((-lo, -hi) for lo, hi in ctx.attrs["widths"])
        return (PadFn.call(grad, widths=back, value=0.0),)


def pad(x: Tensor, pad: Any, value: float = 0.0) -> Tensor:
    """``x`` padded with ``value``, PyTorch's ``F.pad(x, pad)`` in its constant mode: ``pad`` is a tuple of
    (before, after) widths starting from the last axis, ``(left, right)``, ``(left, right, top, bottom)``,
    and so on; axes it does not reach are left alone. A negative width crops, as in PyTorch.

    Shapes: an axis of size s with widths (a, b) becomes s + a + b.

    Raises:
        TypeError: for a width that is not an int, a ``pad`` that is not a tuple or list, or a ``value`` that
            is not a real number.
        ValueError: naming the op and the values, for an odd number of widths, more pairs than ``x`` has
            axes, or negative widths that crop more than an axis holds.
    """
    if not isinstance(pad, tuple | list):
        raise TypeError(f"pad: pad must be a tuple or list of ints, got {type(pad).__name__}")
    widths = [check_int(p, "pad width", "pad") for p in pad]
    shape = x.data.shape
    if len(widths) % 2:
        raise ValueError(f"pad: pad needs (before, after) pairs, an even number of widths, got {tuple(pad)}")
    if len(widths) > 2 * len(shape):
        msg = f"pad: {len(widths) // 2} (before, after) pairs in {tuple(pad)} for a tensor of shape {shape}"
        raise ValueError(msg)
    if not is_real(value):
        raise TypeError(f"pad: value must be a real number, got {value!r} ({type(value).__name__})")
    # PyTorch's order is last axis first; NumPy order, one pair per axis, is what the op records.
    given = [(widths[i], widths[i + 1]) for i in range(0, len(widths), 2)][::-1]
    pairs = [(0, 0)] * (len(shape) - len(given)) + given
    for axis, ((lo, hi), s) in enumerate(zip(pairs, shape, strict=True)):
        if s + min(lo, 0) + min(hi, 0) < 0:
            msg = f"pad: widths {(lo, hi)} crop more than the {s} elements of axis {axis} (shape {shape})"
            raise ValueError(msg)
    return PadFn.apply(x, widths=tuple(pairs), value=float(value))
