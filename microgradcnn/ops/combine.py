"""Ops that combine several tensors: cat stack (joining), where maximum (elementwise choice), and minimum
composed from maximum."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from microgradcnn._checks import check_int
from microgradcnn.ops.elementwise import _pair
from microgradcnn.ops.reduce import normalize_axes
from microgradcnn.ops.shape import new_axis
from microgradcnn.tensor import Array, Context, Function, Tensor


def _tensors(tensors: Any, op: str) -> list[Tensor]:
    """``tensors`` (a non-empty list or tuple of tensors or arrays) as a list of Tensors.

    Raises:
        TypeError: naming ``op``, for a single tensor or anything but a list or tuple.
        ValueError: naming ``op``, for an empty sequence.
    """
    if isinstance(tensors, Tensor | np.ndarray) or not isinstance(tensors, Sequence):
        raise TypeError(f"{op}: tensors must be a list or tuple of tensors, got {type(tensors).__name__}")
    if not tensors:
        raise ValueError(f"{op}: needs at least one tensor, got an empty {type(tensors).__name__}")
    return [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]


class CatFn(Function):
    """The inputs joined along ``axis``. Backward: each input's slice of grad (a basic index, so ``getitem``
    under ``create_graph``)."""

    name = "cat"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, *xs: Array, axis: int) -> Array:
        ctx.save_for_backward(tuple(x.shape[axis] for x in xs))
        return np.concatenate(xs, axis=axis)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, ...]:
        (sizes,) = ctx.saved_tensors
        lead = (slice(None),) * ctx.attrs["axis"]
        bounds = np.cumsum((0, *sizes)).tolist()
        needs = ctx.needs_input_grad
        return tuple(grad[(*lead, slice(a, b))] if need else None
                     for need, (a, b) in zip(needs, itertools.pairwise(bounds), strict=True))


def cat(tensors: Sequence[Any], axis: int = 0) -> Tensor:
    """The tensors joined along an existing ``axis``, as ``torch.cat`` (``numpy.concatenate``).

    Shapes: every tensor has the same number of axes and the same sizes except along ``axis``; the result's
    ``axis`` is the sum of theirs. Mixed float32 and float64 give float64.

    Raises:
        TypeError: for ``tensors`` that is not a list or tuple, or an axis that is not an int.
        ValueError: for no tensors, a 0-d tensor, an axis out of range (``AxisError``), or shapes that differ
            elsewhere than along ``axis`` (naming all the shapes).
    """
    ts = _tensors(tensors, "cat")
    shapes = [t.shape for t in ts]
    if any(len(s) == 0 for s in shapes):
        raise ValueError(f"cat: a 0-d tensor cannot be joined along an axis (shapes {shapes}); use stack")
    (ax,) = normalize_axes(check_int(axis, "axis", "cat"), shapes[0], "cat")
    rest = {s[:ax] + s[ax + 1 :] for s in shapes}
    if len(rest) > 1 or len({len(s) for s in shapes}) > 1:
        raise ValueError(f"cat: shapes {shapes} must match except along axis {axis}")
    return CatFn.apply(*ts, axis=ax)


class StackFn(Function):
    """The inputs joined along a new ``axis``. Backward: each input's slice ``grad[..., i]`` along it."""

    name = "stack"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, *xs: Array, axis: int) -> Array:
        return np.stack(xs, axis=axis)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, ...]:
        lead = (slice(None),) * ctx.attrs["axis"]
        return tuple(grad[(*lead, i)] if need else None for i, need in enumerate(ctx.needs_input_grad))


def stack(tensors: Sequence[Any], axis: int = 0) -> Tensor:
    """The tensors, all of one shape, joined along a new ``axis`` (in ``[-ndim - 1, ndim]``), as
    ``torch.stack``. Shapes: n tensors of shape S give S with n inserted at ``axis``.

    Raises:
        TypeError: for ``tensors`` that is not a list or tuple, or an axis that is not an int.
        ValueError: for no tensors, differing shapes (naming them), or an axis out of range (``AxisError``).
    """
    ts = _tensors(tensors, "stack")
    shapes = [t.shape for t in ts]
    if len(set(shapes)) > 1:
        raise ValueError(f"stack: every tensor must have the same shape, got {shapes}")
    ax = new_axis(axis, shapes[0], "stack")
    return StackFn.apply(*ts, axis=ax)


class WhereFn(Function):
    """``a`` where the constant boolean ``cond`` holds, else ``b`` (all three broadcast). Backward: grad to
    ``a`` where cond, to ``b`` elsewhere, zero otherwise: ``where`` itself, so never ``inf * 0 = NaN``."""

    name = "where"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, a: Array, b: Array, cond: Array) -> Array:
        return np.where(cond, a, b)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, Any]:
        cond, zero = ctx.attrs["cond"], np.zeros((), grad.dtype)
        need_a, need_b = ctx.needs_input_grad
        return (WhereFn.call(grad, zero, cond=cond) if need_a else None,
                WhereFn.call(zero, grad, cond=cond) if need_b else None)


def where(cond: Any, a: Any, b: Any) -> Tensor:
    """Elementwise ``a if cond else b``, as ``torch.where``; ``cond``, ``a`` and ``b`` broadcast together.

    ``cond`` is a boolean array (or nested list, or Python bool), e.g. ``x > 0``: a comparison of tensors
    gives one. It has no gradient. ``a`` or ``b`` may be a Python number, which takes the other's dtype.

    Raises:
        TypeError: for a ``cond`` that is not boolean (a float Tensor included, as in PyTorch).
        ValueError: naming the three shapes, when they do not broadcast together.
    """
    if isinstance(cond, Tensor):
        raise TypeError(f"where: cond must be a boolean array such as x > 0, got a {cond.dtype} Tensor")
    mask = np.asarray(cond)
    if mask.dtype != np.bool_:
        raise TypeError(f"where: cond must be a boolean array such as x > 0, got dtype {mask.dtype}")
    a, b = _pair(a, b)
    try:
        np.broadcast_shapes(mask.shape, a.shape, b.shape)
    except ValueError:
        msg = f"where: shapes cond {mask.shape}, a {a.shape} and b {b.shape} do not broadcast together"
        raise ValueError(msg) from None
    return WhereFn.apply(a, b, cond=mask)


class MaximumFn(Function):
    """Elementwise maximum of a and b (NaN propagates). Backward: grad to the larger, split evenly at a tie,
    and the full grad to both where the result is NaN (neither is smaller: PyTorch's rule). The shares are
    constants, as comparisons of arrays or Tensors are."""

    name = "maximum"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, a: Array, b: Array) -> Array:
        ctx.save_for_backward(a, b)
        return np.maximum(a, b)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, Any]:
        a, b = ctx.saved_tensors
        tie = np.asarray(a == b)
        need_a, need_b = ctx.needs_input_grad
        wa = np.where(tie, 0.5, np.where(a < b, 0.0, 1.0)).astype(grad.dtype) if need_a else None
        wb = np.where(tie, 0.5, np.where(a > b, 0.0, 1.0)).astype(grad.dtype) if need_b else None
        return (None if wa is None else grad * wa), (None if wb is None else grad * wb)


def maximum(a: Any, b: Any) -> Tensor:
    """Elementwise maximum with broadcasting, as ``torch.maximum`` (a NaN in either gives NaN).

    The gradient at a tie ``a == b`` is split evenly between a and b, as in PyTorch.
    """
    return MaximumFn.apply(*_pair(a, b))


def minimum(a: Any, b: Any) -> Tensor:
    """Elementwise minimum with broadcasting, as ``torch.minimum``: composed as ``-maximum(-a, -b)``, so
    ties split the gradient evenly and a NaN result sends it to both, exactly as ``maximum`` (and PyTorch).
    """
    a, b = _pair(a, b)
    return -MaximumFn.apply(-a, -b)
