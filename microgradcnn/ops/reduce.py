"""Reductions over axes: sum mean max (NumPy's axis=None|int|tuple, negative axes, keepdims), and
broadcast_to, the transpose of a sum."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.exceptions import AxisError

from microgradcnn._checks import check_int
from microgradcnn.ops.elementwise import ExpFn
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
    return MaxFn.apply(x, axis=_extremum_axes(x, axis, "max"), keepdims=bool(keepdims))


def _extremum_axes(x: Tensor, axis: Any, op: str) -> tuple[int, ...] | None:
    """The checked axes of ``max`` and ``min`` (None stays None: it selects max's even split of ties).

    Raises:
        ValueError: naming ``op`` and the shape, for an empty reduced axis (no maximum exists).
    """
    shape = x.data.shape
    axes = None if axis is None else normalize_axes(axis, shape, op)
    if x.data.size == 0 and (axes is None or any(shape[a] == 0 for a in axes)):
        raise ValueError(f"{op}: cannot reduce an empty axis of shape {shape}")
    return axes


def _kept_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` with the reduced ``axes`` as size 1: the keepdims shape of a reduction."""
    return tuple(1 if a in axes else s for a, s in enumerate(shape))


class LogsumexpFn(Function):
    """log(sum(exp(x))) over axes, computed as m + log(sum(exp(x - m))) with m the slice's maximum, so no
    exp overflows. Backward: grad * exp(x - out) (softmax, from the saved input and output)."""

    name = "logsumexp"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array, axis: tuple[int, ...], keepdims: bool) -> Array:
        m = np.max(x, axis=axis, keepdims=True, initial=-np.inf)  # initial: an empty slice gives -inf
        m = np.where(np.isfinite(m), m, 0)  # an all -inf slice (or one holding inf) needs no shift
        with np.errstate(divide="ignore", invalid="ignore"):  # log 0 = -inf for an all -inf slice
            out = np.log(np.exp(x - m).sum(axis=axis, keepdims=True)) + m
        out = out if keepdims else out.reshape(tuple(s for a, s in enumerate(x.shape) if a not in axis))
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any]:
        x, out = ctx.saved_tensors
        kept = _kept_shape(x.shape, ctx.attrs["axis"])
        with np.errstate(invalid="ignore"):  # inf - inf: NaN, as in PyTorch
            return (grad.reshape(kept) * ExpFn.call(x - out.reshape(kept)),)


def logsumexp(x: Tensor, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """``log(sum(exp(x)))`` over ``axis`` (None: every axis), without overflow for large x, as
    ``torch.logsumexp``. An empty or all ``-inf`` slice gives ``-inf``. Gradient: ``softmax(x)`` over the
    slice. Shapes: as ``sum``."""
    axes = normalize_axes(axis, x.data.shape, "logsumexp")
    return LogsumexpFn.apply(x, axis=axes, keepdims=bool(keepdims))


def _dof(shape: tuple[int, ...], axes: tuple[int, ...], ddof: int) -> tuple[int, int]:
    """The slice size n and the divisor n - ddof, floored at 0 (NumPy's and PyTorch's rule: inf or NaN)."""
    n = math.prod(shape[a] for a in axes)
    return n, n - ddof if n > ddof else 0


def _centered(x: Any, axes: tuple[int, ...]) -> Any:
    """``x - mean(x)`` over ``axes``, for arrays and (under ``create_graph``) Tensors alike, by ops.

    Taken relative to each slice's first element, which changes nothing in exact arithmetic (it cancels,
    derivative included) but makes a constant slice exactly 0 rather than a rounding error of its mean:
    so its std is exactly 0 and gets gradient 0, as in PyTorch. Elsewhere as stable as two passes.
    """
    n = math.prod(x.shape[a] for a in axes)
    d = x - x[tuple(slice(0, 1) if a in axes else slice(None) for a in range(len(x.shape)))]
    with np.errstate(divide="ignore", invalid="ignore"):  # an empty slice: 0 / 0
        return d - SumFn.call(d, axis=axes, keepdims=True) / n


def _var_grad(x: Any, g: Any, axes: tuple[int, ...], ddof: int, keepdims: bool) -> Any:
    """``g`` (of the variance's shape) times d var / dx = 2 (x - mean x) / (n - ddof), recomputed from x by
    ops, so that the rule is differentiable again."""
    _, dof = _dof(x.shape, axes, ddof)
    if not keepdims:
        g = g.reshape(_kept_shape(x.shape, axes))
    with np.errstate(divide="ignore", invalid="ignore"):  # n - ddof = 0 gives inf or NaN, as PyTorch
        return g * _centered(x, axes) * 2 / dof


def _var(x: Array, axes: tuple[int, ...], ddof: int, keepdims: bool) -> Array:
    """The variance kernel: the mean first, then the squared deviations (two passes: stable for offsets)."""
    d = _centered(x, axes)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (d * d).sum(axis=axes, keepdims=keepdims) / _dof(x.shape, axes, ddof)[1]


class VarFn(Function):
    """Variance over axes with ``ddof`` (divisor n - ddof). Backward: grad * 2 (x - mean) / (n - ddof)."""

    name = "var"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array, axis: tuple[int, ...], ddof: int, keepdims: bool) -> Array:
        ctx.save_for_backward(x)
        return np.asarray(_var(x, axis, ddof, keepdims))

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any]:
        (x,) = ctx.saved_tensors
        a = ctx.attrs
        return (_var_grad(x, grad, a["axis"], a["ddof"], a["keepdims"]),)


class StdFn(Function):
    """sqrt(var). Backward: the variance's rule applied to grad / (2 * std), and 0 where std = 0 (a
    constant slice), as PyTorch, not the 0 * inf = NaN that sqrt(var) composed would give."""

    name = "std"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array, axis: tuple[int, ...], ddof: int, keepdims: bool) -> Array:
        out = np.asarray(np.sqrt(_var(x, axis, ddof, keepdims)))
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any]:
        x, out = ctx.saved_tensors
        a = ctx.attrs
        # constant masks: where std = 0 the divisor is 1 and the share 0
        g = grad * (out != 0) / ((out + (out == 0)) * 2)
        return (_var_grad(x, g, a["axis"], a["ddof"], a["keepdims"]),)


def _var_args(op: str, x: Tensor, axis: Any, ddof: Any) -> tuple[tuple[int, ...], int]:
    """The checked axes and ddof of ``var`` and ``std``."""
    return normalize_axes(axis, x.data.shape, op), check_int(ddof, "ddof", op, minimum=0)


def var(x: Tensor, axis: Axis = None, ddof: int = 0, keepdims: bool = False) -> Tensor:
    """Variance over ``axis`` (None: every axis), dividing by ``n - ddof``, as ``numpy.var``
    (``torch.var(x, dim, correction=ddof)``). ``n - ddof <= 0`` gives inf or NaN, as both.

    Raises:
        TypeError: for a ``ddof`` that is not an int. ValueError: for a negative one. Axes as ``sum``.
    """
    axes, ddof = _var_args("var", x, axis, ddof)
    return VarFn.apply(x, axis=axes, ddof=ddof, keepdims=bool(keepdims))


def std(x: Tensor, axis: Axis = None, ddof: int = 0, keepdims: bool = False) -> Tensor:
    """Standard deviation, ``sqrt(var(x, axis, ddof))``, as ``numpy.std``. Its gradient is 0 over a
    constant slice (std 0), as in PyTorch. Raises as ``var``."""
    axes, ddof = _var_args("std", x, axis, ddof)
    return StdFn.apply(x, axis=axes, ddof=ddof, keepdims=bool(keepdims))


def min(x: Tensor, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """Minimum over ``axis`` (None: every axis), as ``numpy.min``: composed as ``-max(-x)``, so its
    gradient follows ``max``'s tie rules exactly (``axis=None`` splits ties evenly, an explicit axis routes
    each slice's gradient to its first minimum), and is twice differentiable wherever ``max`` is.

    Raises:
        ValueError: for an empty reduced axis, an axis out of range or repeated.
        TypeError: for an axis that is not an int.
    """
    return -MaxFn.apply(-x, axis=_extremum_axes(x, axis, "min"), keepdims=bool(keepdims))


def argmax(x: Tensor, axis: int | None = None, keepdims: bool = False) -> Array:
    """The index of the maximum along ``axis`` (None: into the flattened tensor), as ``numpy.argmax`` and
    ``torch.argmax``: the first one at a tie, a NaN counting as the maximum.

    Data, not a differentiable op: it returns a plain integer (intp) ndarray, which records no graph.

    Raises:
        TypeError: for an axis that is not an int (a tuple included). ValueError: for an empty tensor or
            axis, an axis out of range (``AxisError``).
    """
    data = x.data if isinstance(x, Tensor) else np.asarray(x)
    if axis is not None:
        (axis,) = normalize_axes(check_int(axis, "axis", "argmax"), data.shape, "argmax") or (None,)
    if data.size == 0:
        raise ValueError(f"argmax: cannot take the argmax of an empty tensor of shape {data.shape}")
    return np.asarray(np.argmax(data, axis=axis, keepdims=bool(keepdims)))
