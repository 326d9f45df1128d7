"""Images/s of conv2d and max_pool2d, forward and forward+backward, microgradcnn next to PyTorch CPU.

Shapes: the seed CNN's (N=64: conv 1x28x28 -> 8 filters 3x3; max-pool 2x2 on 8x26x26) and a larger layer
(N=32: conv 16 -> 32 channels, 32x32, 3x3, padding 1). Each framework runs in its own subprocess with the same
thread count (importing torch changes glibc malloc's behaviour for the whole process, so torch in-process
would flatter NumPy), and the two alternate for ``--rounds`` rounds so that noise from a shared machine hits
both. Reported: the median seconds per call over all repeats as images/s, with the range (min-max), and the
ratio of our time to torch's (below 1: we are faster).

    python benchmarks/bench_ops.py                    # 2 threads, malloc as each library's import leaves it
    python benchmarks/bench_ops.py --malloc untuned   # glibc's defaults in microgradcnn (MICROGRADCNN_MALLOC)
    python benchmarks/bench_ops.py --malloc tuned     # raised thresholds for both (GLIBC_TUNABLES)
    python benchmarks/bench_ops.py --threads 1 --repeats 30
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

# name -> (batch, x shape without batch, x needs grad, conv weight shape or None for max-pool, padding)
CASES: dict[str, tuple[int, tuple[int, ...], bool, tuple[int, ...] | None, int]] = {
    "conv2d seed 1x28x28 -> 8x3x3": (64, (1, 28, 28), False, (8, 1, 3, 3), 0),
    "max_pool2d seed 2x2 on 8x26x26": (64, (8, 26, 26), True, None, 0),
    "conv2d 16x32x32 -> 32x3x3 pad 1": (32, (16, 32, 32), True, (32, 16, 3, 3), 1),
}
TUNED_MALLOC = "glibc.malloc.mmap_threshold=67108864:glibc.malloc.trim_threshold=134217728"


def _time(fn: Callable[[], Any], repeats: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _measure(
    repeats: int,
    tensor: Callable[[Any, bool], Any],
    conv2d: Callable[[Any, Any, Any, int], Any],
    max_pool2d: Callable[[Any], Any],
) -> dict[str, list[float]]:
    """Time every case with one framework's ``tensor(array, requires_grad)``, conv2d and max_pool2d."""
    import numpy as np

    rng = np.random.default_rng(0)
    results = {}
    for name, (n, shape, x_grad, wshape, pad) in CASES.items():
        x = tensor(rng.standard_normal((n, *shape), dtype=np.float32), x_grad)
        leaves = [x]
        if wshape is not None:
            w = tensor(rng.standard_normal(wshape, dtype=np.float32) * np.float32(0.1), True)
            b = tensor(np.zeros(wshape[0], dtype=np.float32), True)
            leaves += [w, b]

            def op(x: Any = x, w: Any = w, b: Any = b, pad: int = pad) -> Any:
                return conv2d(x, w, b, pad)
        else:

            def op(x: Any = x) -> Any:
                return max_pool2d(x)

        grad = tensor(rng.standard_normal(tuple(op().shape), dtype=np.float32), False)

        def step(op: Callable[[], Any] = op, leaves: list[Any] = leaves, grad: Any = grad) -> None:
            for t in leaves:
                t.grad = None
            op().backward(grad)

        results[f"{name} | forward"] = _time(op, repeats)
        results[f"{name} | forward+backward"] = _time(step, repeats)
    return results


def _worker_microgradcnn(repeats: int) -> dict[str, list[float]]:
    import microgradcnn as mg
    from microgradcnn import functional as F

    return _measure(
        repeats,
        lambda a, grad: mg.Tensor(a, requires_grad=grad),
        lambda x, w, b, pad: F.conv2d(x, w, b, padding=pad),
        lambda x: F.max_pool2d(x, 2),
    )


def _worker_torch(repeats: int, threads: int) -> dict[str, list[float]]:
    import torch

    torch.set_num_threads(threads)
    return _measure(
        repeats,
        lambda a, grad: torch.from_numpy(a).requires_grad_(grad),
        lambda x, w, b, pad: torch.nn.functional.conv2d(x, w, b, padding=pad),
        lambda x: torch.nn.functional.max_pool2d(x, 2),
    )


def _run_worker(framework: str, args: argparse.Namespace) -> dict[str, list[float]] | None:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(args.threads)
    if args.malloc == "tuned":
        env["GLIBC_TUNABLES"] = TUNED_MALLOC
    elif args.malloc == "untuned":  # microgradcnn raises the thresholds at import unless told not to
        env["MICROGRADCNN_MALLOC"] = "default"
    cmd = [sys.executable, __file__, "--worker", framework, "--repeats", str(args.repeats),
           "--threads", str(args.threads)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        if framework == "torch" and "ModuleNotFoundError" in proc.stderr:
            return None
        raise RuntimeError(f"bench_ops: the {framework} worker failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _rate(n: int, times: list[float]) -> str:
    return f"{n / statistics.median(times):>9,.0f} ({n / max(times):,.0f}-{n / min(times):,.0f})"


def main() -> None:
    """Run both workers alternately and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2, help="BLAS/OpenMP threads for both frameworks")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per case per round (>= 5)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the two workers")
    parser.add_argument(
        "--malloc",
        choices=("default", "untuned", "tuned"),
        default="default",
        help="default: as each library's import leaves glibc malloc (both raise its thresholds); untuned: "
        "microgradcnn keeps glibc's defaults; tuned: GLIBC_TUNABLES raises them for both",
    )
    parser.add_argument("--no-torch", action="store_true", help="measure microgradcnn only")
    parser.add_argument("--worker", choices=("microgradcnn", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.repeats = max(args.repeats, 5)
    if args.worker == "microgradcnn":
        print(json.dumps(_worker_microgradcnn(args.repeats)))
        return
    if args.worker == "torch":
        print(json.dumps(_worker_torch(args.repeats, args.threads)))
        return

    ours: dict[str, list[float]] = {}
    theirs: dict[str, list[float]] | None = None if args.no_torch else {}
    for _ in range(args.rounds):
        for key, times in _run_worker("microgradcnn", args).items():  # type: ignore[union-attr]
            ours.setdefault(key, []).extend(times)
        if theirs is not None:
            got = _run_worker("torch", args)
            if got is None:
                theirs = None
                print("torch is not installed: microgradcnn only")
                continue
            for key, times in got.items():
                theirs.setdefault(key, []).extend(times)
    print(f"images/s, median (min-max) of {args.rounds} x {args.repeats} calls; {args.threads} threads; "
          f"malloc {args.malloc}; ratio = our time / torch's (< 1: faster)")
    header = f"{'case':<34} {'pass':<17} {'microgradcnn':>28}"
    print(header + (f" {'torch':>28} {'ratio':>6}" if theirs else ""))
    for key, times in ours.items():
        case, mode = key.split(" | ")
        n = CASES[case][0]
        line = f"{case:<34} {mode:<17} {_rate(n, times):>28}"
        if theirs:
            ratio = statistics.median(times) / statistics.median(theirs[key])
            line += f" {_rate(n, theirs[key]):>28} {ratio:>6.2f}"
        print(line)


if __name__ == "__main__":
    main()
