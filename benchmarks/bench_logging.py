"""What training telemetry costs: ``python -m microgradcnn train`` with and without ``--log-dir``.

Runs the same command (the CLI's defaults, plus any ``--train-args``) alternately without and with
``--log-dir RUN`` (``--log-every`` at its default), ``--pairs`` times, each in its own process, and prints
per pair and as the median of the paired ratios (with / without):

* training: from the CLI's "checkpoint (after every epoch)" line, printed just before training starts, to
  its "done in" line: the training as the user waits for it, without the startup both runs share;
* command: the whole command, from start to exit.

A pair's two runs follow each other, so load from other processes hits both alike; the median of the ratios
is the figure to quote. One BLAS thread unless ``OPENBLAS_NUM_THREADS`` is set.

``--instructions`` counts CPU instructions instead (``valgrind --tool=callgrind``, one BLAS thread; ~50x
slower): ``train.fit`` on the model's defaults without and with a ``telemetry.Recorder``, each in its own
process, minus a process that only loads the data. Load does not change these counts; ``dot``, which lays
the graph out in a child process beside the training, is not counted.

    python benchmarks/bench_logging.py
    python benchmarks/bench_logging.py --pairs 5 --train-args "--model cnn2"
    python benchmarks/bench_logging.py --instructions --model seed
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str]) -> tuple[float, float]:
    """(training seconds, whole-command seconds) of ``python -m microgradcnn train ARGS``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "microgradcnn", "train", *args],
        cwd=ROOT,  # the checkout's package, not an installed one
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    began = done = None
    for line in proc.stdout:
        if line.startswith("checkpoint (after every epoch)"):
            began = time.perf_counter()
        elif line.startswith("done in"):
            done = time.perf_counter()
    if proc.wait() != 0 or began is None or done is None:
        raise SystemExit(f"bench_logging: `microgradcnn train {shlex.join(args)}` failed")
    return done - began, time.perf_counter() - start


def child(mode: str, model: str) -> None:
    """In a callgrind process: load the data, then (``plain``, ``logged``) train with the defaults."""
    from microgradcnn import telemetry, train

    config = train.TrainConfig(model=model)
    data = train.load_data(config)
    if mode != "startup":
        with tempfile.TemporaryDirectory() as tmp:
            recorder = telemetry.Recorder(tmp) if mode == "logged" else None
            train.fit(config, data=data, recorder=recorder, progress=False, log=lambda line: None)


def instructions(mode: str, model: str) -> int:
    """Instructions callgrind counts in ``child(mode, model)``'s process."""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])  # this checkout's package
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONHASHSEED": "0", "PYTHONPATH": path}
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable]
    cmd += [__file__, "--child", mode, model]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or found is None:
        raise SystemExit(f"bench_logging: callgrind run failed:\n{proc.stderr[-2000:]}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=7, help="runs without and with --log-dir (default 7)")
    parser.add_argument("--train-args", default="", help='more arguments for train, e.g. "--model cnn2"')
    parser.add_argument("--instructions", action="store_true", help="count instructions (callgrind)")
    parser.add_argument("--model", default="seed", help="the model of --instructions (default seed)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.child:
        return child(*opts.child)
    if opts.instructions:
        start, plain, logged = (instructions(m, opts.model) for m in ("startup", "plain", "logged"))
        print(
            f"{opts.model}: training {plain - start:,} instructions without, {logged - start:,} with a "
            f"recorder: x{(logged - start) / (plain - start):.3f}"
        )
        return None
    ratios: dict[str, list[float]] = {"training": [], "command": []}
    with tempfile.TemporaryDirectory() as tmp:
        base = [*shlex.split(opts.train_args), "--out", f"{tmp}/model.npz", "--force"]
        for pair in range(1, opts.pairs + 1):
            plain = run(base)
            logged = run([*base, "--log-dir", f"{tmp}/run{pair}"])
            for key, a, b in zip(ratios, plain, logged, strict=True):
                ratios[key].append(b / a)
            print(
                f"pair {pair}: training {plain[0]:.2f} s -> {logged[0]:.2f} s (x{logged[0] / plain[0]:.3f}), "
                f"command {plain[1]:.2f} s -> {logged[1]:.2f} s (x{logged[1] / plain[1]:.3f})",
                flush=True,
            )
    print(
        f"median ratio with / without --log-dir over {opts.pairs} pairs: "
        f"training x{statistics.median(ratios['training']):.3f}, "
        f"command x{statistics.median(ratios['command']):.3f}"
    )


if __name__ == "__main__":
    main()
