"""Neural-network building blocks with PyTorch's names: ``Module``, ``Parameter`` and the layers.

>>> import numpy as np
>>> from microgradcnn import nn
>>> model = nn.Sequential(nn.Linear(4, 8, rng=np.random.default_rng(0)), nn.ReLU(), nn.Linear(8, 2))
>>> sum(p.size for p in model.parameters())
58
"""

from microgradcnn import functional
from microgradcnn.nn import utils
from microgradcnn.nn.activation import ELU, GELU, LeakyReLU, Sigmoid, Softplus, Tanh
from microgradcnn.nn.dropout import Dropout
from microgradcnn.nn.layers import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    Conv2d,
    ConvTranspose2d,
    CrossEntropyLoss,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
)
from microgradcnn.nn.module import IncompatibleKeys, Module, Parameter, StateDictError
from microgradcnn.nn.norm import BatchNorm1d, BatchNorm2d

__all__ = [
    "ELU",
    "GELU",
    "AdaptiveAvgPool2d",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv2d",
    "ConvTranspose2d",
    "CrossEntropyLoss",
    "Dropout",
    "Flatten",
    "IncompatibleKeys",
    "LeakyReLU",
    "Linear",
    "MaxPool2d",
    "Module",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Softplus",
    "StateDictError",
    "Tanh",
    "functional",
    "utils",
]
