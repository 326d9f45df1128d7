"""Ready-made models: the tutorial's seed CNN and a stronger two-block CNN, plus the ``MODELS`` name table.

Both take 28x28 grayscale digits scaled as ``x / 255 - 0.5`` (``microgradcnn.data.preprocess``), shape
(N, 1, 28, 28), and return (N, 10) logits; train them with ``functional.cross_entropy`` (softmax
cross-entropy, the tutorial's loss).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from microgradcnn import nn

__all__ = ["MODELS", "seed_cnn", "small_cnn"]


def seed_cnn(relu: bool = False, rng: np.random.Generator | None = None) -> nn.Sequential:
    """The original tutorial's network: Conv2d(1, 8, 3) -> MaxPool2d(2) -> Flatten -> Linear(13*13*8, 10).

    Shapes: (N, 1, 28, 28) -> conv (N, 8, 26, 26) -> pool (N, 8, 13, 13) -> (N, 1352) -> (N, 10) logits.
    As in the tutorial there is no nonlinearity besides the max-pool; ``relu=True`` inserts a ReLU after
    the conv. Weights are drawn from ``rng`` (PyTorch's default init), conv first.

    >>> model = seed_cnn(rng=np.random.default_rng(0))
    >>> sum(p.size for p in model.parameters())
    13610
    """
    layers: list[nn.Module] = [nn.Conv2d(1, 8, 3, rng=rng)]
    if relu:
        layers.append(nn.ReLU())
    layers += [nn.MaxPool2d(2), nn.Flatten(), nn.Linear(13 * 13 * 8, 10, rng=rng)]
    return nn.Sequential(*layers)


def small_cnn(rng: np.random.Generator | None = None) -> nn.Sequential:
    """A stronger model (CLI name ``cnn2``): two 5x5 conv blocks with ReLU, LeNet-style, ~18k parameters.

    Shapes: (N, 1, 28, 28) -> Conv2d(1, 16, 5), ReLU, MaxPool2d(2) -> (N, 16, 12, 12)
    -> Conv2d(16, 32, 5), ReLU, MaxPool2d(2) -> (N, 32, 4, 4) -> Flatten (N, 512) -> Linear(512, 10) logits.
    Trained with random shifts of up to 2 pixels (the CLI's default for it) it reaches about 98% on the
    mnist5k test split (docs/cli.md has the measured figures).

    >>> sum(p.size for p in small_cnn(rng=np.random.default_rng(0)).parameters())
    18378
    """
    return nn.Sequential(
        nn.Conv2d(1, 16, 5, rng=rng),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5, rng=rng),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 10, rng=rng),
    )


def _seed_cnn_relu(rng: np.random.Generator | None = None) -> nn.Sequential:
    return seed_cnn(relu=True, rng=rng)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "seed": seed_cnn,
    "seed-relu": _seed_cnn_relu,
    "cnn2": small_cnn,
}
"""Model name (the CLI's ``--model``) -> factory taking ``rng=``; checkpoints record the name."""
