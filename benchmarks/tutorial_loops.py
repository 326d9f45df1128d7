"""The seed CNN written the way the classic NumPy-CNN tutorial writes it: Python loops over image regions.

The baseline ``bench_train.py`` measures the library against at batch 1. Our own code, with the tutorial's
algorithm and loop structure (its ``Conv3x3`` / ``MaxPool2`` / ``Softmax`` layers): 2-d ``(H, W)`` images and
channels-last ``(H, W, F)`` float64 maps; ``iterate_regions`` generators yield every 3x3 (conv) or 2x2 (pool)
region; one ``np.sum(region * filters)`` per output pixel, one ``np.amax`` per pool region, backwards over the
same regions; the softmax backward walks the one nonzero entry of dL/d(probabilities) through its Jacobian;
every layer takes its own SGD step inside ``backward``, one image at a time.

Two differences make the network exactly ``models.seed_cnn()``: the conv layer has a bias, and the softmax
subtracts the maximum logit before ``exp`` (no overflow; no value changes). Parameters keep the tutorial's
layout (``filters (F, 3, 3)``, ``weights (13*13*F, 10)`` indexed channels-last); ``from_torch_layout`` and
``torch_layout_grads`` convert from and to the library's, so a test can compare the two.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]


class Conv3x3:
    """A valid 3x3 convolution of a 2-d image with ``num_filters`` filters: (H, W) -> (H-2, W-2, F)."""

    def __init__(self, filters: Array, bias: Array) -> None:
        self.num_filters = filters.shape[0]
        self.filters = filters  # (F, 3, 3)
        self.bias = bias  # (F,)
        self.d_L_d_filters = np.zeros(filters.shape)
        self.d_L_d_bias = np.zeros(bias.shape)

    def iterate_regions(self, image: Array) -> Iterator[tuple[Array, int, int]]:
        """Yield every 3x3 region of ``image`` (H, W) with its top-left corner (i, j)."""
        h, w = image.shape
        for i in range(h - 2):
            for j in range(w - 2):
                yield image[i : i + 3, j : j + 3], i, j

    def forward(self, image: Array) -> Array:
        """(H, W) -> (H-2, W-2, F): one filter sum per region."""
        self.last_input = image
        h, w = image.shape
        output = np.zeros((h - 2, w - 2, self.num_filters))
        for im_region, i, j in self.iterate_regions(image):
            output[i, j] = np.sum(im_region * self.filters, axis=(1, 2)) + self.bias
        return output

    def backward(self, d_L_d_out: Array, learn_rate: float) -> None:
        """Accumulate dL/d(filter) = sum over regions of region * dL/d(out), then take an SGD step.

        The first layer returns no input gradient, as in the notes.
        """
        d_L_d_filters = np.zeros(self.filters.shape)
        d_L_d_bias = np.zeros(self.bias.shape)
        for im_region, i, j in self.iterate_regions(self.last_input):
            for f in range(self.num_filters):
                d_L_d_filters[f] += d_L_d_out[i, j, f] * im_region
                d_L_d_bias[f] += d_L_d_out[i, j, f]
        self.d_L_d_filters, self.d_L_d_bias = d_L_d_filters, d_L_d_bias
        self.filters -= learn_rate * d_L_d_filters
        self.bias -= learn_rate * d_L_d_bias


class MaxPool2:
    """2x2 max pooling with stride 2 on channels-last maps: (H, W, F) -> (H//2, W//2, F)."""

    def iterate_regions(self, image: Array) -> Iterator[tuple[Array, int, int]]:
        """Yield every non-overlapping 2x2 region of ``image`` (H, W, F) with its output position (i, j)."""
        h, w, _ = image.shape
        for i in range(h // 2):
            for j in range(w // 2):
                yield image[i * 2 : i * 2 + 2, j * 2 : j * 2 + 2], i, j

    def forward(self, image: Array) -> Array:
        """One ``np.amax`` over each region's two spatial axes (per channel)."""
        self.last_input = image
        h, w, num_filters = image.shape
        output = np.zeros((h // 2, w // 2, num_filters))
        for im_region, i, j in self.iterate_regions(image):
            output[i, j] = np.amax(im_region, axis=(0, 1))
        return output

    def backward(self, d_L_d_out: Array) -> Array:
        """Route each output gradient to the pixel(s) of its region that equal the region's maximum."""
        d_L_d_input = np.zeros(self.last_input.shape)
        for im_region, i, j in self.iterate_regions(self.last_input):
            h, w, f = im_region.shape
            amax = np.amax(im_region, axis=(0, 1))
            for i2 in range(h):
                for j2 in range(w):
                    for f2 in range(f):
                        if im_region[i2, j2, f2] == amax[f2]:
                            d_L_d_input[i * 2 + i2, j * 2 + j2, f2] = d_L_d_out[i, j, f2]
        return d_L_d_input


class Softmax:
    """Fully connected layer followed by softmax: any input shape, flattened -> (nodes,) probabilities."""

    def __init__(self, weights: Array, biases: Array) -> None:
        self.weights = weights  # (input_len, nodes)
        self.biases = biases  # (nodes,)
        self.d_L_d_w = np.zeros(weights.shape)
        self.d_L_d_b = np.zeros(biases.shape)

    def forward(self, image: Array) -> Array:
        """Flatten, ``totals = input @ weights + biases``, then softmax."""
        self.last_input_shape = image.shape
        flat = image.flatten()
        self.last_input = flat
        totals = np.dot(flat, self.weights) + self.biases
        self.last_totals = totals
        exp = np.exp(totals - totals.max())  # the max shift: see the module docstring
        return exp / np.sum(exp, axis=0)

    def backward(self, d_L_d_out: Array, learn_rate: float) -> Array:
        """Walk the nonzero entry of dL/d(probabilities) back through softmax and the linear map; SGD step."""
        for i, gradient in enumerate(d_L_d_out):
            if gradient == 0:
                continue
            t_exp = np.exp(self.last_totals - self.last_totals.max())
            s = np.sum(t_exp)
            # d(out[i]) / d(totals): -e^t_i e^t_k / S^2 for k != i, e^t_i (S - e^t_i) / S^2 for k == i
            d_out_d_t = -t_exp[i] * t_exp / (s**2)
            d_out_d_t[i] = t_exp[i] * (s - t_exp[i]) / (s**2)
            d_t_d_w = self.last_input
            d_t_d_b = 1
            d_t_d_inputs = self.weights
            d_L_d_t = gradient * d_out_d_t
            d_L_d_w = d_t_d_w[np.newaxis].T @ d_L_d_t[np.newaxis]  # (input_len, 1) @ (1, nodes)
            d_L_d_b = d_L_d_t * d_t_d_b
            d_L_d_inputs = d_t_d_inputs @ d_L_d_t
            self.d_L_d_w, self.d_L_d_b = d_L_d_w, d_L_d_b
            self.weights -= learn_rate * d_L_d_w
            self.biases -= learn_rate * d_L_d_b
            return d_L_d_inputs.reshape(self.last_input_shape)
        raise ValueError("Softmax.backward: dL/d(out) is all zeros; want the one nonzero entry at the label")


@dataclass
class StepResult:
    """What one training image produced: its loss, whether it was classified right, its probabilities."""

    loss: float
    correct: bool
    probs: Array


class TutorialCNN:
    """conv 3x3 (F filters) -> max pool 2 -> softmax (linear to 10 classes), trained one image at a time."""

    def __init__(self, filters: Array, conv_bias: Array, weights: Array, biases: Array) -> None:
        self.conv = Conv3x3(filters, conv_bias)
        self.pool = MaxPool2()
        self.softmax = Softmax(weights, biases)

    @classmethod
    def from_torch_layout(cls, conv_w: Array, conv_b: Array, fc_w: Array, fc_b: Array) -> TutorialCNN:
        """Copy parameters given as ``conv (F, 1, 3, 3), (F,)`` and ``linear (10, F*PH*PW), (10,)`` (NCHW).

        Raises:
            ValueError: if the shapes are not those of a one-channel 3x3 conv followed by a linear layer.
        """
        if (
            conv_w.ndim != 4
            or conv_w.shape[1:] != (1, 3, 3)
            or fc_w.ndim != 2
            or fc_w.shape[1] % conv_w.shape[0]
        ):
            raise ValueError(f"tutorial_loops: conv weight {conv_w.shape}, linear weight {fc_w.shape}")
        f = conv_w.shape[0]
        side = round((fc_w.shape[1] // f) ** 0.5)
        # Linear weight (10, F, PH, PW) -> the notes' (PH, PW, F, 10): the channels-last flattening.
        weights = fc_w.reshape(fc_w.shape[0], f, side, side).transpose(2, 3, 1, 0).reshape(-1, fc_w.shape[0])
        as64 = np.float64
        return cls(
            conv_w[:, 0].astype(as64), conv_b.astype(as64), weights.astype(as64), fc_b.astype(as64).copy()
        )

    def forward(self, image: Array, label: int) -> StepResult:
        """Probabilities, loss ``-log p[label]`` and accuracy of one (H, W) image."""
        out = self.softmax.forward(self.pool.forward(self.conv.forward(image)))
        return StepResult(float(-np.log(out[label])), bool(np.argmax(out) == label), out)

    def train(self, image: Array, label: int, lr: float = 0.005) -> StepResult:
        """One SGD step on one image: forward, dL/d(out) at the label, every layer's backward."""
        result = self.forward(image, label)
        gradient = np.zeros(10)
        gradient[label] = -1 / result.probs[label]
        gradient = self.softmax.backward(gradient, lr)
        gradient = self.pool.backward(gradient)
        self.conv.backward(gradient, lr)
        return result

    def train_batch(self, images: Array, labels: Array, lr: float = 0.005) -> float:
        """Train on each image of ``images`` (N, 1, H, W) in turn, as the notes' loop does; mean loss."""
        return float(
            np.mean([self.train(img[0], int(lab), lr).loss for img, lab in zip(images, labels, strict=True)])
        )

    def predict(self, images: Array) -> Array:
        """Class probabilities (N, 10) of images (N, 1, H, W), one image at a time."""
        return np.stack(
            [self.softmax.forward(self.pool.forward(self.conv.forward(img[0]))) for img in images]
        )

    def torch_layout_grads(self) -> tuple[Array, Array, Array, Array]:
        """The last ``train`` call's gradients as ``conv (F, 1, 3, 3), (F,), linear (10, F*PH*PW), (10,)``."""
        ph, pw, f = (
            self.pool.last_input.shape[0] // 2,
            self.pool.last_input.shape[1] // 2,
            self.conv.num_filters,
        )
        d_w = self.softmax.d_L_d_w  # (PH*PW*F, 10), channels-last rows
        fc_grad = d_w.reshape(ph, pw, f, -1).transpose(3, 2, 0, 1).reshape(d_w.shape[1], -1)
        return self.conv.d_L_d_filters[:, None], self.conv.d_L_d_bias, fc_grad, self.softmax.d_L_d_b
