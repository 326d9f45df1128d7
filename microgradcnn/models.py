"""Ready-made models: the tutorial's seed CNN, a stronger two-block CNN, LeNet-5, a BatchNorm + Dropout CNN,
and the ``MODELS`` name table.

All take 28x28 grayscale digits scaled as ``x / 255 - 0.5`` (``microgradcnn.data.preprocess``), shape
(N, 1, 28, 28), and return (N, 10) logits; train them with ``functional.cross_entropy`` (softmax
cross-entropy, the tutorial's loss).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from microgradcnn import nn

__all__ = ["MODELS", "bn_cnn", "lenet5", "seed_cnn", "small_cnn"]


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


def lenet5(rng: np.random.Generator | None = None) -> nn.Sequential:
    """LeNet-5 (LeCun et al., 1998) on 28x28 digits: two tanh conv blocks with average pooling, 120-84-10.

    Shapes: (N, 1, 28, 28) -> Conv2d(1, 6, 5, padding=2), Tanh, AvgPool2d(2) -> (N, 6, 14, 14)
    -> Conv2d(6, 16, 5), Tanh, AvgPool2d(2) -> (N, 16, 5, 5) -> Flatten (N, 400) -> Linear(400, 120), Tanh
    -> Linear(120, 84), Tanh -> Linear(84, 10) logits. Padding 2 stands in for the original's 32x32 input.
    Tanh and average pooling are the paper's choices (its subsampling layers average 2x2 windows): this is
    the classic, kept as published rather than modernised with ReLU and max-pooling. Weights from ``rng``.

    >>> sum(p.size for p in lenet5(rng=np.random.default_rng(0)).parameters())
    61706
    """
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2, rng=rng),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5, rng=rng),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120, rng=rng),
        nn.Tanh(),
        nn.Linear(120, 84, rng=rng),
        nn.Tanh(),
        nn.Linear(84, 10, rng=rng),
    )


def bn_cnn(rng: np.random.Generator | None = None) -> nn.Sequential:
    """A BatchNorm + Dropout CNN (CLI name ``bn``): cnn2's conv blocks normalised, and a dropout head.

    Shapes: (N, 1, 28, 28) -> Conv2d(1, 16, 5, bias=False), BatchNorm2d(16), ReLU, MaxPool2d(2)
    -> (N, 16, 12, 12) -> Conv2d(16, 32, 5, bias=False), BatchNorm2d(32), ReLU, MaxPool2d(2) -> (N, 32, 4, 4)
    -> Flatten (N, 512) -> Linear(512, 128, bias=False), BatchNorm1d(128), ReLU, Dropout(0.25)
    -> Linear(128, 10) logits. The convs and the hidden Linear have no bias: the BatchNorm after each
    subtracts the mean, so a bias would do nothing. Call ``model.eval()`` before predicting (running
    statistics, no dropout); training code calls ``model.train()``. Weights are drawn from ``rng``, and the
    Dropout layer's generator is spawned from it (``rng.spawn``), so one seed fixes weights and masks.
    Trained 15 epochs with 2-pixel shifts and lr decay 0.85 it reaches 98.6-99.1 % on the mnist5k test
    split over seeds 0-4 (docs/layers.md has the command and figures).

    >>> model = bn_cnn(rng=np.random.default_rng(0))
    >>> sum(p.size for p in model.parameters())
    80378
    """
    if rng is None:
        rng = np.random.default_rng()
    return nn.Sequential(
        nn.Conv2d(1, 16, 5, bias=False, rng=rng),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5, bias=False, rng=rng),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 128, bias=False, rng=rng),
        nn.BatchNorm1d(128),
        nn.ReLU(),
        nn.Dropout(0.25, rng=rng.spawn(1)[0]),
        nn.Linear(128, 10, rng=rng),
    )


def _seed_cnn_relu(rng: np.random.Generator | None = None) -> nn.Sequential:
    return seed_cnn(relu=True, rng=rng)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "seed": seed_cnn,
    "seed-relu": _seed_cnn_relu,
    "cnn2": small_cnn,
    "lenet5": lenet5,
    "bn": bn_cnn,
}
"""Model name (the CLI's ``--model``) -> factory taking ``rng=``; checkpoints record the name."""
