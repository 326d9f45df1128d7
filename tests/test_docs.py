"""The docs say what is true: every Python block in README.md and docs/*.md runs as written, in order.

Each page runs in a fresh subprocess (an op a page defines registers in that process's ``mg.REGISTRY``), in
a fresh temporary working directory (files a page writes vanish), with its blocks executed in order in one
namespace, as a reader pasting them into one session would. A ``text`` block right after a Python block that
shows an error (``SomeError: ...``) must be the error that block raises: its first line, with numbers
masked. Functions a page defines named ``test_*`` are called at the end, as pytest would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]


def _python_blocks(page: str) -> int:
    return len(re.findall(r"^```python\n", (ROOT / page).read_text(), re.M))


# Pages whose blocks use an outside binary: skipped (with the install command) where it is missing.
NEEDS: dict[str, tuple[str, ...]] = {"docs/graphs.md": ("dot",)}
CODE_PAGES = [p for p in PAGES if _python_blocks(p)]
TIMEOUT = 300  # seconds per page

RUNNER = r'''
import re
import sys

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
NUMBER = re.compile(r"-?\d+(\.\d+)?(e[-+]?\d+)?")


def normalize(line):
    return NUMBER.sub("#", line.strip())  # values may differ in the last digits from run to run; wording not


page = sys.argv[1]
blocks = [(m.group(1), m.group(2)) for m in FENCE.finditer(open(page).read())]
namespace = {"__name__": "docs_page"}
ran = 0
for k, (lang, code) in enumerate(blocks):
    if lang != "python":
        continue
    ran += 1
    shown = blocks[k + 1][1] if k + 1 < len(blocks) and blocks[k + 1][0] == "text" else None
    expects_error = shown is not None and re.match(r"\w+Error: ", shown)
    try:
        exec(compile(code, f"{page} python block {ran}", "exec"), namespace)
    except Exception as err:
        if not expects_error:
            raise
        got = f"{type(err).__name__}: {err}"
        if normalize(got.splitlines()[0]) != normalize(shown.splitlines()[0]):
            want, raised = shown.splitlines()[0], got.splitlines()[0]
            sys.exit(f"{page} python block {ran}: the docs show\n  {want}\nbut the code raises\n  {raised}")
    else:
        if expects_error:
            sys.exit(f"{page} python block {ran}: the docs show an error, but the code ran without one")
tests = [name for name in namespace if name.startswith("test_") and callable(namespace[name])]
for name in tests:
    namespace[name]()
print("ran", ran, "blocks and", len(tests), "tests:", ", ".join(tests))
'''


@pytest.mark.parametrize(
    "page", [pytest.param(p, marks=[pytest.mark.needs(*NEEDS[p])] if p in NEEDS else []) for p in CODE_PAGES]
)
def test_every_python_block_of_the_page_runs_in_order(page, tmp_path):
    runner = tmp_path / "run_page.py"
    runner.write_text(RUNNER)
    args = [sys.executable, str(runner), str(ROOT / page)]
    work = tmp_path / "work"  # a page is read at the repository root: the files it names are there
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")
    # A home of its own: what a page writes to ~ or the data cache stays in the test's temporary directory.
    env = {k: v for k, v in os.environ.items() if k not in ("MICROGRADCNN_DATA", "XDG_CACHE_HOME")}
    env.update(HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT), MICROGRADCNN_EXAMPLE_QUICK="1")
    result = subprocess.run(
        args,
        cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )
    assert result.returncode == 0, f"{page}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    ran = re.search(r"ran (\d+) blocks", result.stdout)
    assert ran, result.stdout
    assert int(ran.group(1)) == _python_blocks(page)


def _run_page(tmp_path, text: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "run_page.py").write_text(RUNNER)
    (tmp_path / "page.md").write_text(text)
    args = [sys.executable, str(tmp_path / "run_page.py"), str(tmp_path / "page.md")]
    return subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)


def _page(code: str, shown: str | None = None) -> str:
    return f"```python\n{code}\n```\n" + (f"\n```text\n{shown}\n```\n" if shown is not None else "")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (_page("y = x + 1"), "page.md python block 1"),  # the traceback names the block
        (_page("raise ValueError('boom')", "ValueError: else"), "the docs show\n  ValueError: else\nbut"),
        (_page("1 + 1", "ValueError: boom"), "the docs show an error, but the code ran without one"),
    ],
)
def test_the_runner_fails_on_a_block_that_does_not_run_or_shows_a_wrong_error(tmp_path, text, why):
    result = _run_page(tmp_path, text)
    assert result.returncode != 0
    assert why in result.stderr


def test_the_runner_accepts_the_error_a_page_shows_up_to_its_numbers(tmp_path):
    result = _run_page(tmp_path, _page("raise ValueError('boom at 0.5')", "ValueError: boom at 0.25"))
    assert result.returncode == 0, result.stderr
    assert "ran 1 blocks" in result.stdout


def test_the_docs_index_links_resolve():
    index = ROOT / "docs" / "index.md"
    targets = re.findall(r"\]\(([^)#]+)\)", index.read_text())
    local = [t for t in targets if "://" not in t]
    assert local
    missing = [t for t in local if not (index.parent / t).exists()]
    assert not missing, f"docs/index.md links to missing files: {missing}"


# History of how the project was built, and files outside the repository, have no place in its docs.
NOT_IN_DOCS = re.compile(r"\bsessions?\b|\bissue #\d|PERF_NOTES|shared/seeds|/work/|/tmp/perf", re.I)


def test_the_docs_describe_the_project_as_it_is():
    pages = [*PAGES, "examples/README.md", "benchmarks/README.md"]
    found = [
        f"{page}:{n}: {line.strip()}"
        for page in pages
        for n, line in enumerate((ROOT / page).read_text().splitlines(), 1)
        if NOT_IN_DOCS.search(line)
    ]
    assert not found, "history or outside paths in the docs:\n" + "\n".join(found)
