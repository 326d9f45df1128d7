"""Every built-in op. Importing this package defines them all, which completes ``REGISTRY``."""

from microgradcnn.ops.elementwise import add, div, exp, log, mul, neg, pow, relu, sigmoid, sub, tanh
from microgradcnn.ops.linalg import matmul
from microgradcnn.ops.reduce import max, mean, sum
from microgradcnn.ops.shape import flatten, getitem, reshape, transpose

__all__ = [
    "add",
    "div",
    "exp",
    "flatten",
    "getitem",
    "log",
    "matmul",
    "max",
    "mean",
    "mul",
    "neg",
    "pow",
    "relu",
    "reshape",
    "sigmoid",
    "sub",
    "sum",
    "tanh",
    "transpose",
]
