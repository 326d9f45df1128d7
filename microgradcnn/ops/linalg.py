"""Matrix products: matmul (batched, NumPy semantics for 1-d operands)."""

from __future__ import annotations

from typing import Any

import numpy as np

from microgradcnn.ops.elementwise import _pair
from microgradcnn.tensor import Array, Context, Function, Tensor


class MatmulFn(Function):
    """a @ b. Backward: grad @ b^T and a^T @ grad (the engine sums broadcast batch axes).

    A 1-d operand is a row (for a) or a column (for b) whose added axis is removed again, as in NumPy.
    """

    name = "matmul"

    @staticmethod
    def forward(ctx: Context, a: Array, b: Array) -> Array:
        ctx.save_for_backward(a, b)
        return np.matmul(a, b)

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array, Array]:
        a, b = ctx.saved_tensors
        if a.ndim == 1 and b.ndim == 1:  # a dot product: grad is a scalar
            return grad * b, grad * a
        a2 = a[None, :] if a.ndim == 1 else a  # (..., n, k)
        b2 = b[:, None] if b.ndim == 1 else b  # (..., k, m)
        g2 = grad
        if a.ndim == 1:
            g2 = g2[..., None, :]
        if b.ndim == 1:
            g2 = g2[..., None]
        da = np.matmul(g2, np.swapaxes(b2, -1, -2))  # (..., n, k)
        db = np.matmul(np.swapaxes(a2, -1, -2), g2)  # (..., k, m)
        if a.ndim == 1:
            da = da[..., 0, :]
        if b.ndim == 1:
            db = db[..., 0]
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
