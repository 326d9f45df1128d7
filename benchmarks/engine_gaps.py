"""Where the engine's time goes between kernels: the library's step and its kernels' replay, gap by gap.

    python benchmarks/engine_gaps.py                        # seed CNN, batch 1 and 256, 400 rounds
    python benchmarks/engine_gaps.py --batch-sizes 256 --rounds 1000 --json gaps.json

A training step alternates kernels (each op's ``Function.forward`` / ``backward``) with Python: modules,
argument checks, recording, the backward loop, the optimizer. This script times, inside every step, when each
kernel starts and ends, so each step splits into its kernels and the *gaps* between them (start -> first
kernel, kernel -> kernel, last kernel -> end). It does so for the library's step and for bench_train's kernel
replay (the same kernels called directly in graph order, no engine), alternating the two in one process, and
reports per gap the median time of each and their difference.

Why: bench_train.py's overhead figure is (library step - replay step), each step's total; at batch 256 the
kernels' own run-to-run jitter (~100 us a step) swamps an engine of ~100 us, so that figure is good to a few
us per op only after hundreds of paired rounds. The gaps leave the kernels out: their difference is the
engine's time alone, steady to ~1 us per op within a run (from run to run the machine's load moves it by a
few us per op at batch 256, as it moves how cold the caches are), and it shows *which* gap pays. The timers
add one wrapper call per kernel to both steps alike. At large batches each kernel evicts the interpreter's
caches, so each Python function run in the gap after it costs several us (docs/benchmarks.md, "the engine
between cold kernels").
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _timing import batch_list, ensure_thread_env, write_json_atomic

HERE = Path(__file__).resolve().parent
WARMUP_ROUNDS = 5

Mark = tuple[str, float, float]  # (kernel name such as "conv2d.forward", start, end), perf_counter seconds


def split_gaps(marks: list[Mark], start: float, end: float) -> tuple[dict[str, float], dict[str, float]]:
    """One step's (gaps, kernels): seconds between consecutive kernels keyed "before->after" (with "start" and
    "end" for the step's edges), and seconds inside each kernel keyed by its name (summed if it ran twice)."""
    gaps: dict[str, float] = {}
    kernels: dict[str, float] = {}
    prev_name, prev_end = "start", start
    for name, k_start, k_end in marks:
        key = f"{prev_name}->{name}"
        gaps[key] = gaps.get(key, 0.0) + k_start - prev_end
        kernels[name] = kernels.get(name, 0.0) + k_end - k_start
        prev_name, prev_end = name, k_end
    gaps[f"{prev_name}->end"] = end - prev_end
    return gaps, kernels


@contextlib.contextmanager
def kernel_timers(marks: list[Mark]) -> Iterator[None]:
    """Within the block, every registered op's forward and backward append a Mark to ``marks`` as they run."""
    from microgradcnn.tensor import REGISTRY

    originals: list[tuple[type, str, Any]] = []
    clock = time.perf_counter
    depth = [0]  # a backward rule runs other ops' kernels (Fn.call): only the outermost kernel is marked
    try:
        for fn in set(REGISTRY.values()):
            for method in ("forward", "backward"):
                original = fn.__dict__[method]
                kernel = original.__func__

                name = f"{fn.name}.{method}"

                def timed(*args: Any, _kernel: Any = kernel, _name: str = name, **kw: Any) -> Any:
                    begin = clock()
                    depth[0] += 1
                    try:
                        out = _kernel(*args, **kw)
                    finally:
                        depth[0] -= 1
                    if not depth[0]:
                        marks.append((_name, begin, clock()))
                    return out

                originals.append((fn, method, original))
                setattr(fn, method, staticmethod(timed))
        yield
    finally:
        for fn, method, original in originals:
            setattr(fn, method, original)


def measure(model: str, batch: int, rounds: int) -> dict[str, Any]:
    """Median gaps and kernel times of the library's training step and of its kernels' replay, per step."""
    import bench_train

    marks: list[Mark] = []
    runs: dict[str, dict[str, dict[str, list[float]]]] = {
        impl: {"gaps": {}, "kernels": {}} for impl in ("microgradcnn", "kernels")
    }
    with kernel_timers(marks):
        steps: dict[str, Callable[[], object]] = {
            impl: bench_train.mg_build_step({"impl": impl, "model": model, "mode": "train", "batch": batch})
            for impl in runs
        }
        order = list(steps)
        for r in range(WARMUP_ROUNDS + rounds):
            for impl in order if r % 2 == 0 else reversed(order):
                marks.clear()
                start = time.perf_counter()
                steps[impl]()
                end = time.perf_counter()
                if r < WARMUP_ROUNDS:
                    continue
                for kind, values in zip(("gaps", "kernels"), split_gaps(marks, start, end), strict=True):
                    for key, seconds in values.items():
                        runs[impl][kind].setdefault(key, []).append(seconds)
    n_ops = int(bench_train.mg_graph_ops({"model": model, "batch": batch})["ops"])
    medians = {
        impl: {kind: {k: 1e6 * statistics.median(v) for k, v in got.items()} for kind, got in parts.items()}
        for impl, parts in runs.items()
    }
    lib, ker = medians["microgradcnn"]["gaps"], medians["kernels"]["gaps"]
    engine = sum(lib.values()) - sum(ker.values())
    return {
        "model": model,
        "batch": batch,
        "rounds": rounds,
        "graph_ops": n_ops,
        "gaps_us": {key: {"microgradcnn": lib[key], "kernels": ker.get(key)} for key in lib},
        "kernels_us": medians["microgradcnn"]["kernels"],
        "replay_kernels_us": medians["kernels"]["kernels"],
        "engine_us_per_step": engine,
        "engine_us_per_op": engine / n_ops,
    }


def render(row: dict[str, Any]) -> str:
    """The table of one ``measure`` result."""
    lines = [
        f"{row['model']} CNN, batch {row['batch']}, {row['rounds']} rounds: median us per step",
        f"  {'gap':48} {'library':>9} {'replay':>9} {'engine':>9}",
    ]
    for key, both in row["gaps_us"].items():
        lib, ker = both["microgradcnn"], both["kernels"]
        diff = "" if ker is None else f"{lib - ker:9.1f}"
        lines.append(f"  {key:48} {lib:9.1f} {'-' if ker is None else f'{ker:.1f}':>9} {diff}")
    kernels = sum(row["kernels_us"].values()), sum(row["replay_kernels_us"].values())
    lines.append(
        f"  engine between kernels {row['engine_us_per_step']:.1f} us per step = "
        f"{row['engine_us_per_op']:.1f} us per op ({row['graph_ops']} ops); "
        f"kernels {kernels[0]:,.0f} / {kernels[1]:,.0f} us (library / replay)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--batch-sizes", type=batch_list, default=[1, 256], help="default 1,256")
    parser.add_argument("--rounds", type=int, default=400, help="timed steps of each (default 400)")
    parser.add_argument("--model", choices=("seed", "cifar"), default="seed")
    parser.add_argument("--threads", type=int, default=2, help="BLAS/OpenMP threads (default 2)")
    parser.add_argument("--json", type=Path, help="also write the figures here (atomically)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.rounds < 1:
        raise SystemExit("engine_gaps: --rounds must be >= 1")
    if argv is None:
        ensure_thread_env(args.threads)  # before NumPy loads
    rows = []
    for batch in args.batch_sizes:
        rows.append(measure(args.model, batch, args.rounds))
        print(render(rows[-1]), flush=True)
    if args.json:
        write_json_atomic(args.json, {"model": args.model, "threads": args.threads, "rows": rows})


if __name__ == "__main__":
    main()
