"""Timing, memory and environment helpers shared by the training benchmark and its worker processes.

Importing this module imports neither NumPy nor PyTorch: a script must be able to set the thread-count
variables (``OMP_NUM_THREADS`` ...) in its environment before either is loaded, and the parent process of
``bench_train.py`` never loads them at all.

A *worker* is a process that builds training/inference steps and times them on request. ``serve`` runs its
request loop: one JSON object per line on stdin, one JSON answer per line on the original stdout (anything the
code under test prints goes to stderr instead, so it cannot corrupt the protocol). ``run_standalone`` times a
list of cases in one process and returns the same figures, for a script run on its own.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import platform
import resource
import statistics
import sys
import time
import traceback
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# OpenBLAS tuning the machine's environment may set: reported, never changed.
BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_VERBOSE", "GOTO_NUM_THREADS")
ALLOCATOR_VARS = ("GLIBC_TUNABLES", "LD_PRELOAD")

NUM_CLASSES = 10
LEARNING_RATE = 0.01  # plain SGD, no momentum, in every framework

Step = Callable[[], object]
Case = dict[str, Any]  # {"impl": str, "model": str, "mode": "train" | "infer", "batch": int}
StepFactory = Callable[[Case], Step]


# ---- models ----------------------------------------------------------------------------------------------
def _library_model(name: str) -> Callable[[Any], Any]:
    """A builder of ``microgradcnn.models.MODELS[name]``: the library's own model, made as a user makes it."""

    def build(rng: Any) -> Any:
        from microgradcnn import models

        return models.MODELS[name](rng=rng)

    return build


def _cifar_cnn(rng: Any) -> Any:
    """The CIFAR-shaped CNN, the benchmark's own: (N, 3, 32, 32) -> Conv2d(3, 16, 3, padding=1), ReLU,
    MaxPool2d(2) -> Conv2d(16, 32, 3, padding=1), ReLU, MaxPool2d(2) -> (N, 32, 8, 8) -> Linear(2048, 10)."""
    from microgradcnn import nn

    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, rng=rng),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, rng=rng),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, 10, rng=rng),
    )


# The benchmarked models (``bench_train.py --model``): name -> (input shape (C, H, W), builder taking a NumPy
# Generator and returning the microgradcnn model). Every worker builds from this one table: the library worker
# times the model itself, the PyTorch worker converts it layer for layer and loads its state_dict
# (``torch_reference.torch_twin``), so both compute the same function from the same weights. Builders import
# microgradcnn only when called: importing this module loads neither NumPy nor PyTorch.
BENCH_MODELS: dict[str, tuple[tuple[int, int, int], Callable[[Any], Any]]] = {
    "seed": ((1, 28, 28), _library_model("seed")),
    "cnn2": ((1, 28, 28), _library_model("cnn2")),
    "cifar": ((3, 32, 32), _cifar_cnn),
    "lenet5": ((1, 28, 28), _library_model("lenet5")),
    "bn": ((1, 28, 28), _library_model("bn")),
}
INPUT_SHAPES = {name: shape for name, (shape, _) in BENCH_MODELS.items()}


def build_model(name: str, rng: Any) -> Any:
    """The microgradcnn model ``name`` of ``BENCH_MODELS``, its weights drawn from ``rng``."""
    if name not in BENCH_MODELS:
        raise ValueError(f"benchmarks: unknown model {name!r}; choose from {', '.join(BENCH_MODELS)}")
    return BENCH_MODELS[name][1](rng)


def model_list(text: str) -> list[str]:
    """Parse ``--model``: "all", or model names separated by commas, into a list of names (argparse type)."""
    if text.strip() == "all":
        return list(BENCH_MODELS)
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in BENCH_MODELS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"--model wants 'all' or names from {', '.join(BENCH_MODELS)} separated by commas, got {text!r}"
        )
    return list(dict.fromkeys(names))  # each once, in the order given


# ---- threads ---------------------------------------------------------------------------------------------
def thread_env(threads: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default ``os.environ``) with each BLAS/OpenMP thread count set to ``threads``."""
    if threads < 1:
        raise ValueError(f"thread_env: threads must be >= 1, got {threads}")
    env = dict(os.environ if base is None else base)
    env.update({var: str(threads) for var in THREAD_VARS})
    return env


def ensure_thread_env(threads: int) -> None:
    """Make sure this script runs with the thread-count variables = ``threads``: re-execute it if not.

    BLAS and OpenMP read the variables once, when they load, so setting them after ``import numpy`` would be
    ignored; re-executing the script with the right environment is the one way that always works.
    """
    env = thread_env(threads)
    if any(os.environ.get(var) != env[var] for var in THREAD_VARS):
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


# ---- timing ----------------------------------------------------------------------------------------------
def time_steps(step: Step, steps: int) -> float:
    """Seconds (wall clock) taken by ``steps`` calls of ``step``."""
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - start


def calibrate(step: Step, min_time: float, warmup: float) -> dict[str, float]:
    """Warm ``step`` up for ``warmup`` seconds (at least 2 calls), then find how many calls last ``min_time``.

    Returns ``{"step_s": seconds per call, "steps": calls for one repeat}``.
    """
    start = time.perf_counter()
    calls = 0
    while calls < 2 or time.perf_counter() - start < warmup:
        step()
        calls += 1
    # Estimate over about a tenth of a repeat (at least 3 calls) so a slow first call does not skew it.
    probe, elapsed = 0, 0.0
    while probe < 3 or elapsed < min(0.1 * min_time, 0.5):
        elapsed += time_steps(step, 1)
        probe += 1
    per_step = elapsed / probe
    return {"step_s": per_step, "steps": max(1, int(min_time / per_step * 1.05) + 1)}


def time_paired(a: Step, b: Step, steps_a: int, steps_b: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per call of ``a`` and of ``b``, timed in ``rounds`` adjacent blocks: a b, b a, a b, ...

    Two steps timed in short alternating blocks run under the same phase of a shared machine, so the
    per-round difference cancels the drift that separate repeats of a second each see; the median of those
    differences is a far steadier estimate of how much slower one step is than the other than the difference
    of two medians. Returns ``{"a": [...], "b": [...]}``, one figure per round.
    """
    if min(steps_a, steps_b, rounds) < 1:
        raise ValueError(f"time_paired: steps and rounds must be >= 1, got {steps_a}, {steps_b}, {rounds}")
    per_a: list[float] = []
    per_b: list[float] = []
    for r in range(rounds):
        if r % 2 == 0:
            ta, tb = time_steps(a, steps_a), time_steps(b, steps_b)
        else:
            tb, ta = time_steps(b, steps_b), time_steps(a, steps_a)
        per_a.append(ta / steps_a)
        per_b.append(tb / steps_b)
    return {"a": per_a, "b": per_b}


def summarize_differences(a: Iterable[float], b: Iterable[float]) -> dict[str, Any]:
    """Median and quartiles of the paired differences ``a[i] - b[i]`` (as ``time_paired`` returns them)."""
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    if not diffs:
        raise ValueError("summarize_differences: no values")
    q1, _, q3 = statistics.quantiles(diffs, n=4) if len(diffs) > 1 else (diffs[0],) * 3
    return {"median": statistics.median(diffs), "q1": q1, "q3": q3, "rounds": len(diffs)}


def summarize(values: Iterable[float]) -> dict[str, Any]:
    """Median, min and max of the repeats' figures, with the figures themselves."""
    vals = list(values)
    if not vals:
        raise ValueError("summarize: no values")
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "values": vals}


# ---- memory ----------------------------------------------------------------------------------------------
def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_kib() -> int | None:
    """Resident set size of this process in KiB (Linux), or None."""
    return _status_kib("VmRSS")


def _reset_peak_rss() -> bool:
    """Reset VmHWM (the RSS high-water mark) to the current RSS; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _malloc_trim() -> None:
    """Hand glibc's free heap memory back to the kernel, so the next step's working memory shows in RSS.

    Without it, memory freed by earlier steps stays resident and the next step reuses it unseen. This does not
    change malloc's thresholds, and it runs only in the memory measurements, after all timing.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _settle() -> int | None:
    gc.collect()
    _malloc_trim()
    return rss_kib()


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def step_peak_memory(step: Step, use_tracemalloc: bool) -> dict[str, Any]:
    """Peak memory and page faults of one call of ``step`` (warmed up here first).

    ``rss_peak_mib``: the RSS high-water mark during the call minus the RSS before it, after returning free
    heap memory to the kernel (comparable across frameworks: it counts whatever allocator they use).
    ``tracemalloc_peak_mib``: the peak of memory traced by ``tracemalloc`` (NumPy reports its array buffers to
    it; PyTorch does not, so pass ``use_tracemalloc=False`` there).
    ``minor_faults``: page faults of one call in the steady state (no trimming before it): each is a fresh
    page the kernel had to map and zero, the cost of an allocator that hands big arrays back to the kernel.
    """
    time_steps(step, 3)
    faults = _minor_faults()
    step()
    out: dict[str, Any] = {"minor_faults": _minor_faults() - faults}
    before = _settle()
    if before is not None and _reset_peak_rss():
        step()
        peak = _status_kib("VmHWM")
        if peak is not None:
            out["rss_peak_mib"] = round((peak - before) / 1024, 3)
    if use_tracemalloc:
        gc.collect()
        tracemalloc.start()
        try:
            step()
            out["tracemalloc_peak_mib"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 3)
        finally:
            tracemalloc.stop()
    return out


def memory_growth(step: Step, steps: int, use_tracemalloc: bool) -> dict[str, Any]:
    """Memory kept across ``steps`` calls of ``step``: RSS (and traced memory) after minus before.

    The tracemalloc run is a second pass of ``steps`` calls, since tracing slows every allocation.
    """
    time_steps(step, 3)  # lazily made, once-only allocations are not growth
    before = _settle()
    time_steps(step, steps)
    after = _settle()
    out: dict[str, Any] = {"steps": steps}
    if before is not None and after is not None:
        out["rss_growth_mib"] = round((after - before) / 1024, 3)
        out["rss_before_mib"] = round(before / 1024, 1)
    if use_tracemalloc:
        gc.collect()
        tracemalloc.start()
        try:
            # One traced call first: what it replaces (grads, the last graph) was allocated before tracing
            # began, so the first call's survivors would otherwise count as growth.
            step()
            gc.collect()
            start = tracemalloc.get_traced_memory()[0]
            time_steps(step, steps)
            gc.collect()
            out["tracemalloc_growth_mib"] = round((tracemalloc.get_traced_memory()[0] - start) / 2**20, 4)
        finally:
            tracemalloc.stop()
    return out


# ---- environment -----------------------------------------------------------------------------------------
def allocator_regime(env: dict[str, str] | None = None) -> str:
    """Which malloc configuration a process started with ``env`` runs under, in words."""
    env = dict(os.environ if env is None else env)
    set_vars = {k: v for k, v in env.items() if k in ALLOCATOR_VARS or k.startswith("MALLOC_")}
    if not set_vars:
        return "glibc malloc, default settings (no GLIBC_TUNABLES, MALLOC_* or LD_PRELOAD)"
    return "glibc malloc with " + ", ".join(f"{k}={v}" for k, v in sorted(set_vars.items()))


def environment_info() -> dict[str, Any]:
    """What this process runs with: Python, glibc, thread/BLAS/allocator variables, loaded BLAS libraries."""
    env = {k: v for k, v in os.environ.items() if k in THREAD_VARS + BLAS_VARS + ALLOCATOR_VARS}
    env.update({k: v for k, v in os.environ.items() if k.startswith("MALLOC_")})
    info: dict[str, Any] = {
        "pid": os.getpid(),
        "python": platform.python_version(),
        "glibc": " ".join(platform.libc_ver()),
        "env": env,
        "allocator": allocator_regime(),
        "torch_imported": "torch" in sys.modules,
    }
    if "numpy" in sys.modules:
        info["numpy"] = sys.modules["numpy"].__version__
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    try:
        from threadpoolctl import threadpool_info

        keep = (
            "user_api",
            "internal_api",
            "num_threads",
            "version",
            "architecture",
            "threading_layer",
            "prefix",
        )
        info["threadpools"] = [{k: pool.get(k) for k in keep} for pool in threadpool_info()]
    except ImportError:
        info["threadpools"] = "threadpoolctl not installed"
    return info


def machine_info() -> dict[str, Any]:
    """CPU count and model, load average, date: what a reader of the figures needs to know."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": model,
        "loadavg": list(os.getloadavg()),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "platform": platform.platform(),
    }


# ---- output ----------------------------------------------------------------------------------------------
def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` through the library's one atomic write: never half-written."""
    # imported here, not at the top: importing microgradcnn tunes malloc, which no worker may get by accident
    from microgradcnn._files import write_atomic

    text = json.dumps(obj, indent=1) + "\n"
    write_atomic(path, lambda f: f.write(text.encode()))


# ---- command line ----------------------------------------------------------------------------------------
BATCH_SIZES = (1, 16, 64, 256)
QUICK = {"repeats": 2, "min_time": 0.02, "warmup": 0.01}  # --quick: a smoke test, not a measurement


def batch_list(text: str) -> list[int]:
    """Parse "1,16,64" into [1, 16, 64] (argparse type)."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"batch sizes must be integers separated by commas, got {text!r}"
        ) from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1, got {text!r}")
    return sizes


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Options every benchmark script takes: threads, repeats, repeat time, warm-up, batch sizes, --quick."""
    parser.add_argument(
        "--threads", type=int, default=2, help="BLAS/OpenMP threads in every process (default 2)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per case (default 5)")
    parser.add_argument(
        "--min-time", type=float, default=1.0, help="seconds per repeat, at least (default 1)"
    )
    parser.add_argument("--warmup", type=float, default=0.3, help="warm-up seconds per case (default 0.3)")
    parser.add_argument(
        "--batch-sizes", type=batch_list, default=list(BATCH_SIZES), help="default 1,16,64,256"
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny repeats: checks the script runs, measures nothing"
    )


def finish_common_args(args: argparse.Namespace) -> argparse.Namespace:
    """Apply ``--quick`` and check the numbers; returns ``args``."""
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    if args.threads < 1 or args.repeats < 1 or args.min_time <= 0 or args.warmup < 0:
        raise SystemExit("need --threads >= 1, --repeats >= 1, --min-time > 0, --warmup >= 0")
    return args


def worker_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse a worker script's command line: the common options plus ``--serve``."""
    parser = argparse.ArgumentParser(description=description)
    add_common_args(parser)
    parser.add_argument(
        "--serve", action="store_true", help="answer bench_train.py's JSON-line requests on stdin"
    )
    parser.add_argument("--no-large", action="store_true", help="skip the larger CNN")
    parser.add_argument(
        "--no-tutorial", action="store_true", help="skip the tutorial loops (numpy_reference only)"
    )
    return finish_common_args(parser.parse_args(argv))


# ---- worker side -----------------------------------------------------------------------------------------
def _case_key(case: Case) -> tuple[str, str, str, int]:
    try:
        return (str(case["impl"]), str(case["model"]), str(case["mode"]), int(case["batch"]))
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"bad case {case!r}: want impl, model, mode, batch") from None


class StepCache:
    """Steps built by a factory, one per case, kept until dropped (building a model is not part of a step)."""

    def __init__(self, factory: StepFactory) -> None:
        self.factory = factory
        self.steps: dict[tuple[str, str, str, int], Step] = {}

    def get(self, case: Case) -> Step:
        """The step for ``case``, built on first use."""
        key = _case_key(case)
        if key not in self.steps:
            self.steps[key] = self.factory(case)
        return self.steps[key]

    def drop(self, case: Case) -> None:
        """Forget ``case``'s step (and its model and data)."""
        self.steps.pop(_case_key(case), None)
        gc.collect()


def handle(
    cache: StepCache, request: dict[str, Any], extra: dict[str, Callable[[dict[str, Any]], Any]]
) -> Any:
    """Answer one worker request (see ``serve``); raises on bad requests or failing steps."""
    op = request.get("op")
    if op in extra:
        return extra[op](request)
    if op == "info":
        return environment_info()
    if op == "calibrate":
        step = cache.get(request["case"])
        return calibrate(step, float(request["min_time"]), float(request.get("warmup", 0.2)))
    if op == "time":
        step = cache.get(request["case"])
        time_steps(step, int(request.get("warmup_steps", 1)))
        return {"seconds": time_steps(step, int(request["steps"]))}
    if op == "paired":
        a, b = cache.get(request["case_a"]), cache.get(request["case_b"])
        time_steps(a, 1)
        time_steps(b, 1)
        return time_paired(a, b, int(request["steps_a"]), int(request["steps_b"]), int(request["rounds"]))
    if op == "peak":
        return step_peak_memory(cache.get(request["case"]), bool(request.get("tracemalloc", False)))
    if op == "growth":
        step = cache.get(request["case"])
        return memory_growth(step, int(request["steps"]), bool(request.get("tracemalloc", False)))
    if op == "drop":
        cache.drop(request["case"])
        return {}
    raise ValueError(f"unknown request op {op!r}")


@contextlib.contextmanager
def _protocol_stdout() -> Iterator[IO[str]]:
    """The real stdout for protocol lines; fd 1 and ``sys.stdout`` point at stderr meanwhile."""
    sys.stdout.flush()
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    saved, sys.stdout = sys.stdout, sys.stderr
    try:
        yield proto
    finally:
        proto.flush()
        os.dup2(proto.fileno(), 1)
        sys.stdout = saved
        proto.close()


def serve(
    factory: StepFactory,
    extra: dict[str, Callable[[dict[str, Any]], Any]] | None = None,
    check: Callable[[], None] | None = None,
) -> None:
    """Answer JSON-line requests on stdin until ``{"op": "quit"}`` or end of input.

    Each answer is ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "<traceback>"}``; a failing
    case does not end the worker. ``check`` runs after every request (e.g. to assert that torch was never
    imported) and a failure there ends the worker.
    """
    cache = StepCache(factory)
    extra = extra or {}
    with _protocol_stdout() as proto:
        for line in sys.stdin:
            if not line.strip():
                continue
            request = json.loads(line)
            if request.get("op") == "quit":
                proto.write(json.dumps({"ok": True, "result": {}}) + "\n")
                break
            try:
                answer = {"ok": True, "result": handle(cache, request, extra)}
            except Exception:
                answer = {"ok": False, "error": traceback.format_exc(limit=6)}
            if check is not None:
                check()
            proto.write(json.dumps(answer) + "\n")


def run_standalone(
    factory: StepFactory, cases: list[Case], repeats: int, min_time: float, warmup: float
) -> dict[str, Any]:
    """Time every case in this process (``repeats`` repeats of ``min_time`` seconds): images/s per case."""
    results = []
    for case in cases:
        entry: dict[str, Any] = {"case": case}
        try:
            step = factory(case)
            n = calibrate(step, min_time, warmup)["steps"]
            rates = [n * int(case["batch"]) / time_steps(step, n) for _ in range(repeats)]
            entry["images_per_s"] = summarize(rates)
        except Exception as err:
            entry["error"] = f"{type(err).__name__}: {err}"
        results.append(entry)
        gc.collect()
    return {"info": environment_info(), "results": results}


def standalone_cases(
    impl: str, models: Iterable[str], modes: Iterable[str], batches: Iterable[int]
) -> list[Case]:
    """Every (model, mode, batch) combination for one implementation."""
    return [
        {"impl": impl, "model": m, "mode": mode, "batch": b}
        for m in models
        for mode in modes
        for b in batches
    ]
