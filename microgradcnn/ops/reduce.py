"""Reductions over axes: sum mean max (NumPy's axis=None|int|tuple, negative axes, keepdims), and
broadcast_to, the transpose of a sum."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.exceptions import AxisError

from microgradcnn._checks import check_int
from microgradcnn.tensor import Array, Context, Function, Tensor, unbroadcast

Axis = int | tuple[int, ...] | None


def normalize_axes(
    axis: Any, shape: tuple[int, ...], op: str, *, what: str = "axis", sort: bool = True
) -> tuple[int, ...]:
    """``axis`` (None, an int, or a tuple or list of ints) as a tuple of non-negative axes of ``shape``.

    The one axis rule of every op (reductions, transpose, flatten, softmax): NumPy's negative axes, each
    axis an int by ``check_int`` (bools and floats refused), in range, and named at most once. None means
    every axis. A 0-d tensor takes axis 0 or -1, as in PyTorch, which name no axis (the result is ``()``).
    ``sort`` sorts the result (reductions); ``transpose`` keeps the given order.

    Raises:
        TypeError: naming ``op`` and the value, for an axis that is not an int.
        numpy.exceptions.AxisError: (a ValueError and an IndexError, as in NumPy) naming ``op``, the axis
            and the shape, for an axis out of range.
        ValueError: naming ``op``, for an axis given twice.
    """
    ndim = len(shape)
    if axis is None:
        return tuple(range(ndim))
    if type(axis) is int and -ndim <= axis < ndim:  # the common case first: these run on every op call
        return (axis + ndim if axis < 0 else axis,)
    axes = axis if isinstance(axis, tuple | list) else (axis,)
    out = []
    for a in axes:
        a = check_int(a, what, op)
        if not -ndim <= a < ndim:
            if ndim == 0 and a in (0, -1):
                continue
            raise AxisError(f"{op}: {what} {a} is out of range for a tensor of shape {shape}")
        out.append(a + ndim if a < 0 else a)
    if len(set(out)) != len(out) or (ndim == 0 and len(axes) > 1):
        raise ValueError(f"{op}: repeated axis in {axis} (tensor shape {shape})")
    return tuple(sorted(out)) if sort else tuple(out)


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


def _spread(grad: Any, shape: tuple[int, ...], axes: tuple[int, ...], keepdims: bool) -> Any:
    """``grad`` of a reduction over ``axes`` copied back over the reduced axes: an array (or, under
    ``create_graph``, a Tensor) of ``shape``, by the ``broadcast_to`` op."""
    if not keepdims and axes:  # put the reduced axes back as size 1
        grad = grad.reshape(tuple(1 if a in axes else s for a, s in enumerate(shape)))
    return BroadcastToFn.call(grad, shape=shape)


class SumFn(Function):
    """Sum over axes. Backward: grad copied to every element of its slice."""

    name = "sum"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array, axis: tuple[int, ...], keepdims: bool) -> Array:
        ctx.save_for_backward(x.shape)
        return x.sum(axis=axis, keepdims=keepdims)

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array]:
        (shape,) = ctx.saved_tensors
        return (_spread(grad, shape, ctx.attrs["axis"], ctx.attrs["keepdims"]),)


def sum(x: Tensor, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """Sum over ``axis`` (None: every axis).

    Shapes: the input less the reduced axes (kept as size 1 with ``keepdims``).
    """
    return SumFn.apply(x, axis=normalize_axes(axis, x.data.shape, "sum"), keepdims=bool(keepdims))


class MeanFn(Function):
    """Mean over axes. Backward: grad / n to every element of its slice (n = slice size)."""

    name = "mean"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array, axis: tuple[int, ...], keepdims: bool) -> Array:
        ctx.save_for_backward(x.shape)
        return x.mean(axis=axis, keepdims=keepdims)

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array]:
        (shape,) = ctx.saved_tensors
        axes = ctx.attrs["axis"]
        n = int(np.prod([shape[a] for a in axes]))
        return (_spread(grad / grad.dtype.type(n or 1), shape, axes, ctx.attrs["keepdims"]),)


def mean(x: Tensor, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """Mean over ``axis`` (None: every axis), as ``numpy.mean``."""
    return MeanFn.apply(x, axis=normalize_axes(axis, x.data.shape, "mean"), keepdims=bool(keepdims))


class MaxFn(Function):
    """Maximum over axes. Backward, for ``axis=None`` (every axis): the grad split evenly between all the
    tied maxima (``torch.max(x)``); for an explicit axis (or tuple of them, even all): each slice's whole
    grad to its first maximum in row-major order (``torch.max(x, dim)``, and max-pooling).

    Derivation and the reason for the two rules: docs/ops.md#max. The backward is made of ops (grad
    spread over each slice by ``broadcast_to``, times a constant mask of the winners), so its own
    derivative is the same mask: the op is piecewise linear.
    """

    name = "max"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array, axis: tuple[int, ...] | None, keepdims: bool) -> Array:
        if axis is None:
            # An array, never a NumPy scalar: the saved output must be the very array the op returns.
            out = np.asarray(x.max(keepdims=keepdims))
            ctx.save_for_backward(x, out)
            return out
        kept = [a for a in range(x.ndim) if a not in axis]
        # Reduced axes last, in their original order, then flattened: argmax's first hit is then the first
        # maximum in row-major order over the reduced axes.
        # (An explicit size, not -1, which NumPy cannot infer when a kept axis is empty.)
        reduced = math.prod(x.shape[a] for a in axis)
        moved = np.transpose(x, (*kept, *axis)).reshape((*(x.shape[a] for a in kept), reduced))
        idx = np.argmax(moved, axis=-1)[..., None]
        ctx.save_for_backward(x.shape, moved.shape, idx, kept)
        out = np.take_along_axis(moved, idx, axis=-1)[..., 0]
        return np.expand_dims(out, axis) if keepdims else out

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array]:
        if ctx.attrs["axis"] is None:
            x, out = ctx.saved_tensors
            # Comparisons give constant bool arrays (for arrays and Tensors alike). A NaN maximum is NaN's:
            # it shares the gradient between the NaNs, as PyTorch does.
            tied = (x == out) if out == out else (x != x)
            share = tied * (1.0 / np.count_nonzero(tied))
            return (grad * share.astype(x.dtype),)
        shape, moved_shape, idx, kept = ctx.saved_tensors
        axes = ctx.attrs["axis"]
        winners = np.zeros(moved_shape, dtype=grad.dtype)
        np.put_along_axis(winners, idx, 1, axis=-1)
        winners = winners.reshape(tuple(shape[a] for a in (*kept, *axes)))
        mask = np.transpose(winners, np.argsort((*kept, *axes)))
        return (_spread(grad, shape, axes, ctx.attrs["keepdims"]) * mask,)


def max(x: Tensor, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """Maximum over ``axis`` (None: every axis), as ``numpy.max``.

    The gradient at ties: with ``axis=None`` it is split evenly between all the tied maxima, as
    ``torch.max(x)``; with an explicit ``axis`` (an int or a tuple, even one naming every axis) each slice's
    gradient goes to its first maximum in row-major order, as ``torch.max(x, dim)``.

    Raises:
        ValueError: for an empty reduced axis, an axis out of range or repeated.
        TypeError: for an axis that is not an int.
    """
    shape = x.data.shape
    axes = None if axis is None else normalize_axes(axis, shape, "max")
    if x.data.size == 0 and (axes is None or any(shape[a] == 0 for a in axes)):
        raise ValueError(f"max: cannot reduce an empty axis of shape {shape}")
    return MaxFn.apply(x, axis=axes, keepdims=bool(keepdims))
