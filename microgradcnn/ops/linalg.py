"""Matrix products: matmul (batched, NumPy semantics for 1-d operands) and linear (x @ weight^T + bias)."""

from __future__ import annotations

from typing import Any

import numpy as np

from microgradcnn.ops.elementwise import _pair
from microgradcnn.tensor import Array, Context, Function, Tensor


def _swap_last(t: Any) -> Any:
    """``t`` with its last two axes swapped; the same call on an array and on a Tensor."""
    perm = (*range(t.ndim - 2), t.ndim - 1, t.ndim - 2)
    return t.transpose(perm)


class MatmulFn(Function):
    """a @ b. Backward: grad @ b^T and a^T @ grad (the engine sums broadcast batch axes).

    A 1-d operand is a row (for a) or a column (for b) whose added axis is removed again, as in NumPy. The
    backward products are this op again (``MatmulFn.call``), so it differentiates to any order.
    """

    name = "matmul"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, a: Array, b: Array) -> Array:
        ctx.save_for_backward(a, b)
        if a.ndim == b.ndim == 2:
            return np.dot(a, b)  # ~5x faster than np.matmul for the outer products of a batch-1 backward
        return np.matmul(a, b)

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array | None, Array | None]:
        a, b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        if a.ndim == 1 and b.ndim == 1:  # a dot product: grad is a scalar
            return (grad * b if need_a else None), (grad * a if need_b else None)
        a2 = a[None, :] if a.ndim == 1 else a  # (..., n, k)
        b2 = b[:, None] if b.ndim == 1 else b  # (..., k, m)
        g2 = grad
        if a.ndim == 1:
            g2 = g2[..., None, :]
        if b.ndim == 1:
            g2 = g2[..., None]
        da = db = None
        if need_a:
            da = MatmulFn.call(g2, _swap_last(b2))  # (..., n, k)
            da = da[..., 0, :] if a.ndim == 1 else da
        if need_b:
            db = MatmulFn.call(_swap_last(a2), g2)  # (..., k, m)
            db = db[..., 0] if b.ndim == 1 else db
        return da, db


def matmul(a: Any, b: Any) -> Tensor:
    """Matrix product with NumPy's rules: batched over leading axes, which broadcast; 1-d operands allowed.

    Shapes: (..., n, k) @ (..., k, m) -> (..., n, m).

    Raises:
        ValueError: naming both shapes, for 0-d operands or inner dimensions that differ.
    """
    a, b = _pair(a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: operands must have at least 1 dim, got shapes {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise ValueError(f"matmul: inner dimensions differ, shapes {a.shape} and {b.shape}")
    return MatmulFn.apply(a, b)


def bias_fits_in_place(out: Array, bias: Array) -> bool:
    """Whether ``out += bias`` keeps the dtype ``out + bias`` would have (a float64 out absorbs any bias)."""
    # np.result_type would say the same, at ~1 us a call
    return bias.dtype == out.dtype or out.dtype == np.float64


def add_bias(out: Array, bias: Array) -> Array:
    """``out + bias`` (bias already shaped to broadcast), in place when that keeps the promoted dtype."""
    if bias_fits_in_place(out, bias):
        return np.add(out, bias, out=out)  # out is a fresh array the op owns: no extra allocation
    return out + bias


class LinearFn(Function):
    """x @ weight^T (+ bias). Backward: dx = grad @ W, dW = grad^T @ x, db = grad summed over rows.

    Leading axes of x are flattened into one row axis so every product is one 2-d BLAS call (``np.dot``
    through ``MatmulFn``, ~5x faster than ``np.matmul`` for the outer product of dW at batch 1). The
    backward products are ``matmul`` ops, so the op differentiates to any order.
    Derivation: docs/ops.md#linear.
    """

    name = "linear"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array, w: Array, b: Array | None = None) -> Array:
        x2 = x.reshape(-1, x.shape[-1])  # (M, in): M = product of the leading axes
        out = np.dot(x2, w.T)  # (M, out)
        if b is not None:
            out = add_bias(out, b)
        ctx.save_for_backward(x, w)
        return out.reshape((*x.shape[:-1], w.shape[0]))

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array | None, ...]:
        x, w = ctx.saved_tensors
        needs = ctx.needs_input_grad
        # On arrays, matmul's kernel for 2-d operands (np.dot) without MatmulFn.call's dispatch; on Tensors
        # (create_graph) the recorded op, so the products differentiate again.
        mm = np.dot if isinstance(grad, np.ndarray) else MatmulFn.call
        g2 = grad.reshape(-1, w.shape[0])  # (M, out)
        dx = mm(g2, w).reshape(x.shape) if needs[0] else None
        dw = mm(g2.T, x.reshape(-1, x.shape[-1])) if needs[1] else None  # (out, in)
        if len(needs) == 2:
            return dx, dw
        return dx, dw, (g2.sum(axis=0) if needs[2] else None)


def linear(x: Any, weight: Any, bias: Any = None) -> Tensor:
    """Affine map ``x @ weight.T + bias``, as ``torch.nn.functional.linear``.

    Shapes: x (..., in), weight (out, in), bias (out,) or None -> (..., out).

    Raises:
        ValueError: naming the shapes, when weight is not 2-d, x's last axis is not ``in``, or bias is not
            (out,).

    >>> linear(Tensor([[1.0, 2.0]]), Tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]]), Tensor([0.0, 0.5, 1.0]))
    Tensor([[1. , 3.5, 5. ]], dtype=float32)
    """
    x = x if isinstance(x, Tensor) else Tensor(x)
    weight = weight if isinstance(weight, Tensor) else Tensor(weight)
    xs, ws = x.data.shape, weight.data.shape  # plain tuples: this runs on every call
    if len(ws) != 2 or not xs or xs[-1] != ws[1]:
        raise ValueError(f"linear: x {xs} and weight {ws} do not fit (..., in), (out, in)")
    if bias is None:
        return LinearFn.apply(x, weight)
    bias = bias if isinstance(bias, Tensor) else Tensor(bias)
    if bias.data.shape != (ws[0],):
        raise ValueError(f"linear: bias {bias.data.shape} must be (out,), weight is {ws}")
    return LinearFn.apply(x, weight, bias)
