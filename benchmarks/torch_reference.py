"""PyTorch CPU reference for the training benchmark: the same CNNs, data and SGD, timed in their own process.

``bench_train.py`` runs this file as a subprocess (``--serve``) and never imports torch itself: importing
torch changes glibc malloc's behaviour for the whole process, which would flatter a NumPy library timed beside
it. Run on its own, it times every case and prints the images/s as JSON on stdout::

    python benchmarks/torch_reference.py --quick
    python benchmarks/torch_reference.py --threads 2 --batch-sizes 1,16,64,256

Training step: ``zero_grad``, forward, ``F.cross_entropy`` (mean), ``backward``, ``SGD.step`` (lr 0.01, no
momentum; PyTorch's default foreach implementation). Inference: forward under ``torch.inference_mode()``, the
fastest mode PyTorch offers (no autograd bookkeeping at all). Threads: ``torch.set_num_threads(--threads)``
and the OMP/MKL/OpenBLAS variables, set before torch loads.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from _timing import (
    INPUT_SHAPES,
    LEARNING_RATE,
    ensure_thread_env,
    run_standalone,
    serve,
    standalone_cases,
    worker_args,
)


def build_model(model: str, torch: Any) -> Any:
    """The benchmarked CNN ``model`` ("seed" or "large") as a ``torch.nn.Sequential``, layer for layer."""
    nn = torch.nn
    if model == "seed":
        return nn.Sequential(nn.Conv2d(1, 8, 3), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 13 * 13, 10))
    if model == "large":
        c = INPUT_SHAPES["large"][0]
        return nn.Sequential(
            nn.Conv2d(c, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 8 * 8, 10),
        )
    raise ValueError(f"torch_reference: unknown model {model!r}")


def build_step(case: dict[str, Any]) -> Callable[[], object]:
    """One training step or one inference of ``case``'s model at its batch size, on fixed float32 data."""
    import torch
    import torch.nn.functional as F
    from numpy_reference import make_batch

    if case.get("impl", "torch") != "torch" or case["mode"] not in ("train", "infer"):
        raise ValueError(f"torch_reference: cannot run case {case!r}")
    torch.manual_seed(0)
    net = build_model(case["model"], torch)
    x_np, y_np = make_batch(int(case["batch"]), INPUT_SHAPES[case["model"]])
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    if case["mode"] == "infer":
        net.eval()

        def infer() -> object:
            with torch.inference_mode():
                return net(x)

        return infer
    opt = torch.optim.SGD(net.parameters(), lr=LEARNING_RATE)

    def train() -> None:
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()

    return train


def main(argv: list[str] | None = None) -> None:
    """Run as a benchmark worker (``--serve``) or time every case here and print JSON."""
    args = worker_args("PyTorch CPU reference of the benchmarked CNNs.", argv)
    ensure_thread_env(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    if args.serve:
        serve(build_step)
        return
    cases = standalone_cases("torch", ("seed",), ("train", "infer"), args.batch_sizes)
    if not args.no_large:
        cases += standalone_cases("torch", ("large",), ("train", "infer"), [64])
    print(json.dumps(run_standalone(build_step, cases, args.repeats, args.min_time, args.warmup), indent=1))


if __name__ == "__main__":
    main()
