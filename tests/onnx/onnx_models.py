"""The models the ONNX tests export and import: the seed CNN, cnn2, and a conv stack with every conv
option and both pools (padded max pooling included)."""

import numpy as np

from microgradcnn import models, nn


def conv_stack(rng=None):
    """Strided, padded, dilated and grouped convs, average pooling and padded max pooling: (N, 1, 28, 28)
    -> (N, 4, 14, 14) -> (N, 8, 14, 14) -> avg (N, 8, 7, 7) -> max, pad 1 (N, 8, 4, 4) -> (N, 10)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2, padding=1, rng=rng),
        nn.ReLU(),
        nn.Conv2d(4, 8, (3, 3), dilation=2, padding=2, groups=2, rng=rng),
        nn.AvgPool2d(2),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10, rng=rng),
    )


BUILDERS = {
    "seed": lambda: models.seed_cnn(rng=np.random.default_rng(1)),
    "cnn2": lambda: models.small_cnn(rng=np.random.default_rng(2)),
    "stack": lambda: conv_stack(np.random.default_rng(3)),
}


def digits(n, seed=0, dtype=np.float32):
    """``n`` random inputs shaped like the models' digits, (n, 1, 28, 28)."""
    return np.random.default_rng(seed).uniform(-0.5, 0.5, size=(n, 1, 28, 28)).astype(dtype)
