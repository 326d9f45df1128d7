"""Shape ops: reshape transpose getitem scatter, and flatten composed from reshape."""

from __future__ import annotations

from typing import Any

import numpy as np

from microgradcnn._checks import check_int
from microgradcnn.ops.reduce import normalize_axes
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


class ScatterFn(Function):
    """zeros(shape) with ``values`` added at ``index`` (NumPy indexing; repeated positions add up).

    The transpose of ``getitem``: each is the other's backward. ``unique`` says no position is indexed
    twice (basic indexing, a max-pool's winners), so a plain assignment does instead of ``np.add.at``.
    """

    name = "scatter"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, values: Array, *, shape: tuple[int, ...], index: Any, unique: bool) -> Array:
        out = np.zeros(shape, dtype=values.dtype)
        if unique:
            out[index] = values
        else:
            np.add.at(out, index, values)
        return out

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
