"""Open a report in headless Chromium: its DOM after the scripts ran, or a screenshot (tests and docs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from microgradcnn._files import write_bytes_atomic

# Keep Chromium itself off the network (updates, metrics, safe browsing): the page needs none, and the
# tests must not make any.
_QUIET = [
    "--headless",
    "--no-sandbox",  # root in a container has no user namespace for the sandbox
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-domain-reliability",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-pings",
    "--hide-scrollbars",
]


class ChromiumNotFoundError(RuntimeError):
    """No ``chromium`` executable on PATH."""


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[bytes]:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise ChromiumNotFoundError(
            "report.browser: needs Chromium; install it with `apt-get install chromium`"
        )
    with tempfile.TemporaryDirectory(prefix="mg-chromium-") as profile:
        return subprocess.run(
            [exe, *_QUIET, f"--user-data-dir={profile}", *args],
            capture_output=True,
            timeout=timeout,
            check=True,
        )


def _url(page: str | os.PathLike[str], fragment: str) -> str:
    url = Path(page).resolve().as_uri()
    return f"{url}#{fragment}" if fragment else url


def dump_dom(page: str | os.PathLike[str], fragment: str = "", timeout: float = 120) -> str:
    """The serialized DOM of the HTML file ``page`` once loaded and its scripts ran (``--dump-dom``).

    ``fragment`` is put after ``#`` in the URL (the report's ``select=<node id>`` clicks a graph node).
    """
    return _run(["--dump-dom", _url(page, fragment)], timeout).stdout.decode("utf-8", errors="replace")


def screenshot(
    page: str | os.PathLike[str],
    out: str | os.PathLike[str],
    size: tuple[int, int] = (1280, 2000),
    fragment: str = "",
    timeout: float = 120,
) -> Path:
    """A PNG screenshot of the HTML file ``page``, ``size`` = (width, height) pixels, written to ``out``."""
    with tempfile.TemporaryDirectory(prefix="mg-shot-") as tmp:
        shot = Path(tmp) / "shot.png"  # Chromium writes it in place; the copy at `out` is written atomically
        _run([f"--screenshot={shot}", f"--window-size={size[0]},{size[1]}", _url(page, fragment)], timeout)
        return write_bytes_atomic(out, shot.read_bytes())


SECTIONS = ("graph", "curves", "pictures", "confusion")
"""The report's sections, as ``section_screenshots`` names its files (``report_<section>.png``)."""


def section_screenshots(
    page: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    node: str | None = None,
    size: tuple[int, int] = (1200, 900),
) -> list[Path]:
    """Screenshots of each report section to ``out_dir/report_<section>.png``; returns the paths.

    ``node``: a graph node id to click first, so the graph's picture shows a statistics panel.
    """
    shots = []
    for section in SECTIONS:
        fragment = f"only=sec-{section}" + (f"&select={node}" if node else "")
        shots.append(screenshot(page, Path(out_dir) / f"report_{section}.png", size=size, fragment=fragment))
    return shots
