"""Tools to prove gradients right: ``gradcheck``, ``gradgradcheck``, ``check_module_gradients``, ``check_op``.

``gradcheck`` and ``check_module_gradients`` need only NumPy; ``check_op``, ``register_cases`` and
``microgradcnn.testing.strategies`` need hypothesis (``pip install "microgradcnn[testing]"``), imported when
first called. A guide with examples: docs/testing.md.
"""

from microgradcnn.testing.check import check_op, register_cases
from microgradcnn.testing.gradcheck import GradcheckError, gradcheck, gradgradcheck
from microgradcnn.testing.modules import check_module_gradients

__all__ = [
    "GradcheckError",
    "check_module_gradients",
    "check_op",
    "gradcheck",
    "gradgradcheck",
    "register_cases",
]
