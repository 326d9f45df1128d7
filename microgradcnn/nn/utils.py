"""Utilities over a model's parameters, with PyTorch's names (``torch.nn.utils``): gradient clipping.

>>> import numpy as np
>>> from microgradcnn import nn
>>> w = nn.Parameter(np.array([3.0, 4.0]))
>>> w.grad = np.array([3.0, 4.0])
>>> float(nn.utils.clip_grad_norm_([w], max_norm=1.0))
5.0
>>> np.round(w.grad, 6)
array([0.6, 0.8])
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from microgradcnn._checks import is_real
from microgradcnn.tensor import Tensor

__all__ = ["clip_grad_norm_"]


def clip_grad_norm_(
    parameters: Tensor | Iterable[Tensor],
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
) -> np.float64:
    """Scale the gradients of ``parameters`` in place so that their total norm is at most ``max_norm``, as
    ``torch.nn.utils.clip_grad_norm_``; return the total norm they had.

    The total norm is the ``norm_type``-norm of all gradients taken together, as if concatenated into one
    vector (``math.inf``: the largest absolute value). Every gradient is multiplied by
    ``min(1, max_norm / (total + 1e-6))``, so the direction of the update is kept and only its length
    shrinks. Parameters without a gradient are skipped; with none at all the norm is 0. ``parameters`` is a
    Tensor or an iterable of them (``model.parameters()``). The norm is computed in float64 and returned as
    ``np.float64`` (a Python float, with ``.item()`` as PyTorch's 0-d tensor has). A NaN or infinite norm
    clips as PyTorch does (the gradients become NaN), unless ``error_if_nonfinite`` makes it an error.

    Raises:
        TypeError: for a parameter that is not a Tensor.
        ValueError: for ``max_norm`` < 0 or ``norm_type`` not a number > 0.
        RuntimeError: for a NaN or infinite total norm, when ``error_if_nonfinite``.
    """
    where = "clip_grad_norm_"
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"{where}: parameter {i} is a {type(p).__name__}, not a Tensor")
    if not is_real(max_norm) or not max_norm >= 0:
        raise ValueError(f"{where}: max_norm must be a number >= 0, got {max_norm!r}")
    if not is_real(norm_type) or not norm_type > 0:
        raise ValueError(f"{where}: norm_type must be a number > 0 or math.inf, got {norm_type!r}")
    grads = [p.grad for p in params if p.grad is not None]
    # float64 whatever the gradients' dtype: a float32 sum of squares overflows for gradients near 1e19
    vectors = [np.asarray(g, dtype=np.float64).ravel() for g in grads if g.size]
    if not vectors:
        return np.float64(0.0)
    # as PyTorch: the norm of the per-gradient norms, which is the norm of the concatenation
    total = np.linalg.norm([np.linalg.norm(v, ord=float(norm_type)) for v in vectors], ord=float(norm_type))
    total = np.float64(total)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(
            f"{where}: the total {float(norm_type)}-norm of the gradients is {total}; "
            "pass error_if_nonfinite=False to clip anyway"
        )
    coef = min(float(max_norm) / (total + 1e-6), 1.0)  # min keeps a NaN coefficient, as torch.clamp does
    if coef != 1.0:
        for g in grads:
            g *= coef  # a Python float: a float32 gradient stays float32
    return total
