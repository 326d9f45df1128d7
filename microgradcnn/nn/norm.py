"""Batch normalisation layers: BatchNorm1d and BatchNorm2d, with running statistics kept as buffers."""

from __future__ import annotations

import numpy as np

from microgradcnn._checks import check_int, is_real
from microgradcnn.nn.module import Module, Parameter
from microgradcnn.ops.norm import _batch_norm
from microgradcnn.tensor import Tensor


class _BatchNorm(Module):
    """What BatchNorm1d and BatchNorm2d share; they differ only in the input dims they accept."""

    _input_dims: tuple[int, ...] = ()
    _input_text = ""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        layer = type(self).__name__
        self.num_features = check_int(num_features, "num_features", layer, minimum=1)
        if not is_real(eps) or not eps >= 0:
            raise ValueError(f"{layer}: eps must be a number >= 0, got {eps!r}")
        if momentum is not None and (not is_real(momentum) or not 0 <= momentum <= 1):
            raise ValueError(f"{layer}: momentum must be a number in [0, 1] or None, got {momentum!r}")
        self.eps = eps
        self.momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        self.weight: Parameter | None
        self.bias: Parameter | None
        self.running_mean: np.ndarray | None
        self.running_var: np.ndarray | None
        self.num_batches_tracked: np.ndarray | None
        if self.affine:  # PyTorch's init: the identity map
            self.weight = Parameter(np.ones(self.num_features, dtype=np.float32))
            self.bias = Parameter(np.zeros(self.num_features, dtype=np.float32))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(self.num_features, dtype=np.float32))
            self.register_buffer("running_var", np.ones(self.num_features, dtype=np.float32))
            self.register_buffer("num_batches_tracked", np.zeros((), dtype=np.int64))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, no batches tracked (in place)."""
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: (N, C, ...) -> the same; see ``microgradcnn.functional.batch_norm``.

        In training, normalises with the batch's statistics and updates the running ones (``momentum=None``
        averages every batch so far equally, as PyTorch); in eval, normalises with the running statistics
        (or the batch's when ``track_running_stats=False``).
        """
        where = f"{type(self).__name__}({self.num_features})"
        shape = getattr(x, "shape", None)
        if shape is None or len(shape) not in self._input_dims:
            raise ValueError(f"{where}: expected {self._input_text} input, got shape {shape}")
        if shape[1] != self.num_features:
            raise ValueError(
                f"{where}: expected {self.num_features} channels (axis 1), got input of shape {shape}"
            )
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            if x.size // self.num_features <= 1:  # refuse before counting the batch
                raise ValueError(
                    f"{where}: expected more than 1 value per channel when training, "
                    f"got input of shape {shape}"
                )
            self.num_batches_tracked += 1
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or self.running_mean is None
        track = not self.training or self.track_running_stats
        return _batch_norm(
            x,
            self.running_mean if track else None,
            self.running_var if track else None,
            self.weight,
            self.bias,
            use_batch_stats,
            factor,
            self.eps,
            where,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) inputs over N (and L), as ``torch.nn.BatchNorm1d``.

    Parameters ``weight`` (ones) and ``bias`` (zeros) of shape (C,) when ``affine``; buffers
    ``running_mean`` (zeros), ``running_var`` (ones) and ``num_batches_tracked`` (an int64 0-d array) when
    ``track_running_stats``, all in ``state_dict`` under PyTorch's names.

    >>> bn = BatchNorm1d(3)
    >>> [name for name in bn.state_dict()]
    ['weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked']

    Raises:
        ValueError: from ``forward``, naming the layer and the shape, for an input that is not 2-d or 3-d,
            has another number of channels, or (in training) holds one value per channel.
    """

    _input_dims = (2, 3)
    _input_text = "2-d (N, C) or 3-d (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) inputs over N, H and W, as ``torch.nn.BatchNorm2d``.

    The same parameters, buffers and arguments as ``BatchNorm1d``; shapes: (N, C, H, W) -> the same.

    >>> bn = BatchNorm2d(2)
    >>> bn(Tensor(np.arange(16.0).reshape(2, 2, 2, 2))).shape
    (2, 2, 2, 2)
    >>> bn.running_mean  # one step of momentum 0.1 towards the batch means 5.5 and 9.5
    array([0.55, 0.95], dtype=float32)

    Raises:
        ValueError: from ``forward``, naming the layer and the shape, for an input that is not 4-d or has
            another number of channels.
    """

    _input_dims = (4,)
    _input_text = "4-d (N, C, H, W)"
