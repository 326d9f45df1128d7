"""The public face of the ops: ``from microgradcnn import functional as F``.

Everything in ``microgradcnn.ops`` is re-exported as it is, except ``flatten``, which defaults to
``start_axis=1`` here (PyTorch's ``torch.flatten`` starts at 0, ``nn.Flatten`` and CNN code at 1: the batch
axis is kept). ``Tensor.flatten`` keeps ``start_axis=0``.
"""

from __future__ import annotations

from microgradcnn import ops
from microgradcnn.ops import *  # noqa: F403
from microgradcnn.tensor import Tensor

__all__ = list(ops.__all__)


def flatten(x: Tensor, start_axis: int = 1) -> Tensor:
    """Merge axes ``start_axis`` .. last into one, keeping the batch axis by default.

    Shapes: (N, C, H, W) -> (N, C*H*W).

    Raises:
        ValueError: for a start_axis out of range (a 1-d x has no axis 1).

    >>> flatten(Tensor([[[1.0, 2.0], [3.0, 4.0]]])).shape
    (1, 4)
    """
    return ops.flatten(x, start_axis)
