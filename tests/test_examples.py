"""Every example script runs with tiny sizes and shows what it promises: none rots.

Each script runs in a subprocess: an op an example defines registers in that process's ``mg.REGISTRY``, not
in this one's. Examples take ``--quick`` (or ``MICROGRADCNN_EXAMPLE_QUICK=1``) for tiny runs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.py"))

# How to run each example quickly: its arguments ({out} is a fresh temporary directory; the working directory
# is a fresh temporary directory too, so files an example writes there vanish). Unlisted: `--quick`.
ARGS: dict[str, list[str]] = {
    "demo.py": [],
    "custom_op.py": ["{out}", "--quick"],
    "visualize_graph.py": ["{out}"],
}
TIMEOUT = 120  # seconds per example; each quick run takes a few


def _run(args: list[str], cwd: Path, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MICROGRADCNN_EXAMPLE_QUICK": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _custom_op(result: subprocess.CompletedProcess[str], cwd: Path, out: Path) -> None:
    assert "->" in (out / "swish.dot").read_text()  # the DOT file always; the SVG needs Graphviz's dot
    assert "check_op('broken_swish'): gradcheck: gradient of input 0" in result.stdout
    # check_op's own account of the failing case (what hypothesis prints around it is hypothesis's business)
    assert "check_op(BrokenSwishFn) failed as it should:" in result.stdout
    assert re.search(r"\n    inputs: Tensor float64 \([\d, ]*\) requires_grad", result.stdout)


def _make_digit7(result: subprocess.CompletedProcess[str], cwd: Path, out: Path) -> None:
    made = cv2.imread(str(cwd / "digit7.png"), cv2.IMREAD_GRAYSCALE)  # --quick writes it to the working dir
    committed = cv2.imread(str(ROOT / "examples" / "digit7.png"), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(made, committed)  # the committed picture is reproducible


def _predict_digit(result: subprocess.CompletedProcess[str], cwd: Path, out: Path) -> None:
    assert re.search(r"digit7\.png: digit \d", result.stdout)


def _hessian(result: subprocess.CompletedProcess[str], cwd: Path, out: Path) -> None:
    # the script asserts its own checks (HVP vs central differences, power iteration vs the dense Hessian)
    assert "batch 8: Hessian-vector product of the loss over 13610 parameters" in result.stdout
    assert "largest difference from central differences of the gradient" in result.stdout
    assert re.search(r"power iteration (-?[\d.]+), from the dense Hessian (-?[\d.]+)", result.stdout)
    assert "gradient-penalty step 2: penalty" in result.stdout


# What an example's run must show, beyond exiting with 0.
CHECKS: dict[str, Callable[[subprocess.CompletedProcess[str], Path, Path], None]] = {
    "custom_op.py": _custom_op,
    "hessian.py": _hessian,
    "make_digit7.py": _make_digit7,
    "predict_digit.py": _predict_digit,
}


# Examples that render pictures through Graphviz's `dot` (the others write DOT text at most).
NEEDS_DOT = {"visualize_graph.py"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.needs("dot")) if n in NEEDS_DOT else n for n in EXAMPLES]
)
def test_example_runs(name, tmp_path):
    out = tmp_path / "out"
    args = [a.format(out=out) for a in ARGS.get(name, ["--quick"])]
    result = _run([str(ROOT / "examples" / name), *args], cwd=tmp_path)
    assert result.returncode == 0, f"examples/{name}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    if name in CHECKS:
        CHECKS[name](result, tmp_path, out)


def test_custom_op_skips_rendering_without_graphviz(tmp_path, monkeypatch):
    no_dot = tmp_path / "bin"  # a PATH without Graphviz's dot (the interpreter is called by absolute path)
    no_dot.mkdir()
    monkeypatch.setenv("PATH", str(no_dot))
    result = _run([str(ROOT / "examples" / "custom_op.py"), str(tmp_path / "out"), "--quick"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Graphviz's `dot` is not installed" in result.stdout
    assert (tmp_path / "out" / "swish.dot").exists()
    assert not (tmp_path / "out" / "swish.svg").exists()


def test_every_example_is_listed_in_the_examples_readme():
    readme = (ROOT / "examples" / "README.md").read_text()
    missing = [name for name in EXAMPLES if f"examples/{name}" not in readme]
    assert not missing, f"examples/README.md does not list: {missing}"
