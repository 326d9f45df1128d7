"""Shape ops: reshape transpose getitem scatter broadcast_to, and flatten composed from reshape."""

from __future__ import annotations

from typing import Any

import numpy as np

from microgradcnn.tensor import Array, Context, Function, Tensor, unbroadcast


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
            msg = f"cannot reshape a tensor of shape {x.shape} ({x.size} elements) to {shape}"
            raise ValueError(msg) from None

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array]:
        (shape,) = ctx.saved_tensors
        return (grad.reshape(shape),)


def reshape(x: Tensor, shape: Any) -> Tensor:
    """``x`` with the same elements in ``shape`` (an int or a tuple; one entry may be -1).

    Raises:
        ValueError: naming both shapes when the sizes differ.
    """
    shape = (int(shape),) if isinstance(shape, int | np.integer) else tuple(int(s) for s in shape)
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
    """Permute the axes of ``x`` (``None``: reverse them), as ``numpy.transpose``.

    Raises:
        ValueError: naming the shape, when ``axes`` is not a permutation of the axes.
    """
    perm = tuple(reversed(range(x.ndim))) if axes is None else tuple(int(a) for a in axes)
    if sorted(a % x.ndim if x.ndim else a for a in perm) != list(range(x.ndim)):
        raise ValueError(f"transpose: axes {perm} are not a permutation of the axes of shape {x.shape}")
    return TransposeFn.apply(x, axes=tuple(a % x.ndim for a in perm))


def _plain_index(index: Any) -> Any:
    """Tensors inside an index become arrays; lists become integer/bool arrays."""
    items = index if isinstance(index, tuple) else (index,)
    plain = tuple(
        i.data.astype(np.intp) if isinstance(i, Tensor) else np.asarray(i) if isinstance(i, list) else i
        for i in items
    )
    return plain if isinstance(index, tuple) else plain[0]


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


class BroadcastToFn(Function):
    """x stretched to ``shape`` by NumPy's broadcasting rules, as a fresh array. Backward: grad summed over
    the stretched axes (``unbroadcast``, itself made of ``sum`` and ``reshape``)."""

    name = "broadcast_to"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array, *, shape: tuple[int, ...]) -> Array:
        ctx.save_for_backward(x.shape)
        # empty + copyto, not np.broadcast_to: its Python wrapper costs ~10 us a call on small arrays, and
        # the result is a writable array of its own
        out = np.empty(shape, dtype=x.dtype)
        np.copyto(out, x)
        return out

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array]:
        (shape,) = ctx.saved_tensors
        return (unbroadcast(grad, shape),)


def broadcast_to(x: Any, shape: Any) -> Tensor:
    """``x`` broadcast to ``shape`` (NumPy's rules: size-1 and missing leading axes stretch), as a copy.

    Raises:
        ValueError: naming both shapes, when x does not broadcast to ``shape``.
    """
    x = x if isinstance(x, Tensor) else Tensor(x)
    shape = (int(shape),) if isinstance(shape, int | np.integer) else tuple(int(s) for s in shape)
    try:
        ok = np.broadcast_shapes(x.shape, shape) == shape
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"broadcast_to: x {x.shape} does not broadcast to {shape}")
    return BroadcastToFn.apply(x, shape=shape)


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
    """Merge axes ``start_axis`` .. last into one. Shapes: (N, C, H, W), start_axis=1 -> (N, C*H*W)."""
    shape = x.data.shape  # a plain tuple: this runs on every forward of a CNN
    if not shape:
        return reshape(x, (1,))
    ndim = len(shape)
    # type() first: ``int | np.integer`` builds a union object on every call
    integer = type(start_axis) is int or isinstance(start_axis, int | np.integer)
    if not integer or not -ndim <= start_axis < ndim:
        raise ValueError(f"flatten: start_axis {start_axis} is out of range for shape {shape}")
    return ReshapeFn.apply(x, shape=(*shape[: int(start_axis) % ndim], -1))
