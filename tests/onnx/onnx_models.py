"""The models the ONNX tests export and import: the seed CNN, cnn2, a conv stack with every conv option and
both pools (padded max pooling included), a model of every other mapped op, and one with a user's op."""

import numpy as np

import microgradcnn as mg
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


class EveryOp(nn.Module):
    """Each mapped op outside the CNN layers once, batch-independent: (N, 1, 28, 28) -> (N, 4)."""

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        self.fc = nn.Linear(28, 4, rng=rng)
        self.w = nn.Parameter(rng.uniform(-1, 1, size=(4, 4)).astype(np.float32))

    def forward(self, x):
        h = self.fc(x[:, 0, 1:27:2])  # getitem int and slices; linear on a 3-d input (MatMul + Add)
        h = (h.tanh() - h.sigmoid() * 0.5) / 2.0 + (-h).exp() * 0.1
        h = (h * h + 1.0).log() ** 1.5 + 2.0 ** h.relu() - h.max(axis=1, keepdims=True)
        h = h.transpose(0, 2, 1).reshape(x.shape[0], -1, 13).mean(axis=2) @ self.w  # (N, 4)
        h = mg.functional.softmax(h, axis=1) + mg.functional.log_softmax(h, axis=-1)
        return h + h.sum(axis=1, keepdims=True) * h[:, -1:]


class Softsign(mg.Function, register=False):
    """x / (1 + |x|): an op of the user's with no built-in ONNX mapping."""

    name = "onnx_test_softsign"

    @staticmethod
    def forward(ctx, x):
        denom = 1 + np.abs(x)
        ctx.save_for_backward(denom)
        return x / denom

    @staticmethod
    def backward(ctx, grad):
        (denom,) = ctx.saved_tensors
        return (grad / (denom * denom),)


class SoftsignModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 3, rng=np.random.default_rng(0))

    def forward(self, x):
        return Softsign.apply(self.fc(mg.functional.flatten(x)))
