"""Every example script, and the code in docs/testing.md and docs/index.md, runs with tiny sizes: none rots.

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
    assert "Falsifying example: check_op_broken_swish(" in result.stdout


def _make_digit7(result: subprocess.CompletedProcess[str], cwd: Path, out: Path) -> None:
    made = cv2.imread(str(cwd / "digit7.png"), cv2.IMREAD_GRAYSCALE)  # --quick writes it to the working dir
    committed = cv2.imread(str(ROOT / "examples" / "digit7.png"), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(made, committed)  # the committed picture is reproducible


def _predict_digit(result: subprocess.CompletedProcess[str], cwd: Path, out: Path) -> None:
    assert re.search(r"digit7\.png: digit \d", result.stdout)


def _hessian(result: subprocess.CompletedProcess[str], cwd: Path, out: Path) -> None:
    # the script asserts its own checks (HVP vs central differences, power iteration vs the dense Hessian)
    assert "Hessian-vector product of the loss over 13610 parameters" in result.stdout
    assert re.search(r"power iteration (-?[\d.]+), from the dense Hessian (-?[\d.]+)", result.stdout)
    assert "gradient-penalty step 2: penalty" in result.stdout


# What an example's run must show, beyond exiting with 0.
CHECKS: dict[str, Callable[[subprocess.CompletedProcess[str], Path, Path], None]] = {
    "custom_op.py": _custom_op,
    "hessian.py": _hessian,
    "make_digit7.py": _make_digit7,
    "predict_digit.py": _predict_digit,
}


@pytest.mark.parametrize("name", EXAMPLES)
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


# ---- docs: a page's python blocks run in order in one process; the errors it shows are the real ones -------
DOC_RUNNER = r'''
import re
import sys

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
NUMBER = re.compile(r"-?\d+(\.\d+)?(e[-+]?\d+)?")


def normalize(line):
    return NUMBER.sub("#", line.strip())  # values may differ in the last digits from run to run; wording not


blocks = [(m.group(1), m.group(2)) for m in FENCE.finditer(open(sys.argv[1]).read())]
namespace = {"__name__": "docs_page"}
for k, (lang, code) in enumerate(blocks):
    if lang != "python":
        continue
    shown = blocks[k + 1][1] if k + 1 < len(blocks) and blocks[k + 1][0] == "text" else None
    expects_error = shown is not None and re.match(r"\w+Error: ", shown)
    try:
        exec(compile(code, f"{sys.argv[1]} block {k}", "exec"), namespace)
    except Exception as err:
        if not expects_error:
            raise
        got = f"{type(err).__name__}: {err}"
        if normalize(got.splitlines()[0]) != normalize(shown.splitlines()[0]):
            want, raised = shown.splitlines()[0], got.splitlines()[0]
            sys.exit(f"block {k}: the docs show\n  {want}\nbut the code raises\n  {raised}")
    else:
        if expects_error:
            sys.exit(f"block {k}: the docs show an error, but the code ran without one:\n{code}")
tests = [name for name in namespace if name.startswith("test_") and callable(namespace[name])]
for name in tests:
    namespace[name]()
print("ran", len(tests), "tests:", ", ".join(tests))
'''


@pytest.mark.parametrize(("page", "min_tests"), [("testing.md", 1), ("index.md", 0)])
def test_the_code_in_the_docs_runs_and_shows_real_errors(tmp_path, page, min_tests):
    runner = tmp_path / "run_doc.py"
    runner.write_text(DOC_RUNNER)
    result = _run([str(runner), str(ROOT / "docs" / page)], cwd=tmp_path, timeout=300)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    ran = re.search(r"ran (\d+) tests", result.stdout)
    assert ran, result.stdout
    assert int(ran.group(1)) >= min_tests


def test_the_docs_index_links_resolve():
    index = ROOT / "docs" / "index.md"
    targets = re.findall(r"\]\(([^)#]+)\)", index.read_text())
    local = [t for t in targets if "://" not in t]
    assert local
    missing = [t for t in local if not (index.parent / t).exists()]
    assert not missing, f"docs/index.md links to missing files: {missing}"
