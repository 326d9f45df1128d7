"""examples/tutorial.ipynb runs from top to bottom in a Jupyter kernel and shows what it promises.

The kernel is this interpreter (``sys.executable``): a kernel spec written for the test, not whatever
``python3`` kernel the machine has installed, so the notebook imports this checkout's microgradcnn.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "tutorial.ipynb"
INSTALL = 'pip install -e ".[notebook]" (nbclient, nbformat, ipykernel)'
TIMEOUT = 300  # seconds per cell; the whole notebook takes well under a minute


def _needs(module: str):
    try:
        return __import__(module)
    except ImportError:
        pytest.skip(f"the notebook test needs {module}, which is not installed here: {INSTALL}")


def test_the_committed_notebook_has_no_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code
    for cell in code:
        assert cell["outputs"] == [], "".join(cell["source"])[:80]
        assert cell["execution_count"] is None


# Runs in a subprocess, as the docs' and the examples' tests do: the kernel's client and its sockets end
# with that process, not in this one's garbage collector (where pytest turns their ResourceWarnings into
# errors). argv: the notebook, the executed copy to write, the kernel spec directory, the working directory.
RUNNER = r"""
import sys

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

notebook, out, kernels, cwd, timeout = sys.argv[1:]
nb = nbformat.read(notebook, as_version=4)
specs = KernelSpecManager(kernel_dirs=[kernels], ensure_native_kernel=False)
km = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs)
try:
    NotebookClient(nb, km=km, timeout=int(timeout), resources={"metadata": {"path": cwd}}).execute()
finally:
    nbformat.write(nb, out)  # what ran, with outputs and the failing cell's error, for the test to show
print("kernel:", km.kernel_spec.argv[0])
"""


def _kernel_spec(tmp_path: Path) -> Path:
    """A ``python3`` kernel spec that starts this interpreter on this checkout."""
    spec = tmp_path / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (this interpreter)",
                "language": "python",
                "env": {"PYTHONPATH": str(ROOT)},
            }
        )
    )
    return tmp_path / "kernels"


def _outputs(cell) -> tuple[str, set[str]]:
    """A cell's printed text and the MIME types of what it displayed."""
    text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    shown = [o for o in cell.outputs if o.output_type in ("display_data", "execute_result")]
    kinds = {kind for o in shown for kind in o.data}
    return text, kinds


@pytest.mark.slow
@pytest.mark.needs("dot")
def test_the_tutorial_runs_and_shows_every_step(tmp_path):
    nbformat = _needs("nbformat")
    _needs("nbclient")
    _needs("ipykernel")

    runner = tmp_path / "run_notebook.py"
    runner.write_text(RUNNER)
    out = tmp_path / "executed.ipynb"
    args = [str(NOTEBOOK), str(out), str(_kernel_spec(tmp_path)), str(ROOT), str(TIMEOUT)]
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(ROOT)}  # the run goes into tmp_path
    start = time.perf_counter()
    cmd = [sys.executable, str(runner), *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    took = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"kernel: {sys.executable}" in done.stdout
    nb = nbformat.read(out, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    shown = {"".join(c.source).splitlines()[0]: _outputs(c) for c in code}

    def cell(first_line: str) -> tuple[str, set[str]]:
        return next(v for k, v in shown.items() if k.startswith(first_line))

    assert "writing into " + str(tmp_path) in cell("import tempfile")[0]
    assert "the network's input: (1, 28, 28) float32" in cell("photo = cv2.imread")[0]
    assert "image/png" in cell("photo = cv2.imread")[1]
    assert "image/svg+xml" in cell("model = seed_cnn")[1]  # the graph, inline
    assert cell("img = mg.Tensor")[0].strip() == "True"  # gradcheck
    accuracy = re.search(r"epoch 2/2: .* test loss [\d.]+ acc ([\d.]+)%", cell("run = work")[0])
    assert float(accuracy.group(1)) > 50  # two epochs, and it learned
    assert "text/html" in cell("report.curves(run)")[1]
    assert "image/png" in cell('report.feature_maps(model, "1"')[1]
    assert "report.html" in cell("page = report.write_report")[0]
    assert "the network reads a" in cell("with mg.no_grad()")[0]
    curves = next(c for c in code if "".join(c.source).startswith("report.curves"))
    assert curves.outputs[0].data["text/html"].count('<svg class="chart"') == 7
    assert took < 120, f"the tutorial took {took:.0f} s; it should stay well under a minute"
