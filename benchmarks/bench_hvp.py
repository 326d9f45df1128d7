"""A Hessian-vector product of the seed CNN's loss: microgradcnn against PyTorch, side by side in one run.

    python benchmarks/bench_hvp.py                  # batch 64, 2 BLAS threads, 5 repeats of ~1 s
    python benchmarks/bench_hvp.py --quick          # a short run that checks both give the same H v
    python benchmarks/bench_hvp.py --batch 16 --threads 1 --json hvp.json

One HVP is what sharpness estimates and influence functions repeat: the loss's gradient recorded as a graph
(``mg.grad(loss, params, create_graph=True)`` / ``torch.autograd.grad(..., create_graph=True)``), its dot
product with a fixed vector v, and the gradient of that (``grad`` again): H v, for every parameter at once.
The seed CNN (Conv2d(1, 8, 3) -> MaxPool2d(2) -> Flatten -> Linear(1352, 10), softmax cross-entropy) runs in
float32 on the same weights, data and v in both frameworks.

Each framework runs in its own process (this script with ``--worker mg`` or ``--worker torch``), as in
``bench_train.py``: importing torch changes the process's malloc behaviour, which would flatter or penalise
the NumPy library timed beside it. Both processes get the same BLAS thread count. Each worker calibrates the
number of HVPs for ``--seconds``, times ``--repeats`` repeats, and reports HVPs/s (median, min, max) and a
checksum of H v; the parent prints both, the ratio of medians (microgradcnn / PyTorch, higher is faster) and
whether the two H v agree.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from _timing import calibrate, environment_info, summarize, thread_env, time_steps, write_json_atomic

HERE = Path(__file__).resolve().parent


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


def _mg_hvp(batch: int) -> tuple[Any, Any]:
    import microgradcnn as mg
    from microgradcnn import functional as F

    prob = _problem(batch)
    params = [mg.Tensor(p, requires_grad=True) for p in prob["params"]]
    x, y, v = mg.Tensor(prob["x"]), prob["y"], prob["v"]

    def hvp() -> list[Any]:
        w, b, lw, lb = params
        h = F.max_pool2d(F.conv2d(x, w, b), 2)
        loss = F.cross_entropy(F.linear(F.flatten(h), lw, lb), y)
        grads = mg.grad(loss, params, create_graph=True)
        dot = sum((g * vi).sum() for g, vi in zip(grads, v, strict=True))
        return [t.data for t in mg.grad(dot, params)]

    return hvp, lambda out: [float(abs(a).sum()) for a in out]


def _torch_hvp(batch: int, threads: int) -> tuple[Any, Any]:
    import torch

    torch.set_num_threads(threads)
    prob = _problem(batch)
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
        return list(torch.autograd.grad(dot, params))

    return hvp, lambda out: [float(a.abs().sum()) for a in out]


def worker(args: argparse.Namespace) -> None:
    """Time one framework's HVP and print its figures as one JSON line."""
    make = _mg_hvp(args.batch) if args.worker == "mg" else _torch_hvp(args.batch, args.threads)
    hvp, checksum = make
    sums = checksum(hvp())
    steps = int(calibrate(hvp, args.seconds, min(0.2, args.seconds))["steps"])
    rates = [steps / time_steps(hvp, steps) for _ in range(args.repeats)]
    print(json.dumps({"hvps_per_s": summarize(rates), "steps": steps, "checksums": sums}))


def _run_worker(name: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--batch", str(args.batch),
           "--threads", str(args.threads), "--seconds", str(args.seconds), "--repeats", str(args.repeats)]
    done = subprocess.run(cmd, env=thread_env(args.threads), capture_output=True, text=True, check=False,
                          cwd=HERE)
    if done.returncode != 0:
        raise SystemExit(f"bench_hvp: the {name} worker failed:\n{done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="images per HVP (default 64)")
    parser.add_argument("--threads", type=int, default=2, help="BLAS threads in both processes (default 2)")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per repeat (default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per framework (default 5)")
    parser.add_argument("--quick", action="store_true", help="one short repeat: a correctness run")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--worker", choices=["mg", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.repeats = 0.05, 1
    if args.worker:
        worker(args)
        return
    results: dict[str, Any] = {"microgradcnn": _run_worker("mg", args)}
    try:
        import torch  # noqa: F401  (only to know whether the torch worker can run)
    except ModuleNotFoundError:
        print("PyTorch is not installed: only microgradcnn's figures are shown.")
    else:
        results["PyTorch"] = _run_worker("torch", args)
    print(f"Hessian-vector product of the seed CNN's loss, batch {args.batch}, float32, "
          f"{args.threads} BLAS thread(s); HVPs/s, median [min-max] of {args.repeats} repeat(s):")
    for name, r in results.items():
        s = r["hvps_per_s"]
        print(f"  {name:13s} {s['median']:9.1f} [{s['min']:.1f}-{s['max']:.1f}]")
    report: dict[str, Any] = {"batch": args.batch, "threads": args.threads, "results": results,
                              "environment": environment_info()}
    if "PyTorch" in results:
        ratio = results["microgradcnn"]["hvps_per_s"]["median"] / results["PyTorch"]["hvps_per_s"]["median"]
        mine, theirs = results["microgradcnn"]["checksums"], results["PyTorch"]["checksums"]
        agree = all(abs(a - b) <= 1e-3 * max(abs(b), 1e-6) for a, b in zip(mine, theirs, strict=True))
        verdict = "yes" if agree else "NO"
        print(f"  ratio (microgradcnn / PyTorch): {ratio:.2f}x; the two H v agree: {verdict}")
        report.update(ratio=ratio, agree=agree)
        if not agree:
            raise SystemExit(f"bench_hvp: H v differs between the frameworks: {mine} vs {theirs}")
    if args.json:
        write_json_atomic(args.json, report)


if __name__ == "__main__":
    main()
