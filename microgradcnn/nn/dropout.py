"""The Dropout layer: inverted dropout in training, the identity in eval, masks from its own generator."""

from __future__ import annotations

import numpy as np

from microgradcnn.nn.module import Module
from microgradcnn.ops.dropout import check_probability, dropout
from microgradcnn.tensor import Tensor


class Dropout(Module):
    """Zero each element with probability ``p`` in training and scale the rest by 1 / (1 - p), as
    ``torch.nn.Dropout``; the identity in eval. Shapes: any -> the same.

    The masks come from the layer's own generator ``self.rng``, one ``random`` draw per call: ``rng`` is a
    ``numpy.random.Generator`` (used as is), an int seed, or None (a fresh unseeded generator). Seeded, a
    training run draws the same masks every time. The generator is not part of ``state_dict`` (PyTorch's
    keys: Dropout has none); to continue a run's masks, save and restore ``rng.bit_generator.state``.

    >>> layer = Dropout(0.5, rng=0)
    >>> layer(Tensor(np.ones(6))).data
    array([2., 0., 0., 0., 2., 2.])
    >>> layer.eval()(Tensor(np.ones(2))).data
    array([1., 1.])

    Raises:
        ValueError: for ``p`` outside [0, 1].
        TypeError: for an ``rng`` that is neither a Generator, an int nor None.
    """

    def __init__(self, p: float = 0.5, rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        self.p = check_probability(p, "Dropout")
        seed_or_generator = rng is None or isinstance(rng, int | np.integer | np.random.Generator)
        if isinstance(rng, bool) or not seed_or_generator:
            raise TypeError(
                f"Dropout: rng must be a numpy.random.Generator, an int seed or None, got {rng!r}"
            )
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: any -> the same."""
        return dropout(x, self.p, self.training, self.rng)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace=False"
