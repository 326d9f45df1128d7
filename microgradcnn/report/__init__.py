"""The training report: one self-contained HTML page built from a telemetry run directory.

``write_report(run_dir, out)`` reads what ``microgradcnn.telemetry.Recorder`` wrote (a run still in progress
included: missing files are sections saying so, a torn last record is skipped) and writes one HTML file that
fetches nothing: the charts are inline SVG drawn here, the pictures PNG data URIs, the model graph the
Graphviz SVG inlined, and the page's small script (``report.js``, pan/zoom, node statistics, the epoch
slider) and stylesheet are inlined too. A Content-Security-Policy allows no other source.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from microgradcnn import telemetry
from microgradcnn._checks import check_int
from microgradcnn._files import write_bytes_atomic

MAX_POINTS = 400
"""The most points one chart series keeps; older points are averaged in buckets beyond it."""

# Update-to-weight ratios around 1e-3 are the usual healthy range (Karpathy's rule of thumb): much lower and
# a layer barely learns, much higher and it thrashes.
RATIO_BAND = (1e-4, 1e-2)
RATIO_TARGET = 1e-3

_PALETTE = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

Series = tuple[str, Sequence[float], Sequence[float | None]]  # (label, xs, ys); None: no value there


# ---- series -----------------------------------------------------------------------------------------------
def decimate(
    xs: Sequence[float], ys: Sequence[float | None], max_points: int = MAX_POINTS
) -> tuple[list, list]:
    """At most ``max_points`` points: the newest half as recorded, the older points averaged in buckets.

    Recent training is what a watcher looks at closely; the old part keeps its shape. Missing values
    (None) are left out of the averages (a bucket with none stays None).
    """
    max_points = check_int(max_points, "max_points", "decimate", minimum=2)
    xs, ys = list(xs), list(ys)
    if len(xs) <= max_points:
        return xs, ys
    keep = max_points // 2
    old_x, old_y = xs[:-keep], ys[:-keep]
    buckets = np.array_split(np.arange(len(old_x)), max_points - keep)
    bx, by = [], []
    for b in buckets:
        vals = [old_y[i] for i in b if old_y[i] is not None]
        bx.append(float(np.mean([old_x[i] for i in b])))
        by.append(float(np.mean(vals)) if vals else None)
    return bx + xs[-keep:], by + ys[-keep:]


# ---- inline SVG charts ------------------------------------------------------------------------------------
def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    """Round tick values covering [lo, hi] (on a log axis lo/hi are log10s): about 3 to 6 of them."""
    if log:
        decades = range(math.floor(lo), math.ceil(hi) + 1)
        ticks = [10.0**e for e in decades]
        if sum(lo <= math.log10(t) <= hi for t in ticks) < 2:  # within one decade: 1, 2, 5 steps
            ticks = [m * 10.0**e for e in decades for m in (1, 2, 5)]
        return ticks
    step = 10 ** math.floor(math.log10((hi - lo) or 1.0)) / 10
    for mult in (1, 2, 5, 10, 20, 50):
        if (hi - lo) / (step * mult) <= 6:
            step *= mult
            break
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _num(x: float) -> str:
    return f"{x:.0e}" if x and (abs(x) < 1e-2 or abs(x) >= 1e5) else f"{x:g}"


def line_chart(
    key: str,
    title: str,
    series: Sequence[Series],
    *,
    log_y: bool = False,
    band: tuple[float, float] | None = None,
    target: float | None = None,
    width: int = 560,
    height: int = 240,
) -> str:
    """An inline ``<svg class="chart" data-chart=key>`` line chart of ``series`` (decimated), with a legend.

    ``log_y`` plots log10 of the values (non-positive ones are gaps); ``band`` shades a y range (the healthy
    one) and ``target`` draws a dashed line. A chart without any value says so instead of plotting.
    """
    legend_rows = -(-len(series) // 4)  # the legend sits between the title and the plot, 4 labels a row
    left, right, top, bottom = 58, 10, 22 + 13 * legend_rows, 30
    height += 13 * legend_rows
    pw, ph = width - left - right, height - top - bottom
    prepared = []
    for label, xs, ys in series:
        dx, dy = decimate(xs, ys)
        if log_y:
            dy = [math.log10(y) if y is not None and y > 0 else None for y in dy]
        prepared.append((label, dx, dy))
    values = [y for _, _, ys in prepared for y in ys if y is not None and math.isfinite(y)]
    xs_all = [x for _, xs, _ in prepared for x in xs]
    out = [
        f'<svg class="chart" data-chart="{key}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{left}" y="14" font-weight="bold">{html.escape(title)}</text>',
    ]
    if not values:
        out.append(f'<text x="{left + 10}" y="{top + ph / 2}">not recorded yet</text></svg>')
        return "".join(out)
    lo, hi = min(values), max(values)
    if band and log_y:
        lo, hi = min(lo, math.log10(band[0])), max(hi, math.log10(band[1]))
    if hi - lo < 1e-12:  # a constant: a band around it (a tenth of a decade on a log axis)
        pad = 0.1 if log_y else (abs(lo) * 0.1 or 0.5)
        lo, hi = lo - pad, hi + pad
    x0, x1 = min(xs_all), max(xs_all)
    x1 = x1 if x1 > x0 else x0 + 1

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return top + ph - (y - lo) / (hi - lo) * ph

    if band:
        b0, b1 = (math.log10(band[0]), math.log10(band[1])) if log_y else band
        y_top, y_bottom = py(min(b1, hi)), py(max(b0, lo))
        out.append(
            f'<rect x="{left}" y="{y_top:.1f}" width="{pw}" height="{max(y_bottom - y_top, 0):.1f}" '
            'fill="#2ca02c" fill-opacity="0.10"/>'
        )
    if target is not None:
        t = math.log10(target) if log_y else target
        if lo <= t <= hi:
            out.append(
                f'<line x1="{left}" x2="{left + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#2ca02c" '
                'stroke-dasharray="4 3"/>'
            )
    tick_lo, tick_hi = (lo, hi)
    for t in _ticks(tick_lo, tick_hi, log_y):
        if lo - 1e-9 <= (t if not log_y else math.log10(t)) <= hi + 1e-9:
            y = py(math.log10(t) if log_y else t)
            out.append(
                f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{_num(t)}</text>'
            )
    for t in _ticks(x0, x1, False):
        out.append(f'<text x="{px(t):.1f}" y="{height - 12}" text-anchor="middle">{_num(t)}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#bbb"/>')
    for i, (label, xs, ys) in enumerate(prepared):
        color = _PALETTE[i % len(_PALETTE)]
        runs, run = [], []
        for x, y in zip(xs, ys, strict=True):
            if y is None or not math.isfinite(y):
                if run:
                    runs.append(run)
                run = []
            else:
                run.append(f"{px(x):.1f},{py(y):.1f}")
        runs.append(run)
        for r in runs:
            if len(r) == 1:
                cx, cy = r[0].split(",")
                out.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{color}"/>')
            elif r:
                out.append(
                    f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{" ".join(r)}"/>'
                )
        lx = left + 8 + (i % 4) * (pw // 4)
        ly = 32 + (i // 4) * 13
        out.append(f'<text x="{lx}" y="{ly}" style="fill:{color}">■ {html.escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)


# ---- pictures -------------------------------------------------------------------------------------------
def png_data_uri(gray: np.ndarray) -> str:
    """A uint8 (H, W) image as a ``data:image/png;base64,...`` URI."""
    import base64

    ok, png = cv2.imencode(".png", np.ascontiguousarray(gray, dtype=np.uint8))
    if not ok:
        raise ValueError(f"report: cannot encode a {gray.shape} image as PNG")
    return "data:image/png;base64," + base64.b64encode(png.tobytes()).decode()


def tile_grid(tiles: np.ndarray, symmetric: bool = False) -> np.ndarray:
    """(rows, cols, h, w) floats -> one uint8 image with 1-pixel gaps.

    ``symmetric``: one scale for all tiles with 0 at mid-grey (filters: the sign matters); else every tile
    is stretched to its own min..max (feature maps: where a map is active matters).
    """
    t = np.asarray(tiles, dtype=np.float32)
    rows, cols, h, w = t.shape
    if symmetric:
        scale = float(np.abs(t).max()) or 1.0
        g = 127.5 + 127.5 * t / scale
    else:
        lo = t.min(axis=(2, 3), keepdims=True)
        span = t.max(axis=(2, 3), keepdims=True) - lo
        g = 255 * (t - lo) / np.where(span > 0, span, 1)
    out = np.full((rows * (h + 1) + 1, cols * (w + 1) + 1), 255, dtype=np.uint8)
    view = out[1:, 1:].reshape(rows, h + 1, cols, w + 1)[:, :h, :, :w]
    view[...] = np.clip(g, 0, 255).astype(np.uint8).transpose(0, 2, 1, 3)
    return out


def _epoch_images(snapshot: Mapping[str, np.ndarray]) -> dict[str, tuple[str, int, int]]:
    """key -> (data URI, width, height) for one epoch's filters and feature maps."""
    images = {}
    for name, a in snapshot.items():
        kind = name.partition("/")[0]
        if kind == "filters" and a.shape[1] == 1:  # (out, 1, k, k): rows of 8 filters
            rows = -(-len(a) // 8)
            padded = np.zeros((rows * 8, *a.shape[2:]), np.float32)
            padded[: len(a)] = a[:, 0]
            grid = tile_grid(padded.reshape(rows, 8, *a.shape[2:]), symmetric=True)
        elif kind == "filters":  # (out, in, k, k): one row per output channel, up to 8 input channels
            grid = tile_grid(a[:, :8], symmetric=True)
        elif kind == "maps":  # (digits, channels, h, w): one row per digit
            grid = tile_grid(a)
        else:
            continue
        images[name] = (png_data_uri(grid), grid.shape[1], grid.shape[0])
    return images


# ---- reading a run ----------------------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # missing, or empty or cut short by a
        return {}  # crash of the machine (the recorder does not fsync it)


# ---- the page -----------------------------------------------------------------------------------------
def _charts(steps: list[dict[str, Any]], epochs: list[dict[str, Any]]) -> list[str]:
    sx = [r["step"] for r in steps]
    ex = [r["step"] for r in epochs]

    def col(records: list[dict[str, Any]], *path: str) -> list[float | None]:
        out = []
        for r in records:
            v: Any = r
            for p in path:
                v = v.get(p) if isinstance(v, dict) else None
            out.append(v if isinstance(v, int | float) else None)
        return out

    layers = list(dict.fromkeys(n for r in steps for n in r.get("layers", {})))
    params = list(dict.fromkeys(n for r in steps for n in r.get("params", {})))
    relus = [n for n in layers if any("dead" in r.get("layers", {}).get(n, {}) for r in steps)]

    def metric(name: str) -> list[Series]:  # per recorded batch, per epoch on the training and the test set
        return [
            ("train (batch)", sx, col(steps, name)),
            ("train (epoch)", ex, col(epochs, f"train_{name}")),
            ("test", ex, col(epochs, f"test_{name}")),
        ]

    return [
        line_chart("loss", "loss", metric("loss")),
        line_chart("accuracy", "accuracy", metric("accuracy")),
        line_chart("lr", "learning rate", [("lr", sx, col(steps, "lr"))]),
        line_chart(
            "gradflow",
            "gradient flow: norm of d loss / d output, per layer (log)",
            [(n, sx, col(steps, "layers", n, "grad", "norm")) for n in layers],
            log_y=True,
        ),
        line_chart(
            "update",
            "update / weight ratio per parameter (log; band 1e-4..1e-2, 1e-3 dashed)",
            [(n, sx, col(steps, "params", n, "update_ratio")) for n in params],
            log_y=True,
            band=RATIO_BAND,
            target=RATIO_TARGET,
        ),
        line_chart(
            "activations",
            "activation std per layer",
            [(n, sx, col(steps, "layers", n, "act", "std")) for n in layers],
        ),
        line_chart(
            "dead", "dead ReLU units (fraction)", [(n, sx, col(steps, "layers", n, "dead")) for n in relus]
        ),
    ]


def _graph_svg(run: Path) -> str:
    try:
        svg = (run / "graph.svg").read_text()
    except FileNotFoundError:
        return ""
    svg = svg[svg.find("<svg") :]  # drop the XML prolog and DOCTYPE: inline SVG in HTML takes neither
    return re.sub(r'<svg width="[^"]*" height="[^"]*"', "<svg", svg, count=1)


def _confusion_table(confusion: list[list[int]]) -> str:
    m = np.asarray(confusion)
    rows = [
        "<table class='confusion' data-chart='confusion'><tr><th>true \\ predicted</th>"
        + "".join(f"<th>{j}</th>" for j in range(m.shape[1]))
        + "</tr>"
    ]
    for i, row in enumerate(m):
        total = max(int(row.sum()), 1)
        cells = []
        for j, v in enumerate(row):
            share = v / total
            color = (
                f"rgba(31,119,180,{share:.2f})" if i == j else f"rgba(214,39,40,{min(1.0, 4 * share):.2f})"
            )
            cells.append(f"<td style='background:{color}' title='{v} of {total}'>{v}</td>")
        rows.append(f"<tr><th>{i}</th>{''.join(cells)}</tr>")
    return "".join(rows) + "</table>"


def build_report(run_dir: str | os.PathLike[str]) -> str:
    """The report's HTML for the run directory ``run_dir`` (see ``write_report``)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"report: no run directory at {run}")
    meta = _read_json(run / telemetry.RUN) or {}
    steps = telemetry.read_records(run / telemetry.STEPS)
    epochs = telemetry.read_records(run / telemetry.EPOCHS)
    final = _read_json(run / telemetry.FINAL)
    nodes = _read_json(run / "graph_nodes.json") or {}
    snapshots = []
    for r in epochs:
        snap = _read_npz(run / telemetry.epoch_file(int(r["epoch"])))
        if snap:
            snapshots.append((int(r["epoch"]), snap))
    epoch_data = [
        {"epoch": e, "images": {k: v[0] for k, v in _epoch_images(s).items()}} for e, s in snapshots
    ]

    parts = [f"<h1>Training report: {html.escape(run.name)}</h1>"]
    state = "finished" if final else "in progress (or stopped before the end)"
    cfg = meta.get("config") or {}
    parts.append(
        f"<p class='note'>{len(epochs)} epoch(s), {steps[-1]['step'] if steps else 0} steps recorded "
        f"every {meta.get('every', '?')}; run {state}. "
        + html.escape(", ".join(f"{k}={v}" for k, v in cfg.items()))
        + "</p>"
    )

    parts.append("<section id='sec-graph'><h2>Model graph</h2>")
    graph = _graph_svg(run)
    if graph:
        parts.append(
            "<p class='note'>Drag to pan, scroll to zoom, double-click to fit; click a node for its "
            "statistics (one batch of the fixed test digits at the start of the run).</p>"
            f"<div id='graph-box'><div id='graph'>{graph}</div><div id='node-panel'>"
            "<p>Click a node.</p></div></div><button id='graph-fit'>fit</button>"
        )
    else:
        parts.append("<p>No graph recorded (Graphviz's <code>dot</code> was not installed).</p>")

    parts.append("</section><section id='sec-curves'><h2>Curves</h2><div class='charts'>")
    parts += [*_charts(steps, epochs), "</div></section>"]

    parts.append("<section id='sec-pictures'><h2>Filters and feature maps</h2>")
    if snapshots:
        last = _epoch_images(snapshots[-1][1])
        n = len(snapshots) - 1
        parts.append(
            f"<p><input type='range' id='epoch' min='0' max='{n}' value='{n}'> "
            f"<span id='epoch-label'>epoch {snapshots[-1][0]}</span></p><div class='pics'>"
        )
        labels = meta.get("digit_labels") or []
        for key, (uri, w, h) in last.items():
            kind, _, layer = key.partition("/")
            what = (
                "filters"
                if kind == "filters"
                else (f"feature maps (rows: test digits {', '.join(map(str, labels))})")
            )
            zoom = 3 if kind == "filters" else 2
            parts.append(
                f"<figure><img class='px' data-key='{key}' src='{uri}' width='{w * zoom}' "
                f"height='{h * zoom}' alt='{key}'><figcaption>layer {html.escape(layer)}: "
                f"{what}</figcaption></figure>"
            )
        parts.append("</div>")
    else:
        parts.append("<p>No epoch finished yet.</p>")

    parts.append("</section><section id='sec-confusion'>")
    parts.append("<h2>Confusion matrix and the most confidently wrong test digits</h2>")
    if final:
        parts.append(_confusion_table(final["confusion"]))
        worst = _read_npz(run / "final.npz").get("worst_images")
        parts.append("<div class='worst' data-chart='worst'>")
        for i, w in enumerate(final.get("worst", [])):
            if worst is None or i >= len(worst):
                break
            uri = png_data_uri(tile_grid(worst[i : i + 1, :1] if worst.ndim == 4 else worst[None, None, i]))
            parts.append(
                f"<figure><img class='px' src='{uri}' width='58' height='58' alt='test {w['index']}'>"
                f"<br>{w['label']} → {w['pred']} ({w['confidence']:.0%})</figure>"
            )
        parts.append("</div>")
    else:
        parts.append("<p>Written when training finishes.</p>")
    parts.append("</section>")

    data = json.dumps({"nodes": nodes, "epochs": epoch_data}, separators=(",", ":")).replace("</", "<\\/")
    asset = resources.files(__package__)
    probe, script, css = (asset.joinpath(n).read_text() for n in ("probe.js", "report.js", "report.css"))
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{_CSP}\">"
        f"<title>microgradcnn report: {html.escape(run.name)}</title><script>{probe}</script>"
        f"<style>{css}</style></head><body>{''.join(parts)}"
        f"<script type='application/json' id='report-data'>{data}</script><script>{script}</script>"
        "</body></html>\n"
    )


def write_report(run_dir: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Write the report of the run in ``run_dir`` to exactly ``out`` (atomically); returns ``Path(out)``.

    One self-contained HTML file: the model graph (pan/zoom, a click on a node shows its shape, dtype, value
    and gradient statistics), loss/accuracy/learning-rate curves, gradient flow, update ratios with the
    healthy band, activation and dead-ReLU charts, conv filters and feature maps with a slider over epochs,
    the confusion matrix and the most confidently wrong test digits. A run still in progress shows what
    it has so far.

    Raises:
        FileNotFoundError: ``run_dir`` is not a directory.
    """
    return write_bytes_atomic(out, build_report(run_dir).encode())


# ---- inline in Jupyter ------------------------------------------------------------------------------------
def _inline_css() -> str:
    """The stylesheet's rules for charts and pixel pictures, for output shown outside the report page."""
    css = resources.files(__package__).joinpath("report.css").read_text()
    rules = [line for line in css.splitlines() if line.startswith((".charts", "svg.chart", "img.px"))]
    return "<style>" + " ".join(rules) + "</style>"


class Chart:
    """One of the report's SVG charts; Jupyter shows it inline (``_repr_svg_``).

    ``key`` names the chart (``"loss"``, ``"accuracy"``, ``"lr"``, ``"gradflow"``, ``"update"``,
    ``"activations"``, ``"dead"``) and ``svg`` is its markup, exactly as the report page embeds it.
    """

    def __init__(self, key: str, svg: str) -> None:
        self.key, self.svg = key, svg

    def _repr_svg_(self) -> str:
        # a standalone SVG carries the page's text style inside it (the notebook has no report.css)
        head, _, rest = self.svg.partition(">")
        return f"{head}>{_inline_css()}{rest}"

    def __repr__(self) -> str:
        return f"Chart({self.key!r}, {len(self.svg)} characters of SVG)"


class Curves:
    """The report's curves of a run: an ordered ``{key: Chart}``; Jupyter shows them all (``_repr_html_``).

    ``curves["loss"]`` is one chart; iterating gives the keys, in the report's order.
    """

    def __init__(self, charts: Sequence[Chart]) -> None:
        self.charts = {c.key: c for c in charts}

    def __getitem__(self, key: str) -> Chart:
        try:
            return self.charts[key]
        except KeyError:
            raise KeyError(f"report.curves: no chart {key!r}; the charts are {list(self.charts)}") from None

    def __iter__(self) -> Any:
        return iter(self.charts)

    def __len__(self) -> int:
        return len(self.charts)

    def _repr_html_(self) -> str:
        body = "".join(c.svg for c in self.charts.values())
        return f"{_inline_css()}<div class='charts'>{body}</div>"

    def __repr__(self) -> str:
        return f"Curves({', '.join(self.charts)})"


def curves(run_dir: str | os.PathLike[str]) -> Curves:
    """The loss/accuracy/learning-rate, gradient-flow, update-ratio, activation and dead-ReLU charts of the
    run in ``run_dir`` (a run still in progress included), as the report draws them, for display in Jupyter.

    Raises:
        FileNotFoundError: ``run_dir`` is not a directory.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"report.curves: no run directory at {run}")
    steps = telemetry.read_records(run / telemetry.STEPS)
    svgs = _charts(steps, telemetry.read_records(run / telemetry.EPOCHS))
    return Curves([Chart(s[s.index('data-chart="') + 12 : s.index('" width=')], s) for s in svgs])


class FeatureMaps:
    """One layer's feature maps of a batch: ``maps`` (N, C, H, W) floats, shown inline by Jupyter as a PNG
    grid (``_repr_png_``, ``_repr_html_``, both enlarged ``zoom`` times): one row per image, one column per
    channel, each map stretched to its own min..max as in the report.
    """

    def __init__(self, layer: str, maps: np.ndarray, zoom: int = 3) -> None:
        self.layer, self.maps, self.zoom = layer, maps, zoom
        self.grid = tile_grid(maps)
        """The picture: uint8 (N * (H + 1) + 1, C * (W + 1) + 1), 1-pixel white gaps."""

    def _repr_png_(self) -> bytes:
        # enlarged by ``zoom`` with square pixels: a front end showing the PNG as it is still shows the maps
        big = np.repeat(np.repeat(self.grid, self.zoom, axis=0), self.zoom, axis=1)
        ok, png = cv2.imencode(".png", big)
        if not ok:
            raise ValueError(f"report.feature_maps: cannot encode a {self.grid.shape} grid as PNG")
        return png.tobytes()

    def _repr_html_(self) -> str:
        h, w = self.grid.shape
        n, c = self.maps.shape[:2]
        return (
            f"{_inline_css()}<figure><img class='px' src='{png_data_uri(self.grid)}' width='{w * self.zoom}' "
            f"height='{h * self.zoom}' alt='feature maps of {html.escape(self.layer)}'><figcaption>layer "
            f"{html.escape(self.layer)}: {c} channel(s) of {n} image(s)</figcaption></figure>"
        )

    def __repr__(self) -> str:
        return f"FeatureMaps({self.layer!r}, maps of shape {self.maps.shape})"


def feature_maps(
    model: Any, layer: str, x: np.ndarray, *, max_channels: int = 16, zoom: int = 3
) -> FeatureMaps:
    """The feature maps the leaf module ``layer`` (its name in ``model.named_modules()``, e.g. ``"0"`` or
    ``"features.relu1"``) outputs for the images ``x`` (N, 1, 28, 28), first ``max_channels`` channels,
    for display in Jupyter. One forward pass in eval mode without a graph (see ``telemetry.layer_outputs``).

    Raises:
        KeyError: ``model`` has no leaf module named ``layer``.
        ValueError: that layer's output is not a batch of maps (N, C, H, W).
    """
    check_int(max_channels, "max_channels", "report.feature_maps", minimum=1)
    check_int(zoom, "zoom", "report.feature_maps", minimum=1)
    out = telemetry.layer_outputs(model, x, [layer]).get(layer)
    if out is None or out.ndim != 4:
        shape = None if out is None else out.shape
        raise ValueError(f"report.feature_maps: layer {layer!r} outputs {shape}, not maps (N, C, H, W)")
    return FeatureMaps(layer, np.asarray(out[:, :max_channels], dtype=np.float32), zoom)
