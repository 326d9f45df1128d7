"""Layers: Linear Conv2d ConvTranspose2d MaxPool2d AvgPool2d AdaptiveAvgPool2d Flatten ReLU CrossEntropyLoss,
and the Sequential container."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, overload

import numpy as np

from microgradcnn import functional as F
from microgradcnn import ops
from microgradcnn._checks import check_int
from microgradcnn.nn.module import Module, Parameter
from microgradcnn.ops.conv_transpose import check_output_padding
from microgradcnn.ops.window import IntPair, int_pair
from microgradcnn.tensor import Tensor


def _positive(value: Any, what: str, layer: str) -> int:
    """``value`` as an int >= 1 by the one int rule (TypeError for a non-int, ValueError below 1)."""
    return check_int(value, what, layer, minimum=1)


def _init_weight_and_bias(
    layer: Module,
    weight_shape: tuple[int, ...],
    fan_in: int,
    bias: bool,
    rng: np.random.Generator | None,
    bias_size: int | None = None,
) -> None:
    """Set ``layer.weight`` and ``layer.bias`` (or register None) as float32 Parameters from U(-b, b),
    b = 1/sqrt(fan_in): PyTorch's default init of Linear and the convolutions. Draws the weight first, then
    the bias, of ``bias_size`` (default: the weight's first axis)."""
    if rng is None:
        rng = np.random.default_rng()
    elif not isinstance(rng, np.random.Generator):
        name = type(layer).__name__
        raise TypeError(f"{name}: rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
    bound = 1.0 / math.sqrt(fan_in)
    layer.weight = Parameter(rng.uniform(-bound, bound, size=weight_shape).astype(np.float32))
    if bias:
        size = weight_shape[0] if bias_size is None else bias_size
        layer.bias = Parameter(rng.uniform(-bound, bound, size=size).astype(np.float32))
    else:
        layer.register_parameter("bias", None)


class Linear(Module):
    """y = x @ weight.T + bias, as ``torch.nn.Linear``.

    Shapes: x (..., in_features) -> (..., out_features); weight (out_features, in_features), bias
    (out_features,). Both are drawn from U(-1/sqrt(in_features), 1/sqrt(in_features)) as in PyTorch, from
    ``rng`` (a ``numpy.random.Generator``; weight first, then bias) or a fresh unseeded generator.

    >>> layer = Linear(4, 2, rng=np.random.default_rng(0))
    >>> layer(Tensor(np.ones((3, 4), dtype=np.float32))).shape
    (3, 2)
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, rng: np.random.Generator | None = None
    ) -> None:
        super().__init__()
        self.in_features = _positive(in_features, "in_features", "Linear")
        self.out_features = _positive(out_features, "out_features", "Linear")
        self.weight: Parameter
        self.bias: Parameter | None
        _init_weight_and_bias(self, (self.out_features, self.in_features), self.in_features, bias, rng)

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: (..., in_features) -> (..., out_features)."""
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
        )


class _ConvNd(Module):
    """The arguments Conv2d and ConvTranspose2d share, checked and stored as PyTorch names them."""

    output_padding: tuple[int, int] = (0, 0)

    def _set_arguments(self, in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair,
                       padding: IntPair, dilation: IntPair, groups: int) -> None:
        layer = type(self).__name__
        self.in_channels = _positive(in_channels, "in_channels", layer)
        self.out_channels = _positive(out_channels, "out_channels", layer)
        self.kernel_size = int_pair(kernel_size, "kernel_size", layer, 1)
        self.stride = int_pair(stride, "stride", layer, 1)
        self.padding = int_pair(padding, "padding", layer, 0)
        self.dilation = int_pair(dilation, "dilation", layer, 1)
        self.groups = _positive(groups, "groups", layer)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"{layer}: in_channels ({self.in_channels}) and out_channels ({self.out_channels}) "
                f"must both be divisible by groups ({self.groups})"
            )

    def extra_repr(self) -> str:
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        )
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.output_padding != (0, 0):
            text += f", output_padding={self.output_padding}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text


class Conv2d(_ConvNd):
    """2-D cross-correlation with learned filters, as ``torch.nn.Conv2d`` (zero padding).

    Shapes: x (N, in_channels, H, W) -> (N, out_channels, OH, OW); weight (out_channels, in_channels //
    groups, KH, KW), bias (out_channels,). ``kernel_size``, ``stride``, ``padding`` and ``dilation`` take an
    int or an (h, w) pair. Weight and bias are drawn from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with
    fan_in = in_channels / groups * KH * KW, as PyTorch's default, from ``rng`` (weight first).

    Raises:
        ValueError: naming the argument, for non-positive sizes or channels not divisible by ``groups``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        self._set_arguments(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        kh, kw = self.kernel_size
        per_group = self.in_channels // self.groups
        self.weight: Parameter
        self.bias: Parameter | None
        _init_weight_and_bias(self, (self.out_channels, per_group, kh, kw), per_group * kh * kw, bias, rng)

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: (N, in_channels, H, W) -> (N, out_channels, OH, OW)."""
        return F.conv2d(
            x,
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
        )


class ConvTranspose2d(_ConvNd):
    """Transposed 2-D convolution with learned filters, as ``torch.nn.ConvTranspose2d`` (zero padding).

    Shapes: x (N, in_channels, H, W) -> (N, out_channels, OH, OW) with OH = (H - 1) * stride - 2 * padding
    + dilation * (KH - 1) + output_padding + 1 (OW likewise); weight (in_channels, out_channels // groups,
    KH, KW), bias (out_channels,): PyTorch's names and layout, so state_dicts move between the two.
    Weight and bias are drawn from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = out_channels / groups
    * KH * KW (PyTorch's default for this weight layout), from ``rng`` (weight first).

    >>> up = ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1, rng=np.random.default_rng(0))
    >>> up(Tensor(np.zeros((1, 8, 7, 7), dtype=np.float32))).shape
    (1, 4, 14, 14)

    Raises:
        ValueError: naming the argument, for non-positive sizes, channels not divisible by ``groups``, or an
            output_padding not smaller than the stride or the dilation of its axis.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        output_padding: int | tuple[int, int] = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: int | tuple[int, int] = 1,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        self._set_arguments(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        self.output_padding = int_pair(output_padding, "output_padding", "ConvTranspose2d", 0)
        check_output_padding(self.output_padding, self.stride, self.dilation, "ConvTranspose2d")
        kh, kw = self.kernel_size
        per_group = self.out_channels // self.groups
        self.weight: Parameter
        self.bias: Parameter | None
        _init_weight_and_bias(self, (self.in_channels, per_group, kh, kw), per_group * kh * kw, bias, rng,
                              bias_size=self.out_channels)

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: (N, in_channels, H, W) -> (N, out_channels, OH, OW)."""
        return F.conv_transpose2d(
            x,
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            output_padding=self.output_padding,
            groups=self.groups,
            dilation=self.dilation,
        )


class _Pool2d(Module):
    """Shared arguments of the pooling layers: kernel_size, stride (default: kernel_size), padding and
    ceil_mode (checked when called)."""

    def __init__(self, kernel_size: IntPair, stride: IntPair | None, padding: IntPair, ceil_mode: bool
                 ) -> None:
        super().__init__()
        layer = type(self).__name__
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.ceil_mode = ceil_mode
        int_pair(kernel_size, "kernel_size", layer, 1)  # validate now, keep the int-or-pair the user gave
        int_pair(self.stride, "stride", layer, 1)
        int_pair(padding, "padding", layer, 0)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    """Maximum over each window, as ``torch.nn.MaxPool2d`` (PyTorch's arguments and repr).

    Shapes: (N, C, H, W) -> (N, C, OH, OW), OH = (H + 2*padding - dilation*(kernel-1) - 1) // stride + 1,
    rounded up with ``ceil_mode``. The gradient goes to the window's first maximum (see
    ``microgradcnn.functional.max_pool2d``).
    """

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        *,
        ceil_mode: bool = False,  # keyword-only: PyTorch's fifth positional argument is return_indices
    ) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.dilation = dilation
        int_pair(dilation, "dilation", type(self).__name__, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: (N, C, H, W) -> (N, C, OH, OW)."""
        return F.max_pool2d(x, self.kernel_size, stride=self.stride, padding=self.padding,
                            dilation=self.dilation, ceil_mode=self.ceil_mode)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", dilation={self.dilation}, ceil_mode={self.ceil_mode}"


class AvgPool2d(_Pool2d):
    """Mean over each window, as ``torch.nn.AvgPool2d`` (PyTorch's arguments and repr).

    Shapes: (N, C, H, W) -> (N, C, OH, OW), OH = (H + 2 * padding - kernel) // stride + 1, rounded up with
    ``ceil_mode``. ``count_include_pad`` (default True) counts the padding zeros in each window's divisor
    (see ``microgradcnn.functional.avg_pool2d``).
    """

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
    ) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.count_include_pad = count_include_pad

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: (N, C, H, W) -> (N, C, OH, OW)."""
        return F.avg_pool2d(x, self.kernel_size, stride=self.stride, padding=self.padding,
                            ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad)


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed output size, as ``torch.nn.AdaptiveAvgPool2d``.

    Shapes: (N, C, H, W) -> (N, C, OH, OW) for ``output_size`` an int or an (OH, OW) pair (None keeps that
    input size); output size 1 is global average pooling. Windows and errors (raised when called) as
    ``microgradcnn.functional.adaptive_avg_pool2d``.
    """

    def __init__(self, output_size: int | tuple[int | None, int | None] | None) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: (N, C, H, W) -> (N, C, OH, OW)."""
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class Flatten(Module):
    """Merge axes ``start_dim`` .. ``end_dim`` into one, as ``torch.nn.Flatten`` (PyTorch's argument names).

    Shapes: (N, C, H, W) -> (N, C * H * W) with the defaults.
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = int(start_dim)
        self.end_dim = int(end_dim)

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: (N, C, H, W) -> (N, C * H * W) with the defaults."""
        if self.end_dim == -1:  # ops.flatten itself: F.flatten only adds a default start axis
            return ops.flatten(x, self.start_dim)
        start, end = self.start_dim % x.ndim, self.end_dim % x.ndim
        if not (-x.ndim <= self.start_dim < x.ndim and -x.ndim <= self.end_dim < x.ndim and start <= end):
            raise ValueError(f"Flatten: dims {self.start_dim}..{self.end_dim} do not fit shape {x.shape}")
        return x.reshape((*x.shape[:start], -1, *x.shape[end + 1 :]))

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class ReLU(Module):
    """max(x, 0) elementwise, as ``torch.nn.ReLU``. Shapes: any -> the same."""

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: any -> the same."""
        return F.relu(x)


class CrossEntropyLoss(Module):
    """Softmax cross-entropy of logits against integer class labels, as ``torch.nn.CrossEntropyLoss``.

    Shapes: logits (N, K), target (N,) integers in [0, K) -> a scalar (``reduction="mean"`` or ``"sum"``)
    or (N,) (``"none"``). See ``microgradcnn.functional.cross_entropy``.
    """

    def __init__(self, reduction: str = "mean", label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.reduction = reduction
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, target: Any) -> Tensor:
        """Shapes: (N, K), (N,) -> scalar or (N,)."""
        return F.cross_entropy(logits, target, reduction=self.reduction, label_smoothing=self.label_smoothing)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, label_smoothing={self.label_smoothing}"


class Sequential(Module):
    """Modules run one after another, as ``torch.nn.Sequential``: children named ``"0"``, ``"1"``, ...

    Also takes one ``OrderedDict`` of name -> module. Indexing gives a child (``model[0]``) or, with a
    slice, a new Sequential sharing the children.

    >>> model = Sequential(Linear(4, 3, rng=np.random.default_rng(0)), ReLU())
    >>> [name for name, _ in model.named_parameters()]
    ['0.weight', '0.bias']
    """

    def __init__(self, *modules: Module | OrderedDict[str, Module]) -> None:
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            items: list[tuple[str, Any]] = list(modules[0].items())
        else:
            items = [(str(i), m) for i, m in enumerate(modules)]
        for name, module in items:
            if not isinstance(module, Module):
                raise TypeError(f"Sequential: item {name!r} is a {type(module).__name__}, not a Module")
            setattr(self, name, module)

    def forward(self, x: Any) -> Any:
        """Feed ``x`` through every child in order."""
        for module in self._modules.values():
            x = module(x)
        return x

    def append(self, module: Module) -> Sequential:
        """Add ``module`` at the end; returns self."""
        if not isinstance(module, Module):
            raise TypeError(f"Sequential.append: expected a Module, got {type(module).__name__}")
        setattr(self, str(len(self._modules)), module)
        return self

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    @overload
    def __getitem__(self, index: int) -> Module: ...

    @overload
    def __getitem__(self, index: slice) -> Sequential: ...

    def __getitem__(self, index: int | slice) -> Module | Sequential:
        items = list(self._modules.items())
        if isinstance(index, slice):
            return Sequential(OrderedDict(items[index]))
        try:
            return items[index][1]
        except IndexError:
            raise IndexError(f"Sequential: index {index} out of range for {len(items)} modules") from None
