"""Training and inference images/s of microgradcnn beside PyTorch, hand-written NumPy and tutorial loops.

    python benchmarks/bench_train.py                 # the seed CNN: about 5 minutes on 2 cores
    python benchmarks/bench_train.py --model all     # every model: seed, cnn2, cifar, lenet5, bn
    python benchmarks/bench_train.py --quick         # a smoke test: tiny repeats, figures mean nothing
    python benchmarks/bench_train.py --profile 1,16  # cProfile of microgradcnn's training step instead

``--model`` picks the models, by name separated by commas or ``all`` (``_timing.BENCH_MODELS``: the library's
``seed``, ``cnn2``, ``lenet5`` and ``bn``, and the benchmark's CIFAR-shaped ``cifar``); each runs at every
``--batch-sizes``.

Every implementation runs in its own worker process, started with OMP/OPENBLAS/MKL_NUM_THREADS = ``--threads``
(default 2) and otherwise the caller's environment (no GLIBC_TUNABLES or MALLOC_* is added):

- ``microgradcnn`` (this file with ``--worker``): the library, in a process that never imports torch (checked
  after every request), since importing torch changes glibc malloc's thresholds for the whole process. The
  same worker also times ``kernels``: the library's own op kernels (each ``Function.forward``/``backward``)
  replayed on arrays in graph order with no Tensor, no graph and no engine, which isolates the engine's cost;
- ``numpy`` and ``tutorial`` (``numpy_reference.py --serve``): a hand-written vectorized NumPy
  forward+backward with no autodiff, and the per-image loop code in the tutorial's style
  (``tutorial_loops.py``);
- ``torch`` (``torch_reference.py --serve``), when torch is installed: PyTorch CPU, ``torch.set_num_threads``.

For each case (model, train/infer, batch size) every worker is warmed up and calibrated so that one repeat
lasts at least ``--min-time`` seconds; then the repeats run interleaved (A B C, C B A, ...) so that load from
other processes on the machine falls on all implementations alike. Reported: images/s median [min-max] over
the repeats, ratios of medians, graph overhead per op, peak memory of one step, memory growth over 1,000
steps, and PASS/FAIL against the project's speed targets. The overhead against the library's own kernels is a
difference of a few per cent at large batches, below the machine's drift from one repeat to the next, so it
comes from ``--paired-rounds`` short alternating blocks of the two steps (the median of the per-round
differences) rather than from the difference of the two medians. The table goes to stdout; everything,
with the environment of every worker, goes to ``--json`` (default ``benchmarks/results/bench_train.json``,
written atomically).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from _timing import (
    BENCH_MODELS,
    LEARNING_RATE,
    add_common_args,
    build_model,
    finish_common_args,
    machine_info,
    model_list,
    serve,
    summarize,
    summarize_differences,
    thread_env,
    write_json_atomic,
)

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results" / "bench_train.json"

# The project's speed targets (float32, medians of the same run): model -> (training step: batch -> minimum
# ratio of images/s to PyTorch's, inference: the minimum at every batch). A batch not listed wants 1.0;
# lenet5 has no target.
VS_TORCH: dict[str, tuple[dict[int, float], float]] = {
    "seed": ({1: 1.5, 16: 1.5, 64: 1.0, 256: 1.0}, 1.0),
    "cnn2": ({1: 1.0, 16: 1.25, 64: 1.25, 256: 1.25}, 1.5),
    "cifar": ({1: 1.0, 16: 1.25, 64: 1.25, 256: 1.25}, 1.5),
    "bn": ({}, 1.0),
}
PEAK_VS_TORCH = 1.0  # peak RSS of a training step at the largest batch, ratio to PyTorch's: at most
VS_TUTORIAL = 100.0  # seed CNN, training at batch 1
# BatchNorm1d cannot normalise a single sample in training (PyTorch's rule too): bn trains from batch 2.
MIN_TRAIN_BATCH = {"bn": 2}
# The models numpy_reference.py writes out by hand (tests/test_benchmarks.py checks this is its table).
HAND_WRITTEN = ("seed", "cifar")
OVERHEAD_US_PER_OP = 25.0
# The overhead against the library's own kernels is a difference of ~2 % at batch 256, smaller than the
# machine's drift between repeats, so it is also timed in short alternating blocks (see _timing.time_paired).
PAIRED_BLOCK_S = 0.02  # seconds per block
GROWTH_TRACED_MIB = 0.1  # traced memory kept after 1,000 steps; a leaked graph would be megabytes

IMPL_WORKER = {"microgradcnn": "mg", "kernels": "mg", "numpy": "numpy", "tutorial": "numpy", "torch": "torch"}
IMPL_LABEL = {
    "microgradcnn": "microgradcnn",
    "kernels": "its kernels, no graph",
    "numpy": "hand-written NumPy",
    "tutorial": "tutorial loops",
    "torch": "PyTorch",
}


# =========================================================================================================
# microgradcnn worker (runs with --worker; never imports torch)
# =========================================================================================================
def _torch_free() -> None:
    if "torch" in sys.modules:
        raise AssertionError("bench_train: torch was imported into the microgradcnn worker process")


def _mg_setup(model: str, batch: int) -> tuple[Any, Any, Any, Any]:
    """(model in train mode, optimizer, x Tensor, labels) for one case, on the same data every worker uses."""
    import numpy as np
    from numpy_reference import make_batch

    import microgradcnn as mg
    from microgradcnn.optim import SGD

    net = build_model(model, np.random.default_rng(0)).train()
    x, y = make_batch(batch, BENCH_MODELS[model][0])
    return net, SGD(net.parameters(), lr=LEARNING_RATE), mg.Tensor(x), y


def _mg_train_step(net: Any, opt: Any, x: Any, y: Any) -> Callable[[], None]:
    from microgradcnn import functional as F

    def train() -> None:
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()

    return train


def replay_step(net: Any, x: Any, y: Any, lr: float) -> tuple[Callable[[], None], list[str]]:
    """The library's training step with the engine taken out: its op kernels called directly, in graph order.

    Records the graph of ``cross_entropy(net(x), y)`` once, then each call runs every op's ``forward`` on
    arrays in topological order, seeds the loss gradient with 1, runs every ``backward`` in reverse order
    (adding gradients where a value is used twice, reducing broadcast ones as the engine does) and applies
    ``p -= lr * grad``. No Tensor, graph or Python-level bookkeeping beyond that is made, so
    (library step - this) is the engine's cost. Returns the step and the ops' names in forward order.
    """
    import numpy as np

    from microgradcnn import functional as F
    from microgradcnn.tensor import Context, toposort, unbroadcast

    loss = F.cross_entropy(net(x), y)
    order = [t for t in toposort(loss) if t._ctx is not None]
    index = {id(t): i for i, t in enumerate(order)}
    # Per op: its Function, its input tensors (ops read parents[i].requires_grad), where each input comes from
    # (an int: the output of that earlier op; a Tensor: a leaf, read live so SGD updates show), its attrs.
    plan = [
        (t._ctx.fn, t._ctx.parents, [index.get(id(p), p) for p in t._ctx.parents], t._ctx.attrs)
        for t in order
    ]
    params = [p for p in net.parameters() if p.requires_grad]
    del loss, order

    def step() -> None:
        values: list[Any] = []
        ctxs = []
        for fn, parents, refs, attrs in plan:
            ctx = Context(fn, parents, attrs)
            values.append(fn.forward(ctx, *[values[r] if type(r) is int else r.data for r in refs], **attrs))
            ctxs.append(ctx)
        grads: list[Any] = [None] * len(plan)
        grads[-1] = np.ones_like(values[-1])
        leaf_grads: dict[int, Any] = {}
        for i in range(len(plan) - 1, -1, -1):
            fn, parents, refs, _ = plan[i]
            out = fn.backward(ctxs[i], grads[i])
            grads[i] = values[i] = None
            for ref, parent, g in zip(refs, parents, out if isinstance(out, tuple) else (out,), strict=True):
                if g is None or not parent.requires_grad:
                    continue
                if g.shape != parent.data.shape:
                    g = unbroadcast(g, parent.data.shape)
                if type(ref) is int:
                    grads[ref] = g if grads[ref] is None else grads[ref] + g
                else:
                    prev = leaf_grads.get(id(ref))
                    leaf_grads[id(ref)] = g if prev is None else prev + g
        for p in params:
            p.data -= lr * leaf_grads[id(p)]

    return step, [fn.name for fn, _, _, _ in plan]


def mg_build_step(case: dict[str, Any]) -> Callable[[], object]:
    """A microgradcnn step for ``case``: impl "microgradcnn" (train or infer) or "kernels" (train)."""
    import microgradcnn as mg

    impl, model, mode, batch = case["impl"], case["model"], case["mode"], int(case["batch"])
    net, opt, x, y = _mg_setup(model, batch)
    if impl == "kernels" and mode == "train":
        return replay_step(net, x, y, LEARNING_RATE)[0]
    if impl != "microgradcnn":
        raise ValueError(f"bench_train worker: cannot run case {case!r}")
    if mode == "train":
        return _mg_train_step(net, opt, x, y)
    if mode == "infer":
        net.eval()  # BatchNorm on its running statistics, no Dropout, as PyTorch's side

        def infer() -> object:
            with mg.no_grad():
                return net(x)

        return infer
    raise ValueError(f"bench_train worker: unknown mode {mode!r}")


def mg_graph_ops(request: dict[str, Any]) -> dict[str, Any]:
    """The ops one training step records: count and names (forward order)."""
    net, _, x, y = _mg_setup(request["model"], int(request.get("batch", 1)))
    names = replay_step(net, x, y, LEARNING_RATE)[1]
    return {"ops": len(names), "names": names}


def mg_profile(request: dict[str, Any]) -> dict[str, Any]:
    """cProfile of the microgradcnn training step: the top functions by own time, for ``seconds`` seconds."""
    import cProfile
    import pstats

    from _timing import calibrate, time_steps

    batch = int(request["batch"])
    net, opt, x, y = _mg_setup(request.get("model", "seed"), batch)
    step = _mg_train_step(net, opt, x, y)
    steps = calibrate(step, float(request.get("seconds", 2.0)), 0.2)["steps"]
    unprofiled = time_steps(step, steps) / steps
    profiler = cProfile.Profile()
    profiler.enable()
    time_steps(step, steps)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = sum(row[2] for row in stats.stats.values())  # type: ignore[attr-defined]
    rows = []
    for (path, line, func), (_, ncalls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        short = path.split("site-packages/")[-1].split("/work/main/")[-1]
        rows.append(
            {
                "function": f"{short}:{line}({func})",
                "calls_per_step": ncalls / steps,
                "own_pct": 100 * tottime / total,
                "cum_pct": 100 * cumtime / total,
                "own_us_per_step": 1e6 * tottime / steps,
            }
        )
    rows.sort(key=lambda r: -r["own_pct"])
    return {
        "batch": batch,
        "steps": steps,
        "step_us_unprofiled": 1e6 * unprofiled,
        "step_us_profiled": 1e6 * total / steps,
        "top": rows[: int(request.get("top", 25))],
    }


def worker_main() -> None:
    """Serve the microgradcnn cases; import the library first so a broken install fails loudly at start."""
    import microgradcnn  # noqa: F401

    _torch_free()
    serve(mg_build_step, {"graph_ops": mg_graph_ops, "profile": mg_profile}, check=_torch_free)


# =========================================================================================================
# orchestrator (imports neither numpy nor torch)
# =========================================================================================================
class WorkerError(RuntimeError):
    """A worker process died or answered garbage."""


class CaseError(RuntimeError):
    """A worker could not run one case (the traceback is the message)."""


class Worker:
    """A benchmark worker process spoken to in JSON lines (see ``_timing.serve``)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, cwd=HERE, bufsize=1
        )

    def call(self, **request: Any) -> Any:
        """Send one request and return its result; CaseError if the case failed, WorkerError if the worker
        died."""
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None
        assert stdout is not None
        try:
            stdin.write(json.dumps(request) + "\n")
            stdin.flush()
        except BrokenPipeError:
            raise WorkerError(f"{self.name} worker has exited (code {self.proc.poll()})") from None
        line = stdout.readline()
        if not line:
            raise WorkerError(
                f"{self.name} worker exited (code {self.proc.wait()}) during {request.get('op')}"
            )
        answer = json.loads(line)
        if not answer.get("ok"):
            raise CaseError(answer.get("error", "unknown error"))
        return answer["result"]

    def drop(self, case: dict[str, Any]) -> None:
        """Let the worker free ``case``'s model and data; a dead worker has nothing to free."""
        with contextlib.suppress(CaseError, WorkerError):
            self.call(op="drop", case=case)

    def cpu_seconds(self) -> float:
        """User + system CPU time the worker has used so far (0 once it has exited)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        """Ask the worker to quit; kill it if it does not within 10 s."""
        try:
            self.call(op="quit")
            self.proc.wait(timeout=10)
        except (WorkerError, CaseError, OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def _busy_jiffies() -> tuple[int, int]:
    """(busy, total) CPU jiffies of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def start_workers(args: argparse.Namespace, notes: list[str]) -> dict[str, Worker]:
    """The worker processes this run needs, each started with the thread-count environment."""
    env = thread_env(args.threads)
    common = ["--threads", str(args.threads)]
    workers = {
        "mg": Worker(
            "microgradcnn", [sys.executable, str(HERE / "bench_train.py"), "--worker", *common], env
        ),
        "numpy": Worker("numpy", [sys.executable, str(HERE / "numpy_reference.py"), "--serve", *common], env),
    }
    if args.no_torch:
        notes.append("PyTorch skipped (--no-torch).")
    elif importlib.util.find_spec("torch") is None:
        notes.append("PyTorch is not installed: its columns and the ratio targets are skipped.")
    else:
        workers["torch"] = Worker(
            "torch", [sys.executable, str(HERE / "torch_reference.py"), "--serve", *common], env
        )
    return workers


def plan_cases(
    args: argparse.Namespace, workers: dict[str, Worker]
) -> list[tuple[dict[str, Any], list[str]]]:
    """(case, implementations to interleave) in the order they run: every ``--model`` at every batch size.

    The hand-written NumPy step exists for the ``HAND_WRITTEN`` models only, the tutorial loops for the seed
    CNN at batch 1 only; the kernels' replay is a training step.
    """
    plan: list[tuple[dict[str, Any], list[str]]] = []
    for model in args.models:
        have = [impl for impl in _impls(model) if IMPL_WORKER[impl] in workers]
        for batch in args.batch_sizes:
            extra = ["tutorial"] if model == "seed" and batch == 1 and not args.no_tutorial else []
            if _trains_at(model, batch):
                plan.append(({"model": model, "mode": "train", "batch": batch}, have + extra))
            infer = [impl for impl in have if impl != "kernels"]
            plan.append(({"model": model, "mode": "infer", "batch": batch}, infer))
    return plan


def _trains_at(model: str, batch: int) -> bool:
    """Whether ``model`` has a training step at ``batch`` (see ``MIN_TRAIN_BATCH``)."""
    return batch >= MIN_TRAIN_BATCH.get(model, 1)


def _impls(model: str) -> list[str]:
    """The implementations of ``model`` besides the tutorial loops (which only the seed CNN has)."""
    impls = ("microgradcnn", "kernels", "numpy", "torch")
    return [impl for impl in impls if impl != "numpy" or model in HAND_WRITTEN]


def _short_error(err: Exception) -> str:
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def run_case(
    workers: dict[str, Worker], case: dict[str, Any], impls: list[str], args: argparse.Namespace, log: IO[str]
) -> dict[str, dict[str, Any]]:
    """Calibrate every implementation on ``case``, then time the repeats interleaved. impl -> result."""
    results: dict[str, dict[str, Any]] = {}
    steps: dict[str, int] = {}
    for impl in impls:
        try:
            cal = workers[IMPL_WORKER[impl]].call(
                op="calibrate", case={**case, "impl": impl}, min_time=args.min_time, warmup=args.warmup
            )
            steps[impl] = int(cal["steps"])
        except (CaseError, WorkerError) as err:
            results[impl] = {"error": _short_error(err), "traceback": str(err)}
    rates: dict[str, list[float]] = {impl: [] for impl in steps}
    for r in range(args.repeats):
        order = list(steps) if r % 2 == 0 else list(reversed(steps))
        for impl in order:
            if impl in results:  # failed in an earlier repeat
                continue
            try:
                t = workers[IMPL_WORKER[impl]].call(op="time", case={**case, "impl": impl}, steps=steps[impl])
                rates[impl].append(steps[impl] * case["batch"] / t["seconds"])
            except (CaseError, WorkerError) as err:
                results[impl] = {"error": _short_error(err), "traceback": str(err)}
    paired = _time_library_against_kernels(workers, case, steps, results, args)
    for impl, values in rates.items():
        if impl not in results:
            results[impl] = {"images_per_s": summarize(values), "steps_per_repeat": steps[impl]}
            if impl == "microgradcnn" and paired:
                results[impl]["paired_vs_kernels"] = paired
            med = results[impl]["images_per_s"]["median"]
            print(
                f"  {case['model']:6} {case['mode']:5} batch {case['batch']:3}  {IMPL_LABEL[impl]:22} "
                f"{med:10,.0f} images/s",
                file=log,
                flush=True,
            )
        else:
            print(
                f"  {case['model']:6} {case['mode']:5} batch {case['batch']:3}  {IMPL_LABEL[impl]:22} "
                f"FAILED: {results[impl]['error']}",
                file=log,
                flush=True,
            )
    return results


def _time_library_against_kernels(
    workers: dict[str, Worker],
    case: dict[str, Any],
    steps: dict[str, int],
    results: dict[str, dict[str, Any]],
    args: argparse.Namespace,
) -> dict[str, Any] | None:
    """The library's step minus its kernels' step, seconds, from ``--paired-rounds`` alternating blocks.

    Both run in the microgradcnn worker; None when either failed, is absent, or rounds are 0.
    """
    both = ("microgradcnn", "kernels")
    if args.paired_rounds < 1 or any(impl not in steps or impl in results for impl in both):
        return None
    blocks = {impl: max(1, round(steps[impl] * PAIRED_BLOCK_S / args.min_time)) for impl in both}
    try:
        times = workers["mg"].call(
            op="paired",
            case_a={**case, "impl": "microgradcnn"},
            case_b={**case, "impl": "kernels"},
            steps_a=blocks["microgradcnn"],
            steps_b=blocks["kernels"],
            rounds=args.paired_rounds,
        )
    except (CaseError, WorkerError) as err:
        return {"error": _short_error(err)}
    return {
        "step_difference_s": summarize_differences(times["a"], times["b"]),
        "block_steps": [blocks["microgradcnn"], blocks["kernels"]],
    }


def measure_memory(workers: dict[str, Worker], args: argparse.Namespace, log: IO[str]) -> dict[str, Any]:
    """Peak memory of one training step of every model at the largest batch (``peak``: model -> impl ->
    figures), and the first model's memory growth over ``--growth-steps`` steps (``growth``: impl -> figures).
    """
    peak_batch = 256 if 256 in args.batch_sizes else max(args.batch_sizes)
    growth_model = args.models[0]
    memory: dict[str, Any] = {
        "peak_batch": peak_batch,
        "growth_batch": args.growth_batch,
        "growth_model": growth_model,
        "peak": {model: {} for model in args.models},
        "growth": {},
    }
    jobs = [
        ("peak", model, impl, peak_batch, {})
        for model in args.models
        if _trains_at(model, peak_batch)
        for impl in _impls(model)
        if impl != "kernels"  # a replay of the library's kernels: its memory is the library's
    ]
    jobs += [
        ("growth", growth_model, impl, args.growth_batch, {"steps": args.growth_steps})
        for impl in ("microgradcnn", "torch")
    ]
    for kind, model, impl, batch, extra in jobs:
        worker = workers.get(IMPL_WORKER[impl])
        if worker is None:
            continue
        case = {"impl": impl, "model": model, "mode": "train", "batch": batch}
        out = memory["peak"][model] if kind == "peak" else memory["growth"]
        try:
            # tracemalloc sees NumPy's buffers, not PyTorch's
            out[impl] = worker.call(op=kind, case=case, tracemalloc=impl != "torch", **extra)
        except (CaseError, WorkerError) as err:
            out[impl] = {"error": _short_error(err)}
        worker.drop(case)
        print(f"  memory {kind:6} {model:6} {IMPL_LABEL[impl]:22} {out[impl]}", file=log, flush=True)
    return memory


def derive(
    results: list[dict[str, Any]], graph_ops: dict[str, Any], memory: dict[str, Any], args: argparse.Namespace
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Overhead rows per batch size and the list of targets with PASS/FAIL (None: not measurable)."""

    def row_of(model: str, mode: str, batch: int, impl: str) -> dict[str, Any]:
        for row in results:
            if (row["model"], row["mode"], row["batch"], row["impl"]) == (model, mode, batch, impl):
                return row
        return {}

    def med(model: str, mode: str, batch: int, impl: str) -> float | None:
        return row_of(model, mode, batch, impl).get("images_per_s", {}).get("median")

    overhead = []
    for model in args.models:
        n_ops = graph_ops.get(model, {}).get("ops")
        for batch in (b for b in args.batch_sizes if _trains_at(model, b)):
            lib, ref, ker = (
                med(model, "train", batch, impl) for impl in ("microgradcnn", "numpy", "kernels")
            )
            row: dict[str, Any] = {"model": model, "batch": batch, "graph_ops": n_ops}
            if lib:
                row["lib_step_us"] = 1e6 * batch / lib
            for name, other in (("numpy", ref), ("kernels", ker)):
                if lib and other:
                    row[f"{name}_step_us"] = 1e6 * batch / other
                    if n_ops:
                        row[f"overhead_vs_{name}_us_per_op"] = (
                            row["lib_step_us"] - row[f"{name}_step_us"]
                        ) / n_ops
            paired = row_of(model, "train", batch, "microgradcnn").get("paired_vs_kernels") or {}
            diff = paired.get("step_difference_s")
            if diff and n_ops:
                # The steadier reading replaces the difference of medians (kept in the row for comparison).
                row["overhead_vs_kernels_unpaired_us_per_op"] = row.get("overhead_vs_kernels_us_per_op")
                row["overhead_vs_kernels_us_per_op"] = 1e6 * diff["median"] / n_ops
                row["overhead_vs_kernels_iqr_us_per_op"] = [1e6 * diff[q] / n_ops for q in ("q1", "q3")]
                row["paired_rounds"] = diff["rounds"]
            overhead.append(row)

    targets: list[dict[str, Any]] = []

    def target(name: str, value: float | None, threshold: float, higher_is_better: bool = True) -> None:
        ok = None if value is None else (value >= threshold if higher_is_better else value <= threshold)
        targets.append(
            {
                "target": name,
                "value": value,
                "threshold": threshold,
                "compare": ">=" if higher_is_better else "<=",
                "pass": ok,
            }
        )

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    for model in (m for m in args.models if m in VS_TORCH):
        train, infer = VS_TORCH[model]
        for mode in ("train", "infer"):
            for batch in (b for b in args.batch_sizes if mode == "infer" or _trains_at(model, b)):
                target(
                    f"{model} {mode} vs PyTorch, batch {batch}",
                    ratio(med(model, mode, batch, "microgradcnn"), med(model, mode, batch, "torch")),
                    train.get(batch, 1.0) if mode == "train" else infer,
                )
    if "seed" in args.models and 1 in args.batch_sizes and not args.no_tutorial:
        lib, tut = med("seed", "train", 1, "microgradcnn"), med("seed", "train", 1, "tutorial")
        target("seed train vs tutorial loops, batch 1", ratio(lib, tut), VS_TUTORIAL)
    # Two readings of "the same NumPy kernels called directly": the library's own kernels replayed without the
    # engine (pure engine cost), and the hand-written reference (engine cost plus any kernel the library does
    # worse than hand-written code). Negative: the other implementation was the slower one.
    for other, label in (("kernels", "its own kernels"), ("numpy", "hand-written NumPy")):
        for row in overhead:
            if row["model"] == "seed":
                target(
                    f"seed graph overhead µs/op vs {label}, batch {row['batch']}",
                    row.get(f"overhead_vs_{other}_us_per_op"),
                    OVERHEAD_US_PER_OP,
                    higher_is_better=False,
                )
    for model, peaks in memory.get("peak", {}).items():
        lib, torch = (peaks.get(impl, {}).get("rss_peak_mib") for impl in ("microgradcnn", "torch"))
        target(
            f"{model} peak memory vs PyTorch, train batch {memory['peak_batch']} (RSS ratio)",
            lib / torch if lib is not None and torch else None,
            PEAK_VS_TORCH,
            higher_is_better=False,
        )
    growth = memory.get("growth", {}).get("microgradcnn", {}).get("tracemalloc_growth_mib")
    target(
        f"{memory.get('growth_model')} memory growth over {args.growth_steps} steps (traced MiB)",
        growth,
        GROWTH_TRACED_MIB,
        higher_is_better=False,
    )
    return overhead, targets


# ---- report ---------------------------------------------------------------------------------------------
def _fmt_rate(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "-"
    if "error" in entry:
        return "error"
    s = entry["images_per_s"]
    return f"{s['median']:,.0f} [{s['min']:,.0f}-{s['max']:,.0f}]"


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _table_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (model, mode, batch): the implementations' results, the ratio to PyTorch, the overheads."""
    grouped: dict[tuple[str, str, int], dict[str, Any]] = {}
    for row in report["results"]:
        grouped.setdefault((row["model"], row["mode"], row["batch"]), {})[row["impl"]] = row
    ov = {(r["model"], r["batch"]): r for r in report["overhead"]}
    mem = report["memory"]
    wants = {t["target"]: t["threshold"] for t in report["targets"]}
    rows = []
    for (model, mode, batch), impls in grouped.items():
        mg, torch = impls.get("microgradcnn"), impls.get("torch")
        ratio = None
        if mg and torch and "images_per_s" in mg and "images_per_s" in torch:
            ratio = mg["images_per_s"]["median"] / torch["images_per_s"]["median"]
        o = ov.get((model, batch), {}) if mode == "train" else {}
        peak = ""
        if mode == "train" and batch == mem.get("peak_batch"):
            peaks = mem.get("peak", {}).get(model, {})
            peak = " / ".join(
                _fmt(peaks.get(impl, {}).get("rss_peak_mib"), ".1f") for impl in ("microgradcnn", "torch")
            )
        want = wants.get(f"{model} {mode} vs PyTorch, batch {batch}")
        rows.append(
            {
                "model": model,
                "mode": mode,
                "batch": batch,
                "ratio": ratio,
                "want": "" if want is None else f">= {want}",
                "peak": peak,
                **{impl: _fmt_rate(impls.get(impl)) for impl in IMPL_LABEL},
                "has_tutorial": "tutorial" in impls,
                "overhead": f"{_fmt(o.get('overhead_vs_kernels_us_per_op'), '.1f')} / "
                f"{_fmt(o.get('overhead_vs_numpy_us_per_op'), '.1f')}"
                if o
                else "",
            }
        )
    return rows


def render_table(report: dict[str, Any]) -> str:
    """The human-readable report: throughput table, overhead, memory, targets."""
    meta = report["meta"]
    lines = [
        f"microgradcnn training benchmark, {meta['machine']['date']}",
        f"machine: {meta['machine']['cpus']} CPUs, {meta['machine']['cpu_model']}; "
        f"threads {meta['threads']}; load {meta['load_before'][0]:.2f} -> {meta['load_after'][0]:.2f}; "
        f"other processes used {meta['other_cpu_pct']:.0f}% of the CPUs during the run "
        f"({meta['busy_or_quiet']})",
        f"allocator: {meta['allocator']}; BLAS: {meta['blas']}",
        f"repeats {meta['repeats']} x >= {meta['min_time']} s, images/s median [min-max]"
        + ("  (--quick: smoke test, figures are meaningless)" if meta["quick"] else ""),
        "",
    ]
    head = (
        f"{'model':7}{'mode':6}{'batch':>6}  {'microgradcnn':>24}{'PyTorch':>24}{'ratio':>7}{'want':>8}"
        f"{'its kernels, no graph':>24}{'NumPy by hand':>24}{'peak MiB':>14}"
        "  overhead µs/op vs kernels / vs NumPy"
    )
    lines += [head, "-" * len(head)]
    for r in _table_rows(report):
        lines.append(
            f"{r['model']:7}{r['mode']:6}{r['batch']:>6}  {r['microgradcnn']:>24}{r['torch']:>24}"
            f"{_fmt(r['ratio']):>7}{r['want']:>8}{r['kernels']:>24}{r['numpy']:>24}{r['peak']:>14}"
            f"  {r['overhead']}"
        )
        if r["has_tutorial"]:
            lines.append(f"{'':19}  tutorial-style loops: {r['tutorial']} images/s")
    lines.append("")
    lines.append(
        "ratio = microgradcnn / PyTorch images/s, want = its target; peak MiB = RSS high-water of one "
        "training step, microgradcnn / PyTorch"
    )
    lines.append("")
    lines.append(
        "graph overhead = (library step - the other's step) / graph ops per step; against its kernels, "
        "the median difference of alternating 20 ms blocks; ops per step: "
        + ", ".join(f"{m} {g.get('ops')}" for m, g in report["graph_ops"].items())
    )
    for r in report["overhead"]:
        paired = ""
        if "paired_rounds" in r:
            q1, q3 = r["overhead_vs_kernels_iqr_us_per_op"]
            paired = (
                f" (median of {r['paired_rounds']} paired blocks, quartiles {q1:.1f}..{q3:.1f}; "
                f"from the medians above {_fmt(r.get('overhead_vs_kernels_unpaired_us_per_op'), '.1f')})"
            )
        lines.append(
            f"  {r['model']:6} batch {r['batch']:3}: library {_fmt(r.get('lib_step_us'), '.0f')} µs/step; "
            f"vs hand-written NumPy {_fmt(r.get('overhead_vs_numpy_us_per_op'), '.1f')} µs/op, "
            f"vs its own kernels {_fmt(r.get('overhead_vs_kernels_us_per_op'), '.1f')} µs/op{paired}"
        )
    mem = report["memory"]
    lines += [
        "",
        f"memory, one training step at batch {mem.get('peak_batch')} (RSS high-water above the "
        "RSS before it; tracemalloc peak; page faults per step):",
    ]
    for model, peaks in mem.get("peak", {}).items():
        for impl, m in peaks.items():
            lines.append(
                f"  {model:6} {IMPL_LABEL[impl]:22} RSS +{_fmt(m.get('rss_peak_mib'))} MiB, traced "
                f"{_fmt(m.get('tracemalloc_peak_mib'))} MiB, {m.get('minor_faults', '-')} page faults"
            )
    lines.append(
        f"memory growth, {mem.get('growth_model')}, over {meta['growth_steps']} training steps at batch "
        f"{mem.get('growth_batch')}:"
    )
    for impl, m in mem.get("growth", {}).items():
        lines.append(
            f"  {IMPL_LABEL[impl]:22} RSS {_fmt(m.get('rss_growth_mib'), '+.3f')} MiB, traced "
            f"{_fmt(m.get('tracemalloc_growth_mib'), '+.4f')} MiB"
        )
    lines += ["", "targets:"]
    for t in report["targets"]:
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[t["pass"]]
        lines.append(
            f"  {verdict:5} {t['target']}: {_fmt(t['value'])} (want {t['compare']} {t['threshold']})"
        )
    lines += [f"note: {n}" for n in meta["notes"]]
    return "\n".join(lines)


def render_markdown(report: dict[str, Any]) -> str:
    """The throughput table and the targets as Markdown, for docs/benchmarks.md."""
    meta = report["meta"]
    machine = meta["machine"]
    out = [
        f"Measured {machine['date']}, {machine['cpus']} CPUs ({machine['cpu_model']}), {meta['threads']} "
        f"threads, {meta['allocator']}; load average {meta['load_before'][0]:.2f} -> "
        f"{meta['load_after'][0]:.2f}, other processes took {meta['other_cpu_pct']:.0f}% of the CPUs "
        f"({meta['busy_or_quiet']}). Images/s, median [min-max] of {meta['repeats']} interleaved repeats of "
        f">= {meta['min_time']} s.",
        "",
        "| model | mode | batch | microgradcnn | PyTorch | ratio | want | its kernels, no graph "
        "| hand-written NumPy | peak MiB, ours / PyTorch's | overhead µs/op vs kernels / vs NumPy |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in _table_rows(report):
        out.append(
            f"| {r['model']} | {r['mode']} | {r['batch']} | {r['microgradcnn']} | {r['torch']} "
            f"| {_fmt(r['ratio'])} | {r['want']} | {r['kernels']} | {r['numpy']} | {r['peak']} "
            f"| {r['overhead']} |"
        )
        if r["has_tutorial"]:
            out.append(
                f"| {r['model']} | {r['mode']} | {r['batch']} | tutorial loops: {r['tutorial']} "
                "| | | | | | | |"
            )
    out += ["", "| target | value | want | result |", "|---|---:|---:|---|"]
    for t in report["targets"]:
        verdict = {True: "PASS", False: "**FAIL**", None: "n/a"}[t["pass"]]
        out.append(f"| {t['target']} | {_fmt(t['value'])} | {t['compare']} {t['threshold']} | {verdict} |")
    return "\n".join(out)


def _blas_summary(info: dict[str, Any]) -> str:
    pools = info.get("threadpools")
    if not isinstance(pools, list):
        return str(pools)
    blas = [p for p in pools if p.get("user_api") == "blas"]
    return (
        ", ".join(
            f"{p['internal_api']} {p['version']} {p['architecture']} ({p['num_threads']} threads)"
            for p in blas
        )
        or "none found"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole benchmark: start workers, time every case, measure memory, derive targets."""
    log = sys.stderr
    notes: list[str] = []
    load_before, (busy0, total0), t0 = list(os.getloadavg()), _busy_jiffies(), time.time()
    own_cpu0 = time.process_time()
    workers = start_workers(args, notes)
    try:
        infos: dict[str, Any] = {}
        for name in list(workers):
            try:
                infos[name] = workers[name].call(op="info")
            except WorkerError as err:
                notes.append(f"{name} worker failed to start: {err}")
                workers.pop(name).close()
        if "mg" not in workers:
            raise SystemExit("bench_train: the microgradcnn worker did not start (see the error above)")
        graph_ops: dict[str, Any] = {}
        for model in args.models:
            try:
                batch = MIN_TRAIN_BATCH.get(model, 1)
                graph_ops[model] = workers["mg"].call(op="graph_ops", model=model, batch=batch)
            except CaseError as err:
                graph_ops[model] = {"error": _short_error(err)}
        results = []
        for case, impls in plan_cases(args, workers):
            for impl, res in run_case(workers, case, impls, args, log).items():
                results.append({**case, "impl": impl, **res})
            for impl in impls:
                workers[IMPL_WORKER[impl]].drop({**case, "impl": impl})
        memory = measure_memory(workers, args, log)
        cpu_ours = sum(w.cpu_seconds() for w in workers.values()) + time.process_time() - own_cpu0
    finally:
        for w in workers.values():
            w.close()
    busy1, total1 = _busy_jiffies()
    hz = os.sysconf("SC_CLK_TCK")
    other = max(0.0, (busy1 - busy0) / hz - cpu_ours)
    other_pct = 100 * other / max((total1 - total0) / hz, 1e-9)
    overhead, targets = derive(results, graph_ops, memory, args)
    mg_info = infos["mg"]
    if mg_info.get("env", {}).get("OPENBLAS_CORETYPE") is None:
        notes.append("OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE not set: OpenBLAS picked its kernel itself.")
    if args.threads > 1 and other_pct > 20:
        notes.append(
            "the machine was busy: multi-threaded code (PyTorch's, OpenBLAS's) suffers more than "
            "single-threaded NumPy when another process holds a core; compare ratios, rerun when quiet."
        )
    meta = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(),
        "threads": args.threads,
        "repeats": args.repeats,
        "min_time": args.min_time,
        "quick": args.quick,
        "growth_steps": args.growth_steps,
        "duration_s": round(time.time() - t0, 1),
        "load_before": load_before,
        "load_after": list(os.getloadavg()),
        "other_cpu_pct": round(other_pct, 1),
        "busy_or_quiet": "quiet" if other_pct < 10 else "busy",
        "allocator": mg_info.get("allocator"),
        "blas": _blas_summary(mg_info),
        "workers": infos,
        "notes": notes,
    }
    return {
        "meta": meta,
        "results": results,
        "graph_ops": graph_ops,
        "overhead": overhead,
        "memory": memory,
        "targets": targets,
    }


def run_profile(args: argparse.Namespace) -> None:
    """Print cProfile hotspots of microgradcnn's training step (``--profile-model``) at each batch size."""
    worker = Worker(
        "microgradcnn",
        [sys.executable, str(HERE / "bench_train.py"), "--worker", "--threads", str(args.threads)],
        thread_env(args.threads),
    )
    try:
        for batch in args.profile:
            prof = worker.call(
                op="profile",
                model=args.profile_model,
                batch=batch,
                seconds=max(args.min_time, 0.05),
                top=args.top,
            )
            print(
                f"\n{args.profile_model} CNN, batch {batch}: {prof['step_us_unprofiled']:.0f} µs/step "
                f"unprofiled, {prof['step_us_profiled']:.0f} µs/step under cProfile ({prof['steps']} steps)"
            )
            print(f"  {'own %':>6} {'cum %':>6} {'own µs':>8} {'calls':>6}  function")
            for row in prof["top"]:
                print(
                    f"  {row['own_pct']:6.1f} {row['cum_pct']:6.1f} {row['own_us_per_step']:8.1f} "
                    f"{row['calls_per_step']:6.1f}  {row['function']}"
                )
    finally:
        worker.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_args(parser)
    parser.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, help=f"results file (default {DEFAULT_JSON})"
    )
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    parser.add_argument("--no-tutorial", action="store_true", help="skip the tutorial-loop implementation")
    parser.add_argument(
        "--model",
        dest="models",
        type=model_list,
        default=["seed"],
        metavar="NAMES",
        help=f"models to time, separated by commas, or 'all' ({', '.join(BENCH_MODELS)}; default seed)",
    )
    parser.add_argument("--growth-steps", type=int, default=1000, help="steps of the memory-growth check")
    parser.add_argument(
        "--paired-rounds",
        type=int,
        default=200,
        help="alternating 20 ms blocks of the library's and its kernels' step per training case, for the "
        "graph overhead (default 200; 0: skip)",
    )
    parser.add_argument("--growth-batch", type=int, default=16, help="batch size of the memory-growth check")
    parser.add_argument(
        "--profile",
        type=lambda s: [int(v) for v in s.split(",")],
        metavar="BATCHES",
        help="print cProfile hotspots of the training step at these batch sizes, then stop",
    )
    parser.add_argument("--top", type=int, default=25, help="rows of --profile output (default 25)")
    parser.add_argument(
        "--profile-model", choices=tuple(BENCH_MODELS), default="seed", help="model to --profile"
    )
    parser.add_argument(
        "--markdown", action="store_true", help="also print the tables as Markdown (for docs)"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = finish_common_args(parser.parse_args(argv))
    if args.quick:
        args.growth_steps = min(args.growth_steps, 20)
        args.paired_rounds = min(args.paired_rounds, 4)
    return args


def main(argv: list[str] | None = None) -> None:
    """Entry point: worker, profile or full benchmark."""
    args = parse_args(argv)
    if args.worker:
        worker_main()
        return
    if args.profile:
        run_profile(args)
        return
    report = run(args)
    print(render_table(report))
    if args.markdown:
        print("\n" + render_markdown(report))
    write_json_atomic(args.json, report)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
