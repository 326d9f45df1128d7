"""Every built-in op. Importing this package defines them all, which completes ``REGISTRY``."""

from microgradcnn.ops.activation import elu, erf, gelu, leaky_relu, softplus
from microgradcnn.ops.conv import conv2d
from microgradcnn.ops.conv_transpose import conv2d_weight, conv_transpose2d
from microgradcnn.ops.dropout import dropout
from microgradcnn.ops.elementwise import add, div, exp, log, mul, neg, pow, relu, sigmoid, sub, tanh
from microgradcnn.ops.linalg import linear, matmul
from microgradcnn.ops.loss import (
    binary_cross_entropy_with_logits,
    cross_entropy,
    log_softmax,
    mse_loss,
    nll_loss,
    softmax,
)
from microgradcnn.ops.norm import batch_norm
from microgradcnn.ops.pool import avg_pool2d, max_pool2d
from microgradcnn.ops.reduce import broadcast_to, max, mean, sum
from microgradcnn.ops.shape import flatten, getitem, reshape, scatter, transpose

__all__ = [
    "add",
    "avg_pool2d",
    "batch_norm",
    "binary_cross_entropy_with_logits",
    "broadcast_to",
    "conv2d",
    "conv2d_weight",
    "conv_transpose2d",
    "cross_entropy",
    "div",
    "dropout",
    "elu",
    "erf",
    "exp",
    "flatten",
    "gelu",
    "getitem",
    "leaky_relu",
    "linear",
    "log",
    "log_softmax",
    "matmul",
    "max",
    "max_pool2d",
    "mean",
    "mse_loss",
    "mul",
    "neg",
    "nll_loss",
    "pow",
    "relu",
    "reshape",
    "scatter",
    "sigmoid",
    "softmax",
    "softplus",
    "sub",
    "sum",
    "tanh",
    "transpose",
]
