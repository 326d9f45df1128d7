"""Hand-written NumPy forward + backward of the benchmarked CNNs with no autodiff: what a library adds to.

``bench_train.py`` times this beside microgradcnn and reports the difference per graph op as the library's
overhead. The kernels are the ones a vectorized NumPy library would use, called directly:

- conv2d: im2col (a strided view of the input copied into a (C*KH*KW, N*OH*OW) matrix) and one matmul; the
  output stays in the matmul's (OC, N, OH, OW) memory order, seen as (N, OC, OH, OW) through a transposed
  view, so the backward gets its (OC, N*OH*OW) gradient matrix without a copy; dX by col2im (one add per
  kernel offset);
- max_pool2d (2x2, stride 2): a running maximum over the column pairs, then over the row pairs, remembering
  which one won; the backward routes each gradient to its window's first maximum through those two masks
  (``mask * g``: cheaper than ``np.where``);
- linear: ``np.dot`` (``np.matmul`` is several times slower for the batch-1 outer product dW);
- cross_entropy: fused log-softmax with the max shift; its gradient is ``(softmax - onehot) / N``;
- SGD: ``p -= lr * g`` in place.

Parameters use PyTorch's layouts and names (``conv (OC, C, KH, KW)``, ``linear (out, in)``, inputs flattened
channels-first), so a test can load the same values into microgradcnn and compare loss and gradients. Arrays
keep their dtype: float32 in, float32 out.

``build_step`` makes the steps ``bench_train.py``'s microgradcnn worker times beside the library, in the same
process (so under the same allocator settings); it also builds the tutorial-loop steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]
Params = dict[str, Array]
Grads = dict[str, Array]


# ---- kernels ---------------------------------------------------------------------------------------------
def conv2d_forward(x: Array, w: Array, b: Array, padding: int = 0) -> tuple[Array, Array]:
    """Stride-1 cross-correlation: x (N, C, H, W), w (OC, C, KH, KW), b (OC,) -> (N, OC, OH, OW), columns.

    The output is a transposed view of an (OC, N, OH, OW) array; ``cols`` (C*KH*KW, N*OH*OW) is kept for
    the backward.
    """
    n = x.shape[0]
    oc, c, kh, kw = w.shape
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    x = np.ascontiguousarray(x)
    oh, ow = x.shape[2] - kh + 1, x.shape[3] - kw + 1
    # The patches as a strided view (C, KH, KW, N, OH, OW) of x: made with the ndarray constructor, which
    # costs ~4 µs where sliding_window_view costs ~40 µs (that alone is 10 % of a batch-1 step).
    sn, sc, sh, sw = x.strides
    patches = np.ndarray((c, kh, kw, n, oh, ow), x.dtype, x, 0, (sc, sh, sw, sn, sh, sw))
    cols = patches.reshape(c * kh * kw, n * oh * ow)  # the one copy
    out = np.dot(w.reshape(oc, -1), cols)  # (OC, N*OH*OW)
    out += b[:, None]
    return out.reshape(oc, n, oh, ow).transpose(1, 0, 2, 3), cols


def conv2d_backward(
    cols: Array, w: Array, grad: Array, x_shape: tuple[int, ...], padding: int = 0, need_dx: bool = True
) -> tuple[Array | None, Array, Array]:
    """Gradients (dx or None, dw, db) of ``conv2d_forward`` given dL/d(out) ``grad`` (N, OC, OH, OW)."""
    n, oc, oh, ow = grad.shape
    _, c, kh, kw = w.shape
    g2 = grad.transpose(1, 0, 2, 3).reshape(oc, n * oh * ow)  # free when grad has the forward's memory order
    dw = np.dot(g2, cols.T).reshape(w.shape)
    db = g2.sum(axis=1)
    if not need_dx:
        return None, dw, db
    dcols = np.dot(w.reshape(oc, -1).T, g2).reshape(c, kh, kw, n, oh, ow)
    h, wd = x_shape[2] + 2 * padding, x_shape[3] + 2 * padding
    dx = np.zeros((n, c, h, wd), dtype=grad.dtype)
    for i in range(kh):  # col2im: one strided add per kernel offset, not per pixel
        for j in range(kw):
            dx[:, :, i : i + oh, j : j + ow] += dcols[:, i, j].transpose(1, 0, 2, 3)
    if padding:
        dx = dx[:, :, padding:-padding, padding:-padding]
    return dx, dw, db


def max_pool2_forward(x: Array) -> tuple[Array, tuple[Array, Array]]:
    """2x2 max pooling, stride 2 (odd trailing rows/columns dropped): (N, C, H, W) -> (N, C, H//2, W//2).

    Two passes, columns then rows: the first reads whole rows, so NumPy's inner loop is long (faster than
    four 2-d strided views). Also returns, for the backward, which column of each pair and which row won
    (a later one only when strictly greater: ties go to the first maximum in row-major order).
    """
    oh, ow = x.shape[2] // 2, x.shape[3] // 2
    left, right = x[:, :, : 2 * oh, 0 : 2 * ow : 2], x[:, :, : 2 * oh, 1 : 2 * ow : 2]
    right_wins = right > left
    rows = np.maximum(left, right)  # (N, C, 2*OH, OW)
    top, bottom = rows[:, :, 0::2], rows[:, :, 1::2]
    bottom_wins = bottom > top
    return np.maximum(top, bottom), (right_wins, bottom_wins)


def max_pool2_backward(x: Array, wins: tuple[Array, Array], grad: Array) -> Array:
    """dL/dx of ``max_pool2_forward(x)``: each window's gradient goes to its first maximum."""
    right_wins, bottom_wins = wins
    n, c, oh, ow = grad.shape
    # Undo the row pass, then the column pass; each interleaves its two halves with one stack (a contiguous
    # write, whatever the memory order of x, unlike assigning to strided slices).
    bottom = grad * bottom_wins  # a mask multiply: ~3x faster than np.where
    d_rows = np.stack([grad - bottom, bottom], axis=3).reshape(n, c, 2 * oh, ow)
    right = d_rows * right_wins
    dx = np.stack([d_rows - right, right], axis=4).reshape(n, c, 2 * oh, 2 * ow)
    if x.shape[2:] != dx.shape[2:]:  # odd sides: the dropped last row/column gets no gradient
        full = np.zeros(x.shape, dtype=dx.dtype)
        full[:, :, : 2 * oh, : 2 * ow] = dx
        return full
    return dx


def relu_forward(x: Array) -> Array:
    """max(x, 0)."""
    return np.maximum(x, 0)


def relu_backward(x: Array, grad: Array) -> Array:
    """grad where x > 0, else 0."""
    return (x > 0) * grad


def cross_entropy(logits: Array, target: Array) -> tuple[float, Array]:
    """Mean cross-entropy of logits (N, K) against class indices (N,), and its gradient (N, K)."""
    n = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    loss = float(np.log(total).sum() - shifted[rows, target].sum()) / n
    grad = exp / total
    grad[rows, target] -= 1
    grad /= n
    return loss, grad


def sgd_step(params: Params, grads: Grads, lr: float) -> None:
    """p -= lr * g for every parameter, in place."""
    for name, g in grads.items():
        params[name] -= lr * g


# ---- models ----------------------------------------------------------------------------------------------
def _uniform(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, dtype: Any) -> Array:
    bound = 1.0 / np.sqrt(fan_in)  # PyTorch's default init for conv and linear weights and biases
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def init_seed(rng: np.random.Generator, dtype: Any = np.float32) -> Params:
    """Seed CNN parameters: conv 1->8 3x3, linear 8*13*13 -> 10."""
    return {
        "conv.weight": _uniform(rng, (8, 1, 3, 3), 9, dtype),
        "conv.bias": _uniform(rng, (8,), 9, dtype),
        "fc.weight": _uniform(rng, (10, 1352), 1352, dtype),
        "fc.bias": _uniform(rng, (10,), 1352, dtype),
    }


def init_large(rng: np.random.Generator, in_channels: int = 3, dtype: Any = np.float32) -> Params:
    """Larger CNN parameters: conv in->16, conv 16->32 (3x3, padding 1), linear 32*8*8 -> 10."""
    return {
        "conv1.weight": _uniform(rng, (16, in_channels, 3, 3), in_channels * 9, dtype),
        "conv1.bias": _uniform(rng, (16,), in_channels * 9, dtype),
        "conv2.weight": _uniform(rng, (32, 16, 3, 3), 16 * 9, dtype),
        "conv2.bias": _uniform(rng, (32,), 16 * 9, dtype),
        "fc.weight": _uniform(rng, (10, 2048), 2048, dtype),
        "fc.bias": _uniform(rng, (10,), 2048, dtype),
    }


def seed_logits(p: Params, x: Array) -> Array:
    """Seed CNN forward: x (N, 1, 28, 28) -> logits (N, 10)."""
    pooled = max_pool2_forward(conv2d_forward(x, p["conv.weight"], p["conv.bias"])[0])[0]
    return np.dot(pooled.reshape(x.shape[0], -1), p["fc.weight"].T) + p["fc.bias"]


def seed_loss_and_grads(p: Params, x: Array, target: Array) -> tuple[float, Grads]:
    """Seed CNN: mean cross-entropy of x (N, 1, 28, 28) against target (N,) and every parameter's gradient."""
    conv, cols = conv2d_forward(x, p["conv.weight"], p["conv.bias"])  # (N, 8, 26, 26)
    pooled, wins = max_pool2_forward(conv)  # (N, 8, 13, 13)
    flat = pooled.reshape(x.shape[0], -1)  # (N, 1352)
    logits = np.dot(flat, p["fc.weight"].T) + p["fc.bias"]
    loss, g_logits = cross_entropy(logits, target)
    # backward, each line undoing the forward line it faces
    g_conv = max_pool2_backward(conv, wins, np.dot(g_logits, p["fc.weight"]).reshape(pooled.shape))
    _, dw, db = conv2d_backward(cols, p["conv.weight"], g_conv, x.shape, need_dx=False)
    fc = {"fc.weight": np.dot(g_logits.T, flat), "fc.bias": g_logits.sum(0)}
    return loss, {"conv.weight": dw, "conv.bias": db, **fc}


def large_logits(p: Params, x: Array) -> Array:
    """Larger CNN forward: x (N, C, 32, 32) -> logits (N, 10)."""
    h1 = max_pool2_forward(relu_forward(conv2d_forward(x, p["conv1.weight"], p["conv1.bias"], 1)[0]))[0]
    h2 = max_pool2_forward(relu_forward(conv2d_forward(h1, p["conv2.weight"], p["conv2.bias"], 1)[0]))[0]
    return np.dot(h2.reshape(x.shape[0], -1), p["fc.weight"].T) + p["fc.bias"]


def large_loss_and_grads(p: Params, x: Array, target: Array) -> tuple[float, Grads]:
    """Larger CNN: mean cross-entropy and every parameter's gradient."""
    c1, cols1 = conv2d_forward(x, p["conv1.weight"], p["conv1.bias"], 1)  # (N, 16, 32, 32)
    r1 = relu_forward(c1)
    h1, wins1 = max_pool2_forward(r1)  # (N, 16, 16, 16)
    c2, cols2 = conv2d_forward(h1, p["conv2.weight"], p["conv2.bias"], 1)  # (N, 32, 16, 16)
    r2 = relu_forward(c2)
    h2, wins2 = max_pool2_forward(r2)  # (N, 32, 8, 8)
    flat = h2.reshape(x.shape[0], -1)
    logits = np.dot(flat, p["fc.weight"].T) + p["fc.bias"]
    loss, g_logits = cross_entropy(logits, target)
    g_h2 = np.dot(g_logits, p["fc.weight"]).reshape(h2.shape)
    g_c2 = relu_backward(c2, max_pool2_backward(r2, wins2, g_h2))
    g_h1, dw2, db2 = conv2d_backward(cols2, p["conv2.weight"], g_c2, h1.shape, padding=1)
    assert g_h1 is not None
    g_c1 = relu_backward(c1, max_pool2_backward(r1, wins1, g_h1))
    _, dw1, db1 = conv2d_backward(cols1, p["conv1.weight"], g_c1, x.shape, padding=1, need_dx=False)
    grads = {
        "conv1.weight": dw1,
        "conv1.bias": db1,
        "conv2.weight": dw2,
        "conv2.bias": db2,
        "fc.weight": np.dot(g_logits.T, flat),
        "fc.bias": g_logits.sum(0),
    }
    return loss, grads


MODELS: dict[str, tuple[Callable[..., Params], Callable[[Params, Array], Array], Callable[..., Any]]] = {
    "seed": (init_seed, seed_logits, seed_loss_and_grads),
    "cifar": (init_large, large_logits, large_loss_and_grads),
}


# ---- the steps bench_train.py times -------------------------------------------------------------------
def build_step(case: dict[str, Any]) -> Callable[[], object]:
    """One training step (forward, loss, backward, SGD) or one inference of ``case``'s model and batch.

    ``impl`` "numpy" is this module's kernels; "tutorial" is the per-image loop code (seed model only).
    """
    from _timing import BENCH_MODELS, LEARNING_RATE, make_batch

    impl, model, mode, batch = case["impl"], case["model"], case["mode"], int(case["batch"])
    if model not in MODELS or mode not in ("train", "infer"):
        raise ValueError(f"numpy_reference: no {model!r} model or {mode!r} mode")
    init, logits_fn, loss_fn = MODELS[model]
    rng = np.random.default_rng(1)
    params = init(rng) if model == "seed" else init(rng, BENCH_MODELS[model][0])
    x, y = make_batch(batch, BENCH_MODELS[model])
    if impl == "tutorial":
        from tutorial_loops import TutorialCNN

        if model != "seed":
            raise ValueError("numpy_reference: the tutorial loops implement the seed CNN only")
        net = TutorialCNN.from_torch_layout(*params.values())
        return (lambda: net.train_batch(x, y, LEARNING_RATE)) if mode == "train" else (lambda: net.predict(x))
    if impl != "numpy":
        raise ValueError(f"numpy_reference: unknown impl {impl!r}")
    if mode == "infer":
        return lambda: logits_fn(params, x)

    def train_step() -> None:
        sgd_step(params, loss_fn(params, x, y)[1], LEARNING_RATE)

    return train_step
