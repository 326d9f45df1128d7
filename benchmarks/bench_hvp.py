"""A Hessian-vector product of the seed CNN's loss: microgradcnn against PyTorch, side by side in one run.

    python benchmarks/bench_hvp.py                  # batch 64, 2 BLAS threads, 5 repeats of ~1 s
    python benchmarks/bench_hvp.py --quick          # a short run that checks both give the same H v

One HVP is what sharpness estimates and influence functions repeat: the loss's gradient recorded as a graph
(``mg.grad(loss, params, create_graph=True)`` / ``torch.autograd.grad(..., create_graph=True)``), its dot
product with a fixed vector v, and the gradient of that: H v, for every parameter at once. The seed CNN
(Conv2d(1, 8, 3) -> MaxPool2d(2) -> Flatten -> Linear(1352, 10), softmax cross-entropy) runs in float32 on the
same weights, data and v in both frameworks, each in its own worker process (this script with ``--worker mg``
or ``--worker torch``), timed as ``bench_train.py`` times its cases (``_timing.time_interleaved``). Printed:
HVPs/s of each, the median of the same-repeat ratios, and whether the two H v agree.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

from _timing import Worker, common_parser, paired_ratio, parse_common, serve, time_interleaved


def _problem(batch: int) -> dict[str, Any]:
    """The shared weights (PyTorch's default init bounds), data and vector v, as float32 NumPy arrays."""
    import numpy as np

    rng = np.random.default_rng(0)

    def uniform(shape: tuple[int, ...], fan_in: int) -> Any:
        bound = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, shape).astype(np.float32)

    params = [uniform((8, 1, 3, 3), 9), uniform((8,), 9), uniform((10, 1352), 1352), uniform((10,), 1352)]
    return {
        "params": params,
        "x": rng.standard_normal((batch, 1, 28, 28)).astype(np.float32),
        "y": rng.integers(0, 10, batch),
        "v": [rng.standard_normal(p.shape).astype(np.float32) for p in params],
    }


def mg_hvp(case: dict[str, Any]) -> Any:
    """microgradcnn's H v of the seed CNN's loss, as a step returning the products as arrays."""
    import microgradcnn as mg
    from microgradcnn import functional as F

    prob = _problem(int(case["batch"]))
    params = [mg.Tensor(p, requires_grad=True) for p in prob["params"]]
    x, y, v = mg.Tensor(prob["x"]), prob["y"], prob["v"]

    def hvp() -> list[Any]:
        w, b, lw, lb = params
        h = F.max_pool2d(F.conv2d(x, w, b), 2)
        loss = F.cross_entropy(F.linear(F.flatten(h), lw, lb), y)
        grads = mg.grad(loss, params, create_graph=True)
        dot = sum((g * vi).sum() for g, vi in zip(grads, v, strict=True))
        return [t.data for t in mg.grad(dot, params)]

    return hvp


def torch_hvp(case: dict[str, Any]) -> Any:
    """PyTorch's H v of the same loss, as a step returning the products as arrays."""
    import torch

    prob = _problem(int(case["batch"]))
    params = [torch.tensor(p, requires_grad=True) for p in prob["params"]]
    x, y = torch.tensor(prob["x"]), torch.tensor(prob["y"])
    v = [torch.tensor(a) for a in prob["v"]]
    tf = torch.nn.functional

    def hvp() -> list[Any]:
        w, b, lw, lb = params
        h = tf.max_pool2d(tf.conv2d(x, w, b), 2)
        loss = tf.cross_entropy(tf.linear(h.flatten(1), lw, lb), y)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        dot = sum((g * vi).sum() for g, vi in zip(grads, v, strict=True))
        return [g.detach().numpy() for g in torch.autograd.grad(dot, params)]

    return hvp


def checksums(request: dict[str, Any], step_of: Any) -> list[float]:
    """The sum of |H v| of each parameter, from one HVP of ``request["case"]``."""
    return [float(abs(a).sum()) for a in step_of(request["case"])()]


def main(argv: list[str] | None = None) -> None:
    """Entry point (see the module docstring)."""
    parser = common_parser(__doc__)
    parser.add_argument("--batch", type=int, default=64, help="images per HVP (default 64)")
    args = parse_common(parser, argv)
    if args.worker:
        if args.worker == "torch":
            import torch

            torch.set_num_threads(args.threads)
        serve(torch_hvp if args.worker == "torch" else mg_hvp, {"checksums": checksums})
        return
    names = ["mg"] + (["torch"] if importlib.util.find_spec("torch") else [])
    workers = {name: Worker(name, "bench_hvp.py", args.threads) for name in names}
    try:
        cases = {
            name: (w, {"impl": name, "model": "seed", "mode": "hvp", "batch": args.batch})
            for name, w in workers.items()
        }
        sums = {name: w.call(op="checksums", case=case) for name, (w, case) in cases.items()}
        results = time_interleaved(cases, args)
    finally:
        for w in workers.values():
            w.close()
    print(
        f"Hessian-vector product of the seed CNN's loss, batch {args.batch}, float32, {args.threads} "
        f"thread(s); HVPs/s, median of {args.repeats} interleaved repeats:"
    )
    for name, r in results.items():
        print(
            f"  {'microgradcnn' if name == 'mg' else 'PyTorch':13s} "
            f"{r['images_per_s']['median'] / args.batch:9.1f}"
        )
    if "torch" not in results:
        print("PyTorch is not installed: only microgradcnn's figure is shown.")
        return
    pairs = zip(sums["mg"], sums["torch"], strict=True)
    agree = all(abs(a - b) <= 1e-3 * max(abs(b), 1e-6) for a, b in pairs)
    print(
        f"  ratio (microgradcnn / PyTorch): {paired_ratio(results['mg'], results['torch']):.2f}x; "
        f"the two H v agree: {'yes' if agree else 'NO'}"
    )
    if not agree:
        sys.exit(f"bench_hvp: H v differs between the frameworks: {sums['mg']} vs {sums['torch']}")


if __name__ == "__main__":
    main()
