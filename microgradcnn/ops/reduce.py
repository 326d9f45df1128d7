"""Reductions over axes: sum mean max (NumPy's axis=None|int|tuple, negative axes, keepdims)."""

from __future__ import annotations

from typing import Any

import numpy as np

from microgradcnn.ops.shape import BroadcastToFn
from microgradcnn.tensor import Array, Context, Function, Tensor

Axis = int | tuple[int, ...] | None


def normalize_axes(axis: Axis, ndim: int, op: str) -> tuple[int, ...]:
    """``axis`` as a sorted tuple of non-negative axes; None means all.

    Raises:
        ValueError: naming ``op``, for an axis out of range or given twice.
    """
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int | np.integer) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < ndim and not (ndim == 0 and a in (0, -1)):
            raise ValueError(f"{op}: axis {a} is out of range for a tensor with {ndim} dims")
        out.append(int(a) % (ndim or 1))
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: repeated axis in {axis}")
    return tuple(sorted(out)) if ndim else ()


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
    return SumFn.apply(x, axis=normalize_axes(axis, x.ndim, "sum"), keepdims=bool(keepdims))


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
    return MeanFn.apply(x, axis=normalize_axes(axis, x.ndim, "mean"), keepdims=bool(keepdims))


class MaxFn(Function):
    """Maximum over axes. Backward: each slice's whole grad to its first maximum in row-major order.

    One position per slice, as ``torch.max(x, dim)`` and max-pooling do (``torch.amax`` splits ties). The
    backward is grad spread over the slice (``broadcast_to``) times a constant mask of the winners, so its
    own derivative is the same mask: the op is piecewise linear.
    """

    name = "max"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array, axis: tuple[int, ...], keepdims: bool) -> Array:
        kept = [a for a in range(x.ndim) if a not in axis]
        # Reduced axes last, in their original order, then flattened: argmax's first hit is then the first
        # maximum in row-major order over the reduced axes.
        moved = np.transpose(x, (*kept, *axis)).reshape((*(x.shape[a] for a in kept), -1))
        if moved.shape[-1] == 0:
            raise ValueError(f"max: cannot reduce an empty axis of shape {x.shape}")
        idx = np.argmax(moved, axis=-1)[..., None]
        ctx.save_for_backward(x.shape, moved.shape, idx, kept)
        out = np.take_along_axis(moved, idx, axis=-1)[..., 0]
        return np.expand_dims(out, axis) if keepdims else out

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array]:
        shape, moved_shape, idx, kept = ctx.saved_tensors
        axes = ctx.attrs["axis"]
        winners = np.zeros(moved_shape, dtype=grad.dtype)
        np.put_along_axis(winners, idx, 1, axis=-1)
        winners = winners.reshape(tuple(shape[a] for a in (*kept, *axes)))
        mask = np.transpose(winners, np.argsort((*kept, *axes)))
        return (_spread(grad, shape, axes, ctx.attrs["keepdims"]) * mask,)


def max(x: Tensor, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """Maximum over ``axis`` (None: every axis); the gradient goes to one position per reduced slice.

    Raises:
        ValueError: for an empty reduced axis or an axis out of range.
    """
    return MaxFn.apply(x, axis=normalize_axes(axis, x.ndim, "max"), keepdims=bool(keepdims))


