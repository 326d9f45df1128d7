"""What every benchmark script shares: the models, timing, memory, environment, options and worker processes.

Importing this module imports neither NumPy nor PyTorch: the parent process of a benchmark never loads them,
and a worker must get its thread-count variables (``OMP_NUM_THREADS`` ...) before either loads.

A *worker* is a process that builds steps (one training step, one inference, one HVP ...) and times them on
request: ``serve`` runs its loop, one JSON request per line on stdin, one JSON answer per line on stdout
(anything the code under test prints goes to stderr, so it cannot corrupt the protocol). ``Worker`` is the
parent's side of one such process and ``time_interleaved`` times one case in several workers, their repeats
interleaved, so that load from other processes on the machine falls on all of them alike.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# OpenBLAS tuning and allocator variables the environment may set: reported, never changed.
REPORTED_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "GLIBC_TUNABLES", "LD_PRELOAD")
LEARNING_RATE = 0.01  # plain SGD, no momentum, in every framework

Step = Callable[[], object]
Case = dict[str, Any]  # {"impl": str, "model": str, "mode": "train" | "infer", "batch": int, ...}


# ---- models ----------------------------------------------------------------------------------------------
# The benchmarked models (``bench_train.py --model``): name -> input shape (C, H, W). Every worker builds the
# model with ``build_model``; the PyTorch worker converts it layer for layer with its weights.
BENCH_MODELS: dict[str, tuple[int, int, int]] = {
    "seed": (1, 28, 28),
    "cnn2": (1, 28, 28),
    "cifar": (3, 32, 32),
    "lenet5": (1, 28, 28),
    "bn": (1, 28, 28),
}


def build_model(name: str, rng: Any) -> Any:
    """The microgradcnn model ``name`` of ``BENCH_MODELS``, its weights drawn from the NumPy Generator ``rng``
    (or the library's default generator for None).

    ``cifar`` is the benchmark's own: (N, 3, 32, 32) -> Conv2d(3, 16, 3, padding=1), ReLU, MaxPool2d(2) ->
    Conv2d(16, 32, 3, padding=1), ReLU, MaxPool2d(2) -> Flatten -> Linear(2048, 10). The others are
    ``microgradcnn.models.MODELS[name]``, made as a user makes them.
    """
    from microgradcnn import models, nn  # here, not at the top: see the module docstring

    if name not in BENCH_MODELS:
        raise ValueError(f"benchmarks: unknown model {name!r}; choose from {', '.join(BENCH_MODELS)}")
    if name != "cifar":
        return models.MODELS[name](rng=rng)
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


def make_batch(batch: int, shape: tuple[int, ...], seed: int = 0) -> tuple[Any, Any]:
    """A fixed float32 batch (N, *shape) uniform in [-0.5, 0.5] and int64 labels (N,) in [0, 10)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.uniform(-0.5, 0.5, size=(batch, *shape)).astype(np.float32)
    return x, rng.integers(0, 10, size=batch)


# ---- timing ----------------------------------------------------------------------------------------------
def time_steps(step: Step, steps: int) -> float:
    """Seconds (wall clock) taken by ``steps`` calls of ``step``."""
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - start


def calibrate(step: Step, min_time: float, warmup: float) -> int:
    """Warm ``step`` up for ``warmup`` seconds (at least 2 calls); return how many calls last ``min_time``."""
    start = time.perf_counter()
    calls = 0
    while calls < 2 or time.perf_counter() - start < warmup:
        step()
        calls += 1
    probe, elapsed = (
        0,
        0.0,
    )  # over about a tenth of a repeat, at least 3 calls, so one slow call cannot skew it
    while probe < 3 or elapsed < min(0.1 * min_time, 0.5):
        elapsed += time_steps(step, 1)
        probe += 1
    return max(1, int(min_time / (elapsed / probe) * 1.05) + 1)


def time_paired(a: Step, b: Step, steps_a: int, steps_b: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per call of ``a`` and of ``b``, timed in ``rounds`` adjacent blocks: a b, b a, a b, ...

    Two steps timed in short alternating blocks see the same phase of a shared machine, so the per-round
    difference cancels the drift that separate one-second repeats see. Returns ``{"a": [...], "b": [...]}``.
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


def time_in_turn(fns: dict[str, Step], repeats: int, calls: int = 1) -> dict[str, float]:
    """Median seconds per call of each of ``fns`` in one process: each warmed up, then ``repeats`` repeats of
    ``calls`` calls, the fns taken in turn (a b c, c b a, ...) so that drift on a shared machine hits all."""
    for fn in fns.values():
        time_steps(fn, max(1, calls // 10))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(repeats):
        for name in list(fns) if r % 2 == 0 else reversed(list(fns)):
            times[name].append(time_steps(fns[name], calls) / calls)
    return {name: statistics.median(t) for name, t in times.items()}


def summarize(values: Iterable[float]) -> dict[str, Any]:
    """Median, first and third quartile, min and max of ``values``, with the values themselves."""
    vals = list(values)
    if not vals:
        raise ValueError("summarize: no values")
    q1, _, q3 = statistics.quantiles(vals, n=4, method="inclusive") if len(vals) > 1 else (vals[0],) * 3
    return {
        "median": statistics.median(vals),
        "q1": q1,
        "q3": q3,
        "min": min(vals),
        "max": max(vals),
        "values": vals,
    }


# ---- memory ----------------------------------------------------------------------------------------------
def _status_kib(field: str) -> int | None:
    """A field of /proc/self/status in KiB (``VmRSS``, ``VmHWM``), or None off Linux."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def _settled_rss_kib() -> int | None:
    """RSS after a garbage collection and glibc's ``malloc_trim(0)``, which hands free heap memory back to the
    kernel (it changes no allocator setting), so the memory a following step touches shows up as RSS again."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return _status_kib("VmRSS")


def step_peak_mib(step: Step) -> float | None:
    """How far one call of ``step`` (warmed up here first) raises this process's peak RSS, in MiB.

    Settle the RSS (``_settled_rss_kib``), reset the high-water mark ``VmHWM`` to the current RSS by writing
    ``5`` to ``/proc/self/clear_refs``, run the step, read ``VmHWM``: the rise is the step's working memory,
    whatever allocator the framework uses. None where /proc does not allow it.
    """
    time_steps(step, 3)
    before = _settled_rss_kib()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    step()
    peak = _status_kib("VmHWM")
    return None if before is None or peak is None else round((peak - before) / 1024, 2)


def memory_growth(step: Step, steps: int) -> dict[str, Any]:
    """Memory ``steps`` calls of ``step`` keep: RSS after minus before (MiB), and the growth of the memory
    ``tracemalloc`` traces (NumPy reports its buffers to it) over a second pass of ``steps`` calls."""
    time_steps(step, 3)  # lazily made, once-only allocations are not growth
    before = _settled_rss_kib()
    time_steps(step, steps)
    after = _settled_rss_kib()
    out: dict[str, Any] = {"steps": steps}
    if before is not None and after is not None:
        out["rss_growth_mib"] = round((after - before) / 1024, 3)
    tracemalloc.start()
    try:
        step()  # what it replaces (grads, the last graph) was allocated before tracing began
        gc.collect()
        start = tracemalloc.get_traced_memory()[0]
        time_steps(step, steps)
        gc.collect()
        out["traced_growth_mib"] = round((tracemalloc.get_traced_memory()[0] - start) / 2**20, 4)
    finally:
        tracemalloc.stop()
    return out


# ---- environment -----------------------------------------------------------------------------------------
def thread_env(threads: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default ``os.environ``) with each BLAS/OpenMP thread count set to ``threads``."""
    if threads < 1:
        raise ValueError(f"thread_env: threads must be >= 1, got {threads}")
    env = dict(os.environ if base is None else base)
    env.update({var: str(threads) for var in THREAD_VARS})
    return env


def allocator_regime(env: dict[str, str] | None = None) -> str:
    """Which malloc configuration a process started with ``env`` runs under, in words."""
    env = dict(os.environ if env is None else env)
    found = {k: v for k, v in env.items() if k in ("GLIBC_TUNABLES", "LD_PRELOAD") or k.startswith("MALLOC_")}
    if not found:
        return "glibc malloc, default settings (no GLIBC_TUNABLES, MALLOC_* or LD_PRELOAD)"
    return "glibc malloc with " + ", ".join(f"{k}={v}" for k, v in sorted(found.items()))


def environment_info() -> dict[str, Any]:
    """What this process runs with: Python, glibc, thread/BLAS/allocator variables, the BLAS NumPy loaded."""
    env = {k: v for k, v in os.environ.items() if k in THREAD_VARS + REPORTED_VARS or k.startswith("MALLOC_")}
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "glibc": " ".join(platform.libc_ver()),
        "env": env,
        "allocator": allocator_regime(),
        "torch_imported": "torch" in sys.modules,
    }
    for name in ("numpy", "torch", "onnxruntime"):
        if name in sys.modules:
            info[name] = sys.modules[name].__version__
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_info

        info["blas"] = [
            f"{p.get('internal_api')} {p.get('version')} {p.get('architecture')} {p.get('num_threads')}T"
            for p in threadpool_info()
            if p.get("user_api") == "blas"
        ]
    return info


def machine_info() -> dict[str, Any]:
    """CPU count and model, load average and date: what a reader of the figures needs to know."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": model,
        "loadavg": list(os.getloadavg()),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "platform": platform.platform(),
    }


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` through the library's one atomic write: never half-written."""
    from microgradcnn._files import write_atomic  # here: importing microgradcnn loads NumPy

    text = json.dumps(obj, indent=1) + "\n"
    write_atomic(path, lambda f: f.write(text.encode()))


# ---- command line ----------------------------------------------------------------------------------------
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


def model_list(text: str) -> list[str]:
    """Parse ``--model``: "all", or model names separated by commas, into a list of names (argparse type)."""
    if text.strip() == "all":
        return list(BENCH_MODELS)
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names or any(name not in BENCH_MODELS for name in names):
        raise argparse.ArgumentTypeError(
            f"--model wants 'all' or names from {', '.join(BENCH_MODELS)} separated by commas, got {text!r}"
        )
    return list(dict.fromkeys(names))  # each once, in the order given


def common_parser(description: str | None) -> argparse.ArgumentParser:
    """A parser with the options every timing script takes: threads, repeats, repeat time, warm-up, quick."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="BLAS/OpenMP threads in every process (default 2)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per case (default 5)")
    parser.add_argument(
        "--min-time", type=float, default=1.0, help="seconds per repeat, at least (default 1)"
    )
    parser.add_argument("--warmup", type=float, default=0.3, help="warm-up seconds per case (default 0.3)")
    parser.add_argument(
        "--quick", action="store_true", help="tiny repeats: checks the script runs, measures nothing"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # this script as a worker process (see ``serve``)
    return parser


def parse_common(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``, apply ``--quick`` and check the numbers."""
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    if args.threads < 1 or args.repeats < 1 or args.min_time <= 0 or args.warmup < 0:
        parser.error("need --threads >= 1, --repeats >= 1, --min-time > 0, --warmup >= 0")
    return args


# ---- worker side -----------------------------------------------------------------------------------------
def _case_key(case: Case) -> tuple[str, str, str, int]:
    try:
        return (str(case["impl"]), str(case["model"]), str(case["mode"]), int(case["batch"]))
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"bad case {case!r}: want impl, model, mode, batch") from None


def handle(
    steps: dict[Any, Step],
    factory: Callable[[Case], Step],
    request: dict[str, Any],
    extra: dict[str, Callable[..., Any]],
) -> Any:
    """Answer one worker request (see ``serve``); ``steps`` caches the built step of each case."""

    def step_of(case: Case) -> Step:
        key = _case_key(case)
        if key not in steps:
            steps[key] = factory(case)
        return steps[key]

    op = request.get("op")
    if op in extra:
        return extra[op](request, step_of)
    if op == "info":
        return environment_info()
    if op == "calibrate":
        return {
            "steps": calibrate(step_of(request["case"]), float(request["min_time"]), float(request["warmup"]))
        }
    if op == "time":
        step = step_of(request["case"])
        step()
        return {"seconds": time_steps(step, int(request["steps"]))}
    if op == "peak":
        return {"peak_mib": step_peak_mib(step_of(request["case"]))}
    if op == "growth":
        return memory_growth(step_of(request["case"]), int(request["steps"]))
    if op == "drop":
        steps.pop(_case_key(request["case"]), None)
        gc.collect()
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
    factory: Callable[[Case], Step],
    extra: dict[str, Callable[..., Any]] | None = None,
    check: Callable[[], None] | None = None,
) -> None:
    """Answer JSON-line requests on stdin until ``{"op": "quit"}`` or end of input.

    Requests: ``info``; ``calibrate``, ``time``, ``peak``, ``growth``, ``drop`` of a ``case`` whose step
    ``factory(case)`` builds (once, then cached); and ``extra[op](request, step_of)``. Each answer is
    ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "<traceback>"}``: a failing case does not end
    the worker. ``check`` runs after every request (e.g. that torch was never imported); if it fails, the
    worker ends.
    """
    steps: dict[Any, Step] = {}
    with _protocol_stdout() as proto:
        for line in sys.stdin:
            request = json.loads(line) if line.strip() else {}
            if request.get("op") == "quit":
                break
            if not request:
                continue
            try:
                answer = {"ok": True, "result": handle(steps, factory, request, extra or {})}
            except Exception:
                answer = {"ok": False, "error": traceback.format_exc(limit=6)}
            if check is not None:
                check()
            proto.write(json.dumps(answer) + "\n")


# ---- parent side -----------------------------------------------------------------------------------------
class WorkerError(RuntimeError):
    """A worker could not answer: it failed the request (the traceback is the message) or died."""


class Worker:
    """A worker process (``python SCRIPT --worker NAME ...``) spoken to in JSON lines (see ``serve``)."""

    def __init__(self, name: str, script: str, threads: int, *args: str) -> None:
        self.name = name
        argv = [sys.executable, str(HERE / script), "--worker", name, "--threads", str(threads), *args]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=thread_env(threads),
            text=True,
            cwd=HERE,
            bufsize=1,
        )

    def call(self, **request: Any) -> Any:
        """Send one request and return its result; WorkerError if it failed or the worker died."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise WorkerError(f"the {self.name} worker has exited (code {self.proc.poll()})") from None
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerError(
                f"the {self.name} worker exited (code {self.proc.wait()}) during {request.get('op')}"
            )
        answer = json.loads(line)
        if not answer["ok"]:
            raise WorkerError(answer["error"])
        return answer["result"]

    def close(self) -> None:
        """Ask the worker to quit; kill it if it has not within 10 s."""
        with contextlib.suppress(WorkerError, OSError):
            self.call(op="quit")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def short_error(err: Exception) -> str:
    """The last line of a worker's traceback: what went wrong, in one line."""
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def time_interleaved(
    calls: dict[str, tuple[Worker, Case]], args: argparse.Namespace, log: IO[str] = sys.stderr
) -> dict[str, dict[str, Any]]:
    """Time one case in several workers: ``calls`` maps a label to (worker, case).

    Each is warmed up for ``args.warmup`` seconds and calibrated so a repeat lasts ``args.min_time``; then the
    ``args.repeats`` repeats run interleaved (A B C, C B A, ...). Returns label -> ``{"images_per_s":
    summarize(...)}`` (images/s of each repeat, in the order they ran) or ``{"error": ...}``.
    """
    out: dict[str, dict[str, Any]] = {}
    steps: dict[str, int] = {}
    for label, (worker, case) in calls.items():
        try:
            steps[label] = worker.call(op="calibrate", case=case, min_time=args.min_time, warmup=args.warmup)[
                "steps"
            ]
        except WorkerError as err:
            out[label] = {"error": short_error(err)}
    rates: dict[str, list[float]] = {label: [] for label in steps}
    for r in range(args.repeats):
        for label in list(steps) if r % 2 == 0 else reversed(list(steps)):
            if label in out:
                continue
            worker, case = calls[label]
            try:
                seconds = worker.call(op="time", case=case, steps=steps[label])["seconds"]
            except WorkerError as err:
                out[label] = {"error": short_error(err)}
                continue
            rates[label].append(steps[label] * int(case.get("batch", 1)) / seconds)
    for label, values in rates.items():
        if label not in out:
            out[label] = {"images_per_s": summarize(values)}
        worker, case = calls[label]
        got = out[label].get("error") or f"{out[label]['images_per_s']['median']:,.0f}/s"
        print(
            f"  {case.get('model', '')} {case.get('mode', '')} batch {case.get('batch', '')} {label}: {got}",
            file=log,
            flush=True,
        )
        with contextlib.suppress(WorkerError):
            worker.call(op="drop", case=case)
    return out


def paired_ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    """The median of the same-run ratios a/b of two ``time_interleaved`` results (repeat i of a over repeat i
    of b), or None if either is missing or failed."""
    if not a or not b or "images_per_s" not in a or "images_per_s" not in b:
        return None
    return statistics.median(
        x / y for x, y in zip(a["images_per_s"]["values"], b["images_per_s"]["values"], strict=True)
    )
