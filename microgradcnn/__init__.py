"""microgradcnn: a small, fast, readable deep-learning framework on NumPy.

>>> import microgradcnn as mg
>>> x = mg.Tensor([1.0, -2.0], requires_grad=True)
>>> y = (x * x).sum()
>>> y.backward()
>>> x.grad
array([ 2., -4.], dtype=float32)
"""

from __future__ import annotations

import importlib
from typing import Any

from microgradcnn import _malloc
from microgradcnn.ops import cat, maximum, minimum, stack, where
from microgradcnn.tensor import (
    REGISTRY,
    Context,
    Function,
    Tensor,
    detect_anomaly,
    enable_grad,
    grad,
    is_grad_enabled,
    no_grad,
    unbroadcast,
)

__version__ = "0.1.0"

_malloc.tune()  # reuse freed large arrays instead of page-faulting fresh ones every step (see _malloc.py)

# Submodules load on first use, so `import microgradcnn` stays fast and the optional ones (testing needs
# hypothesis for its strategies, viz needs graphviz) cost nothing until asked for.
_SUBMODULES = ("functional", "nn", "optim", "testing", "viz", "data", "image", "models", "ops", "onnx",
               "report", "telemetry", "train", "checkpoint")

__all__ = [
    "REGISTRY",
    "Context",
    "Function",
    "Tensor",
    "cat",
    "detect_anomaly",
    "enable_grad",
    "grad",
    "is_grad_enabled",
    "maximum",
    "minimum",
    "no_grad",
    "stack",
    "unbroadcast",
    "where",
    *_SUBMODULES,
]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"microgradcnn.{name}")
    raise AttributeError(f"module 'microgradcnn' has no attribute {name!r}")
