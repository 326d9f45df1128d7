"""The engine's cost per graph op in CPU instructions: the library's training step minus its own kernels.

    python benchmarks/count_instructions.py                    # seed CNN, batch 1 and 256, 20 steps each
    python benchmarks/count_instructions.py --batch-sizes 1,16,64,256 --steps 10 --model cifar

Clock time on a shared 2-core machine drifts by more than the engine costs at large batches, so
``bench_train.py``'s overhead figure (library step minus its kernels replayed without the engine) cannot
resolve it there. Instructions can: ``valgrind --tool=callgrind`` counts what a process executes, the same
total from run to run whatever else the machine is doing. For each batch size and each of the two steps this
script runs ``python count_instructions.py --child`` under callgrind twice, once building the step and
warming it up and once doing that and then ``--steps`` more steps; the difference divided by ``--steps`` is
the step's count.
(library - kernels) / graph ops is the engine's work per op: recording, topological sort, Tensor and Context
objects, argument checks, unbroadcast, module calls and the optimizer's bookkeeping.

One BLAS thread (OpenBLAS's worker threads would be counted too), ``PYTHONHASHSEED=0``. Needs valgrind
(Debian's ``valgrind`` package); counts are for this machine's NumPy and OpenBLAS builds, which choose their
SIMD kernels by CPU. Prints a table and, with ``--json``, writes the figures.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _timing import batch_list, write_json_atomic

HERE = Path(__file__).resolve().parent
WARMUP_STEPS = 3


def child(impl: str, model: str, batch: int, steps: int) -> None:
    """Build ``impl``'s training step (bench_train's), warm it up, then run ``steps`` more steps."""
    import bench_train

    step = bench_train.mg_build_step({"impl": impl, "model": model, "mode": "train", "batch": batch})
    for _ in range(WARMUP_STEPS + steps):
        step()


def count(impl: str, model: str, batch: int, steps: int) -> int:
    """Instructions callgrind counts in one child process (``steps`` steps after the warm-up)."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONHASHSEED": "0",
    }
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        cmd = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            impl,
            model,
            str(batch),
            str(steps),
        ]
        proc = subprocess.run(cmd, cwd=HERE, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"count_instructions: callgrind run failed:\n{proc.stderr[-2000:]}")
        match = re.search(r"^summary:\s+(\d+)", out.read_text(), re.MULTILINE)
        if match is None:
            raise RuntimeError(f"count_instructions: no 'summary:' line in {out}")
        return int(match.group(1))


def measure(model: str, batch: int, steps: int, n_ops: int) -> dict[str, Any]:
    """Instructions per step of the library and of its kernels at one batch size; their difference per op."""
    per_step = {
        impl: (count(impl, model, batch, steps) - count(impl, model, batch, 0)) / steps
        for impl in ("microgradcnn", "kernels")
    }
    engine = per_step["microgradcnn"] - per_step["kernels"]
    return {
        "model": model,
        "batch": batch,
        "steps": steps,
        "instructions_per_step": per_step,
        "engine_instructions_per_step": engine,
        "graph_ops": n_ops,
        "engine_instructions_per_op": engine / n_ops,
    }


def graph_ops(model: str) -> int:
    """Ops one training step records (bench_train's count)."""
    import bench_train

    return int(bench_train.mg_graph_ops({"model": model, "batch": 1})["ops"])


def main(argv: list[str] | None = None) -> None:
    """Entry point (see the module docstring)."""
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["--child"]:
        impl, model, batch, steps = args_in[1:5]
        child(impl, model, int(batch), int(steps))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--batch-sizes", type=batch_list, default=[1, 256], help="default 1,256")
    parser.add_argument("--steps", type=int, default=20, help="counted steps per run (default 20)")
    parser.add_argument("--model", choices=("seed", "cifar"), default="seed")
    parser.add_argument("--json", type=Path, help="also write the figures here (atomically)")
    args = parser.parse_args(args_in)
    if args.steps < 1:
        raise SystemExit("count_instructions: --steps must be >= 1")
    if shutil.which("valgrind") is None:
        raise SystemExit(
            "count_instructions: valgrind is not on PATH; install it (Debian/Ubuntu: "
            "sudo apt-get install valgrind)"
        )
    n_ops = graph_ops(args.model)
    rows = []
    print(f"{args.model} CNN, 1 BLAS thread, {args.steps} counted steps; instructions per training step:")
    for batch in args.batch_sizes:
        row = measure(args.model, batch, args.steps, n_ops)
        rows.append(row)
        lib, ker = row["instructions_per_step"]["microgradcnn"], row["instructions_per_step"]["kernels"]
        print(
            f"  batch {batch:4}: library {lib:,.0f}, its kernels {ker:,.0f}; "
            f"engine {row['engine_instructions_per_step']:,.0f} per step = "
            f"{row['engine_instructions_per_op']:,.0f} per op ({n_ops} ops)",
            flush=True,
        )
    if args.json:
        write_json_atomic(args.json, {"model": args.model, "rows": rows})


if __name__ == "__main__":
    main()
