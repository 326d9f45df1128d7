"""Training and inference images/s of microgradcnn beside PyTorch CPU and ONNX Runtime, with the targets.

    python benchmarks/bench_train.py                    # the seed CNN at batch 1, 16, 64, 256
    python benchmarks/bench_train.py --model all        # seed, cnn2, cifar, lenet5, bn
    python benchmarks/bench_train.py --model all --markdown  # also as Markdown, for the docs
    python benchmarks/bench_train.py --quick            # a smoke test: tiny repeats, the figures mean nothing

Prints one table: model x mode (train/infer) x batch, with the images/s of microgradcnn, PyTorch and
(inference) ONNX Runtime, the ratio to PyTorch with its target and PASS/FAIL, the ratio to ONNX Runtime,
and the peak memory of the batch-256 training step in both frameworks. Below it: the engine's cost per
graph op (the library's step against the hand-written NumPy step of ``numpy_reference.py``, seed and
cifar), the tutorial loops (seed, batch 1), the library's memory growth, and every target's PASS/FAIL.
Everything, with the environment of every process, goes to ``--json`` (written atomically).

Processes (all started with OMP/OPENBLAS/MKL_NUM_THREADS = ``--threads`` and otherwise the caller's
environment; nothing sets GLIBC_TUNABLES or MALLOC_*):

- ``mg``, this file as a worker: the library, the hand-written NumPy reference and the tutorial loops. It
  never imports torch (checked after every request): importing torch changes glibc malloc's thresholds for the
  whole process;
- ``torch`` (``torch_reference.py``): PyTorch CPU, the library's models converted with their weights;
- ``ort`` (``torch_reference.py``): ONNX Runtime on those PyTorch twins exported to ONNX; skipped with a note
  when onnxruntime or torch is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _timing import (
    BENCH_MODELS,
    LEARNING_RATE,
    Case,
    Worker,
    WorkerError,
    batch_list,
    build_model,
    calibrate,
    common_parser,
    machine_info,
    make_batch,
    model_list,
    paired_ratio,
    parse_common,
    serve,
    short_error,
    summarize,
    time_interleaved,
    time_paired,
    write_json_atomic,
)

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results" / "bench_train.json"

# The targets: (model, mode) -> {batch: the least ratio of images/s to PyTorch's}; batch None: every other
# batch. bn's are aims. Peak memory of the batch-256 training step: at most PyTorch's, for every model.
TARGETS: dict[tuple[str, str], dict[int | None, float]] = {
    ("seed", "train"): {None: 2.0},
    ("seed", "infer"): {1: 1.0},
    ("cnn2", "train"): {1: 1.0, None: 1.25},
    ("cnn2", "infer"): {None: 1.5},
    ("cifar", "train"): {1: 1.0, None: 1.25},
    ("cifar", "infer"): {None: 1.5},
    ("bn", "train"): {None: 1.0},
    ("bn", "infer"): {None: 1.0},
}
AIMS = {"bn"}
PEAK_BATCH = 256
VS_TUTORIAL = (
    100.0  # seed CNN, training step at batch 1: at least this many times the tutorial loops' images/s
)
GROWTH_TRACED_MIB = (
    0.1  # traced memory the library keeps over --growth-steps steps: a leaked graph is megabytes
)
GROWTH_BATCH = 16
PAIRED_BLOCK_S = 0.02  # seconds per block of the library's and the hand-written step, alternating
MIN_TRAIN_BATCH = {"bn": 2}  # BatchNorm1d cannot normalise one sample in training (PyTorch's rule too)
HAND_WRITTEN = ("seed", "cifar")  # the models numpy_reference.py writes out by hand (its MODELS)


def want(model: str, mode: str, batch: int) -> float | None:
    """The target ratio to PyTorch of ``model``'s ``mode`` at ``batch``, or None."""
    table = TARGETS.get((model, mode), {})
    return table.get(batch, table.get(None))


def trains_at(model: str, batch: int) -> bool:
    """Whether ``model`` has a training step at ``batch``."""
    return batch >= MIN_TRAIN_BATCH.get(model, 1)


# =========================================================================================================
# the microgradcnn worker (never imports torch)
# =========================================================================================================
def _torch_free() -> None:
    if "torch" in sys.modules:
        raise AssertionError("bench_train: torch was imported into the microgradcnn worker process")


def mg_step(case: Case) -> Any:
    """The step of ``case``: impl "microgradcnn" (the library, as a user runs it), or "numpy" / "tutorial"
    (``numpy_reference.build_step``). Training in train mode; inference in eval mode under ``no_grad``."""
    if case["impl"] != "microgradcnn":
        import numpy_reference

        return numpy_reference.build_step(case)
    import numpy as np

    import microgradcnn as mg
    from microgradcnn import functional as F
    from microgradcnn.optim import SGD

    net = build_model(case["model"], np.random.default_rng(0))
    x_np, y = make_batch(int(case["batch"]), BENCH_MODELS[case["model"]])
    x = mg.Tensor(x_np)
    if case["mode"] == "infer":
        net.eval()

        def infer() -> object:
            with mg.no_grad():
                return net(x)

        return infer
    net.train()
    opt = SGD(net.parameters(), lr=LEARNING_RATE)

    def train() -> None:
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()

    return train


def mg_overhead(request: dict[str, Any], step_of: Any) -> dict[str, Any]:
    """The library's training step against the hand-written NumPy one, in alternating ~20 ms blocks.

    Returns both steps' median µs, the median and quartiles of the per-round differences, and the graph ops
    of the library's step (its layers plus the loss).
    """
    case = {"model": request["model"], "mode": "train", "batch": int(request["batch"])}
    lib, ref = step_of({**case, "impl": "microgradcnn"}), step_of({**case, "impl": "numpy"})
    blocks = [calibrate(step, PAIRED_BLOCK_S, 0.1) for step in (lib, ref)]
    times = time_paired(lib, ref, blocks[0], blocks[1], int(request["rounds"]))
    diff = summarize(1e6 * (a - b) for a, b in zip(times["a"], times["b"], strict=True))
    ops = len(list(build_model(request["model"], None).children())) + 1
    return {
        **case,
        "lib_us": 1e6 * summarize(times["a"])["median"],
        "numpy_us": 1e6 * summarize(times["b"])["median"],
        "diff_us": {k: diff[k] for k in ("median", "q1", "q3")},
        "rounds": len(times["a"]),
        "ops": ops,
        "us_per_op": diff["median"] / ops,
    }


# =========================================================================================================
# the parent (imports neither numpy nor torch)
# =========================================================================================================
def start_workers(args: argparse.Namespace, onnx_dir: str, notes: list[str]) -> dict[str, Worker]:
    """The workers this run needs; the ONNX files of every ``--model`` exported into ``onnx_dir``."""
    workers = {"mg": Worker("mg", "bench_train.py", args.threads)}
    have = {name: importlib.util.find_spec(name) is not None for name in ("torch", "onnxruntime")}
    if args.no_torch:
        notes.append("PyTorch and ONNX Runtime skipped (--no-torch).")
        return workers
    if not have["torch"]:
        notes.append("PyTorch is not installed: its columns, ONNX Runtime's and the targets are skipped.")
        return workers
    workers["torch"] = Worker("torch", "torch_reference.py", args.threads)
    if not have["onnxruntime"]:
        notes.append("onnxruntime is not installed: its column is skipped (pip install onnxruntime).")
        return workers
    for model in args.models:
        try:
            workers["torch"].call(op="export", model=model, path=os.path.join(onnx_dir, f"{model}.onnx"))
        except WorkerError as err:
            notes.append(f"ONNX export of {model} failed: {short_error(err)}")
    workers["ort"] = Worker("ort", "torch_reference.py", args.threads)
    return workers


def measure(args: argparse.Namespace, workers: dict[str, Worker], onnx_dir: str) -> dict[str, Any]:
    """Every case, the overhead, the memory: the report's raw figures."""
    rows = []
    for model in args.models:
        for batch in args.batch_sizes:
            for mode in ("train", "infer"):
                if mode == "train" and not trains_at(model, batch):
                    continue
                case = {"model": model, "mode": mode, "batch": batch}
                calls = {
                    impl: (workers[w], {**case, "impl": impl})
                    for impl, w in (("microgradcnn", "mg"), ("torch", "torch"))
                    if w in workers
                }
                onnx = os.path.join(onnx_dir, f"{model}.onnx")
                if mode == "infer" and "ort" in workers and os.path.exists(onnx):
                    calls["ort"] = (workers["ort"], {**case, "impl": "ort", "onnx": onnx})
                if (model, mode, batch) == ("seed", "train", 1):
                    calls["tutorial"] = (workers["mg"], {**case, "impl": "tutorial"})
                rows.append({**case, "results": time_interleaved(calls, args)})
    overhead = []
    for model in (m for m in args.models if m in HAND_WRITTEN):
        for batch in (b for b in args.batch_sizes if trains_at(model, b)):
            try:
                overhead.append(
                    workers["mg"].call(op="overhead", model=model, batch=batch, rounds=args.paired_rounds)
                )
            except WorkerError as err:
                overhead.append({"model": model, "batch": batch, "error": short_error(err)})
    peak_batch = PEAK_BATCH if PEAK_BATCH in args.batch_sizes else max(args.batch_sizes)
    memory: dict[str, Any] = {"peak_batch": peak_batch, "peak": {}, "growth": {}}
    for model in (m for m in args.models if trains_at(m, peak_batch)):
        for impl, w in (("microgradcnn", "mg"), ("torch", "torch")):
            if w in workers:
                case = {"impl": impl, "model": model, "mode": "train", "batch": peak_batch}
                mib = memory["peak"].setdefault(model, {})
                try:
                    mib[impl] = workers[w].call(op="peak", case=case)["peak_mib"]
                except WorkerError as err:
                    mib[impl] = None
                    print(f"  peak memory {model} {impl}: {short_error(err)}", file=sys.stderr)
                with contextlib.suppress(WorkerError):
                    workers[w].call(op="drop", case=case)
    case = {"impl": "microgradcnn", "model": args.models[0], "mode": "train", "batch": GROWTH_BATCH}
    try:
        growth = workers["mg"].call(op="growth", case=case, steps=args.growth_steps)
        memory["growth"] = {"model": args.models[0], "batch": GROWTH_BATCH, **growth}
    except WorkerError as err:
        memory["growth"] = {"error": short_error(err)}
    return {"rows": rows, "overhead": overhead, "memory": memory}


def derive(report: dict[str, Any]) -> None:
    """Add the ratios to every row, and the targets with PASS/FAIL (None: not measured), to ``report``."""
    targets: list[dict[str, Any]] = []

    def target(name: str, value: float | None, threshold: float, at_least: bool = True) -> bool | None:
        ok = None if value is None else (value >= threshold if at_least else value <= threshold)
        compare = ">=" if at_least else "<="
        targets.append({"target": name, "value": value, "threshold": threshold, "compare": compare})
        targets[-1]["pass"] = ok
        return ok

    peak = report["memory"]["peak"]
    for row in report["rows"]:
        res, model, mode, batch = row["results"], row["model"], row["mode"], row["batch"]
        row["vs_torch"] = paired_ratio(res.get("microgradcnn"), res.get("torch"))
        row["vs_ort"] = paired_ratio(res.get("microgradcnn"), res.get("ort"))
        row["want"] = want(model, mode, batch)
        if row["want"] is not None and "torch" in res:
            aim = " (aim)" if model in AIMS else ""
            name = f"{model} {mode} batch {batch} vs PyTorch{aim}"
            row["pass"] = target(name, row["vs_torch"], row["want"])
            targets[-1]["in_table"] = True
        if mode == "train" and batch == report["memory"]["peak_batch"] and model in peak:
            row["peak_mib"] = [peak[model].get(impl) for impl in ("microgradcnn", "torch")]
        if "tutorial" in res:
            row["vs_tutorial"] = paired_ratio(res["microgradcnn"], res["tutorial"])
            target("seed train batch 1 vs the tutorial loops", row["vs_tutorial"], VS_TUTORIAL)
    for model, mib in peak.items():
        lib, torch = mib.get("microgradcnn"), mib.get("torch")
        if "torch" in mib:
            name = f"{model} train batch {report['memory']['peak_batch']} peak memory vs PyTorch's"
            target(name, lib / torch if lib is not None and torch else None, 1.0, at_least=False)
    growth = report["memory"]["growth"]
    name = f"memory growth over {growth.get('steps')} steps (traced MiB)"
    target(name, growth.get("traced_growth_mib"), GROWTH_TRACED_MIB, at_least=False)
    report["targets"] = targets


# ---- the report -----------------------------------------------------------------------------------------
def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _rate(result: dict[str, Any] | None) -> str:
    if not result:
        return "-"
    return "error" if "error" in result else f"{result['images_per_s']['median']:,.0f}"


VERDICT = {True: "PASS", False: "FAIL", None: "-"}
COLUMNS = ["model", "mode", "batch", "microgradcnn /s", "PyTorch /s", "ONNX Runtime /s", "÷ PyTorch"]
COLUMNS += ["target", "result", "÷ ORT", "peak MiB ours / PyTorch"]


def table_cells(report: dict[str, Any]) -> list[list[str]]:
    """The rows of the one table, as strings (``COLUMNS``)."""
    cells = []
    for row in report["rows"]:
        res = row["results"]
        target = (
            "" if row["want"] is None else f">= {row['want']:g}" + (" aim" if row["model"] in AIMS else "")
        )
        peak = " / ".join(_fmt(v, ".1f") for v in row["peak_mib"]) if "peak_mib" in row else ""
        cells.append(
            [
                row["model"],
                row["mode"],
                str(row["batch"]),
                _rate(res.get("microgradcnn")),
                _rate(res.get("torch")),
                _rate(res.get("ort")),
                _fmt(row["vs_torch"]),
                target,
                VERDICT[row.get("pass")] if target else "",
                _fmt(row["vs_ort"]),
                peak,
            ]
        )
    return cells


def notes_lines(report: dict[str, Any], every_target: bool = True) -> list[str]:
    """The lines below the table: overhead, tutorial loops, memory, the targets (``every_target``: also those
    the table shows), notes."""
    lines = [
        "library training step against the hand-written NumPy one (median of paired ~20 ms blocks in one "
        "process); their difference per graph op is the engine's cost where the kernels are small (batch 1), "
        "the two sets of kernels' difference above:"
    ]
    for o in report["overhead"]:
        if "error" in o:
            lines.append(f"  {o['model']} batch {o['batch']}: {o['error']}")
            continue
        q1, q3 = (o["diff_us"][k] / o["ops"] for k in ("q1", "q3"))
        lines.append(
            f"  {o['model']} batch {o['batch']}: library {o['lib_us']:,.0f} µs, hand-written "
            f"{o['numpy_us']:,.0f} µs per step; difference {o['us_per_op']:.1f} µs per op (quartiles "
            f"{q1:.1f} to {q3:.1f}, {o['ops']} ops, {o['rounds']} rounds)"
        )
    for row in report["rows"]:
        if "vs_tutorial" in row:
            lines.append(
                f"tutorial loops, seed train batch 1: {_rate(row['results']['tutorial'])} images/s; "
                f"the library is {_fmt(row['vs_tutorial'], ',.0f')}x faster"
            )
    growth = report["memory"]["growth"]
    lines.append(
        f"library memory growth, {growth.get('model')} batch {growth.get('batch')}, "
        f"{growth.get('steps')} steps: RSS {_fmt(growth.get('rss_growth_mib'), '+.2f')} MiB, traced "
        f"{_fmt(growth.get('traced_growth_mib'), '+.4f')} MiB"
    )
    lines.append("targets:")
    for t in (t for t in report["targets"] if every_target or not t.get("in_table")):
        lines.append(
            f"  {VERDICT[t['pass']]:4} {t['target']}: {_fmt(t['value'])} (want {t['compare']} "
            f"{t['threshold']:g})"
        )
    return lines + [f"note: {n}" for n in report["meta"]["notes"]]


def header(report: dict[str, Any]) -> str:
    """One paragraph: when, where, how the figures were measured."""
    m, machine = report["meta"], report["meta"]["machine"]
    return (
        f"{machine['date']}, {machine['cpus']} CPUs ({machine['cpu_model']}), {m['threads']} threads, "
        f"{m['allocator']}; BLAS {m['blas']}; load average {m['load'][0]:.2f} before, {m['load'][1]:.2f} "
        f"after. Images/s: median of {m['repeats']} interleaved repeats of >= {m['min_time']:g} s; ratios: "
        "median of the same-repeat ratios; peak: the RSS rise of one training step in its own process."
        + (" --quick: a smoke test, the figures mean nothing." if m["quick"] else "")
    )


def render_text(report: dict[str, Any]) -> str:
    """The report for a terminal."""
    cells = [list(COLUMNS), *table_cells(report)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = [header(report), ""]
    for k, row in enumerate(cells):
        cols = [c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cols))
        if k == 0:
            lines.append("-" * len(lines[-1]))
    return "\n".join([*lines, "", *notes_lines(report)])


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown, for docs/benchmarks.md: the table's targets are not repeated below it."""
    rule = "|---|---|" + "---:|" * (len(COLUMNS) - 2)
    lines = [header(report), "", "| " + " | ".join(COLUMNS) + " |", rule]
    lines += ["| " + " | ".join(row) + " |" for row in table_cells(report)]
    for note in notes_lines(report, every_target=False):  # a paragraph each, their indented lines a list
        lines += ["- " + note.strip()] if note.startswith("  ") else ["", note]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole benchmark: start the workers, time every case, measure memory, derive the targets."""
    notes: list[str] = []
    load0, t0 = os.getloadavg()[0], time.time()
    with tempfile.TemporaryDirectory() as onnx_dir:
        workers = start_workers(args, onnx_dir, notes)
        try:
            infos = {name: w.call(op="info") for name, w in workers.items()}
            report = measure(args, workers, onnx_dir)
        finally:
            for w in workers.values():
                w.close()
    report["meta"] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(),
        "threads": args.threads,
        "repeats": args.repeats,
        "min_time": args.min_time,
        "quick": args.quick,
        "duration_s": round(time.time() - t0, 1),
        "load": [load0, os.getloadavg()[0]],
        "allocator": infos["mg"]["allocator"],
        "blas": ", ".join(infos["mg"].get("blas", [])) or "unknown",
        "workers": infos,
        "notes": notes,
    }
    derive(report)
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = common_parser(__doc__)
    parser.add_argument(
        "--model",
        dest="models",
        type=model_list,
        default=["seed"],
        metavar="NAMES",
        help=f"'all' or names separated by commas from {', '.join(BENCH_MODELS)} (default seed)",
    )
    parser.add_argument(
        "--batch-sizes", type=batch_list, default=[1, 16, 64, 256], help="default 1,16,64,256"
    )
    parser.add_argument(
        "--paired-rounds",
        type=int,
        default=100,
        help="alternating blocks of the library's and the hand-written step (default 100)",
    )
    parser.add_argument("--growth-steps", type=int, default=1000, help="steps of the memory-growth check")
    parser.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, help=f"results file (default {DEFAULT_JSON})"
    )
    parser.add_argument("--markdown", action="store_true", help="also print the report as Markdown")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch and ONNX Runtime")
    args = parse_common(parser, argv)
    if args.quick:
        args.paired_rounds, args.growth_steps = min(args.paired_rounds, 4), min(args.growth_steps, 20)
    if args.paired_rounds < 1 or args.growth_steps < 1:
        parser.error("need --paired-rounds >= 1 and --growth-steps >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    """Entry point: the benchmark, or (``--worker mg``) its microgradcnn worker."""
    args = parse_args(argv)
    if args.worker == "mg":
        import microgradcnn  # noqa: F401  (a broken install fails here, loudly)

        serve(mg_step, {"overhead": mg_overhead}, check=_torch_free)
        return
    report = run(args)
    print(render_text(report))
    if args.markdown:
        print("\n" + render_markdown(report))
    write_json_atomic(args.json, report)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
