"""Tools to prove gradients right: ``gradcheck`` (NumPy only), ``check_op`` and hypothesis ``strategies``."""

from microgradcnn.testing.check import check_op
from microgradcnn.testing.gradcheck import GradcheckError, gradcheck

__all__ = ["GradcheckError", "check_op", "gradcheck"]
