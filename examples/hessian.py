"""Second order: Hessian-vector products of the seed CNN's loss, its top eigenvalue, a gradient penalty.

Shows ``mg.grad(..., create_graph=True)``, which records the backward computation so it can be differentiated:
1. Hessian-vector products ``H v`` of the seed CNN's training loss, checked against central differences of
   the gradient (``(g(w + h v) - g(w - h v)) / 2h``);
2. the top Hessian eigenvalue (the sharpness of the loss) by power iteration on HVPs, checked on a tiny CNN
   against the eigenvalues of its dense Hessian, built column by column from HVPs;
3. a WGAN-GP-style training step of a small conv critic: the loss includes the penalty
   ``(||d critic(x) / d x|| - 1)^2``, whose gradient with respect to the weights is a second derivative.

Run: python examples/hessian.py [--quick]    (--quick, or MICROGRADCNN_EXAMPLE_QUICK=1: a smaller batch and
fewer iterations). Takes a few seconds.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence

import numpy as np

import microgradcnn as mg
from microgradcnn import functional as F
from microgradcnn import models, nn
from microgradcnn.optim import SGD

Loss = Callable[[], mg.Tensor]


def hvp(loss_fn: Loss, params: Sequence[mg.Tensor], v: Sequence[np.ndarray]) -> list[np.ndarray]:
    """H v for the Hessian H of ``loss_fn()`` with respect to ``params``: the gradient of (grad . v)."""
    grads = mg.grad(loss_fn(), params, create_graph=True)  # Tensors with a graph of their own
    dot = sum((g * vi).sum() for g, vi in zip(grads, v, strict=True))
    return [h.data for h in mg.grad(dot, params)]


def gradient(loss_fn: Loss, params: Sequence[mg.Tensor]) -> list[np.ndarray]:
    return [g.data for g in mg.grad(loss_fn(), params)]


def top_eigenvalue(loss_fn: Loss, params: Sequence[mg.Tensor], iterations: int, seed: int = 0) -> float:
    """The Hessian eigenvalue of largest magnitude, by power iteration: v <- H v / |H v|."""
    rng = np.random.default_rng(seed)
    v = [rng.standard_normal(p.shape) for p in params]
    eigenvalue = 0.0
    for _ in range(iterations):
        norm = np.sqrt(sum(float((vi * vi).sum()) for vi in v))
        v = [vi / norm for vi in v]
        hv = hvp(loss_fn, params, v)
        eigenvalue = sum(float((a * b).sum()) for a, b in zip(v, hv, strict=True))  # Rayleigh quotient
        v = hv
    return eigenvalue


def dense_hessian(loss_fn: Loss, params: Sequence[mg.Tensor]) -> np.ndarray:
    """The full Hessian, one HVP per parameter element (only for tiny models)."""
    sizes = [p.size for p in params]
    total = sum(sizes)
    columns = []
    for k in range(total):
        e = np.zeros(total)
        e[k] = 1.0
        parts = np.split(e, np.cumsum(sizes)[:-1])
        hv = hvp(loss_fn, params, [part.reshape(p.shape) for part, p in zip(parts, params, strict=True)])
        columns.append(np.concatenate([h.reshape(-1) for h in hv]))
    return np.stack(columns, axis=1)


class Tanh(nn.Module):
    """A smooth nonlinearity, so the tiny models' Hessians have curvature everywhere."""

    def forward(self, x: mg.Tensor) -> mg.Tensor:
        return x.tanh()


def seed_cnn_hvps(batch: int, check_batch: int = 8) -> None:
    """An HVP of the seed CNN's loss at ``batch``; at ``check_batch`` also against central differences.

    The check uses a small batch: the max-pool makes the gradient piecewise smooth, and with many windows
    some window's winner flips within any finite-difference step, which would make the numeric side wrong.
    """
    rng = np.random.default_rng(0)
    net = models.seed_cnn(rng=rng).to(np.float64)  # float64: the finite-difference check below is tight
    params = list(net.parameters())
    for n in sorted({check_batch, batch}):
        x = mg.Tensor(rng.standard_normal((n, 1, 28, 28)))
        y = rng.integers(0, 10, n)

        def loss(x: mg.Tensor = x, y: np.ndarray = y) -> mg.Tensor:
            return F.cross_entropy(net(x), y)

        v = [rng.standard_normal(p.shape) for p in params]
        hv = hvp(loss, params, v)
        norm = np.sqrt(sum(float((h * h).sum()) for h in hv))
        print(f"seed CNN, batch {n}: Hessian-vector product of the loss over {sum(p.size for p in params)} "
              f"parameters, |H v| = {norm:.4f}")
        if n != check_batch:
            continue
        h = 1e-5
        for p, vi in zip(params, v, strict=True):
            p.data += h * vi
        plus = gradient(loss, params)
        for p, vi in zip(params, v, strict=True):
            p.data -= 2 * h * vi
        minus = gradient(loss, params)
        for p, vi in zip(params, v, strict=True):
            p.data += h * vi
        numeric = [(a - b) / (2 * h) for a, b in zip(plus, minus, strict=True)]
        error = max(float(np.abs(a - b).max()) for a, b in zip(hv, numeric, strict=True))
        scale = max(float(np.abs(b).max()) for b in numeric)
        print(f"  largest difference from central differences of the gradient {error:.2e} "
              f"(entries up to {scale:.2e})")
        assert error <= 1e-5 * max(1.0, scale), "HVP disagrees with central differences"


def sharpness(iterations: int) -> None:
    rng = np.random.default_rng(1)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, rng=rng), Tanh(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(2 * 2 * 2, 3, rng=rng)).to(np.float64)
    params = list(net.parameters())
    x = mg.Tensor(rng.standard_normal((6, 1, 6, 6)))
    y = rng.integers(0, 3, 6)

    def loss() -> mg.Tensor:
        return F.cross_entropy(net(x), y)

    dense = dense_hessian(loss, params)
    symmetry = float(np.abs(dense - dense.T).max())
    eigenvalues = np.linalg.eigvalsh((dense + dense.T) / 2)
    expected = float(eigenvalues[np.argmax(np.abs(eigenvalues))])
    found = top_eigenvalue(loss, params, iterations)
    print(f"tiny CNN ({dense.shape[0]} parameters): top Hessian eigenvalue by power iteration {found:.6f}, "
          f"from the dense Hessian {expected:.6f} (Hessian symmetric to {symmetry:.1e})")
    assert symmetry < 1e-10, "the Hessian built from HVPs is not symmetric"
    assert abs(found - expected) <= 1e-3 * abs(expected), "power iteration missed the top eigenvalue"


def gradient_penalty_step(steps: int) -> None:
    rng = np.random.default_rng(2)
    critic = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, rng=rng), Tanh(), nn.Flatten(),
                           nn.Linear(4 * 3 * 3, 1, rng=rng))
    opt = SGD(critic.parameters(), lr=0.05)
    real = mg.Tensor(rng.standard_normal((8, 1, 8, 8)).astype(np.float32))
    for step in range(steps):
        x = mg.Tensor(real.data, requires_grad=True)
        score = critic(x).sum()
        (dx,) = mg.grad(score, x, create_graph=True)  # d critic / d x, itself differentiable
        norms = ((dx * dx).reshape(8, -1).sum(axis=1) + 1e-12) ** 0.5
        penalty = ((norms - 1.0) ** 2).mean()
        loss = critic(x).mean() + 10.0 * penalty
        opt.zero_grad()
        loss.backward()  # through the recorded backward too: the penalty's gradient is second order
        opt.step()
        if step in (0, steps - 1):
            print(f"gradient-penalty step {step}: penalty {penalty.item():.4f}, "
                  f"mean input-gradient norm {norms.data.mean():.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small batch, few iterations")
    args = parser.parse_args()
    quick = args.quick or os.environ.get("MICROGRADCNN_EXAMPLE_QUICK") == "1"
    seed_cnn_hvps(batch=8 if quick else 64)
    sharpness(iterations=100 if quick else 300)
    gradient_penalty_step(steps=3 if quick else 30)


if __name__ == "__main__":
    main()
