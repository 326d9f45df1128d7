"""Inverted dropout: ``F.dropout``, a constant random mask multiplied into the input (``mul``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from microgradcnn._checks import is_real
from microgradcnn.ops.elementwise import mul
from microgradcnn.tensor import Tensor


def check_probability(p: Any, where: str) -> float:
    """``p`` as a float in [0, 1].

    Raises:
        ValueError: naming ``where`` and the value, for anything else (bools and NaN included).
    """
    if not is_real(p) or not 0 <= p <= 1:
        raise ValueError(f"{where}: dropout probability p must be in [0, 1], got {p!r}")
    return float(p)


def dropout(
    x: Tensor, p: float = 0.5, training: bool = True, rng: np.random.Generator | None = None
) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by 1 / (1 - p), as
    ``torch.nn.functional.dropout`` (inverted dropout: the expected value is unchanged).

    Shapes: any -> the same. Not ``training`` or ``p == 0``: x itself. ``p == 1``: zeros (PyTorch). The
    mask is one draw of ``rng.random(x.shape)`` (a fresh unseeded generator when None; pass one, as
    ``nn.Dropout`` does, for reproducible masks) and enters as a constant factor, so gradients are masked
    and scaled the same way, to any order.

    Raises:
        ValueError: for ``p`` outside [0, 1].
        TypeError: for an ``rng`` that is not a ``numpy.random.Generator``.
    """
    p = check_probability(p, "dropout")
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(f"dropout: rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
    if not training or p == 0:
        return x
    if not isinstance(x, Tensor):
        x = Tensor(x)
    if p == 1:
        return mul(x, np.zeros(x.shape, x.dtype))
    if rng is None:
        rng = np.random.default_rng()
    keep = rng.random(x.shape, dtype=x.dtype) >= p  # P(keep) = 1 - p; draws in x's dtype are cheaper
    return mul(x, keep * x.dtype.type(1.0 / (1.0 - p)))
