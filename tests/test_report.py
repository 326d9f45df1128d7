import json
import re

import cv2
import numpy as np
import pytest

from microgradcnn import report, telemetry
from microgradcnn.report import browser
from tests.test_telemetry import drive

CHARTS = ["loss", "accuracy", "lr", "gradflow", "update", "activations", "dead"]
# small_cnn's leaves and what its layers record: the shape of a real cnn2 run
LAYERS = {
    "0": (16, 24),
    "1": (16, 24),
    "2": (16, 12),
    "3": (32, 8),
    "4": (32, 8),
    "5": (32, 4),
    "6": None,
    "7": None,
}
PARAMS = ["0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias"]


def synthetic_run(run_dir, epochs=50, records_per_epoch=47, seed=0):
    """A run directory shaped like 50 epochs of cnn2 on MNIST (937 steps an epoch, every 20th recorded)."""
    r = np.random.default_rng(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": 1,
        "every": 20,
        "layers": [{"name": n, "type": "?"} for n in LAYERS],
        "params": PARAMS,
        "config": {"model": "cnn2", "epochs": epochs},
        "digits": [3, 2, 1, 18],
        "digit_labels": [0, 1, 2, 3],
    }
    (run_dir / "run.json").write_text(json.dumps(meta))
    step = 0
    for epoch in range(1, epochs + 1):
        for _ in range(records_per_epoch):
            step += 20
            stat = {"mean": 0.1, "std": float(r.random()), "norm": float(r.random() + 0.1)}
            layers = {n: {"act": stat, "grad": stat, **({"dead": 0.1} if n in "14" else {})} for n in LAYERS}
            params = {
                p: {"norm": 1.0, "grad_norm": 0.1, "update_ratio": float(r.random() * 1e-3)} for p in PARAMS
            }
            telemetry.append_record(
                run_dir / "steps.jsonl",
                {
                    "step": step,
                    "epoch": epoch - 1,
                    "loss": 1 / step,
                    "accuracy": 0.9,
                    "lr": 0.01,
                    "layers": layers,
                    "params": params,
                },
            )
        telemetry.append_record(
            run_dir / "epochs.jsonl",
            {"epoch": epoch, "step": step, "train_loss": 0.1, "test_loss": 0.2, "test_accuracy": 0.97},
        )
        snap = {"filters/0": r.standard_normal((16, 1, 5, 5)), "filters/3": r.standard_normal((32, 16, 5, 5))}
        for n, shape in LAYERS.items():
            if shape:
                snap[f"maps/{n}"] = r.random((4, min(shape[0], 16), shape[1], shape[1]))
        np.savez_compressed(
            run_dir / telemetry.epoch_file(epoch), **{k: v.astype(np.float16) for k, v in snap.items()}
        )
    confusion = (np.eye(10) * 900 + r.integers(0, 5, (10, 10))).astype(int).tolist()
    worst = [
        {"index": i, "label": 1, "pred": 7, "confidence": 0.99 - i / 100, "p_label": 0.01} for i in range(16)
    ]
    (run_dir / "final.json").write_text(
        json.dumps({"step": step, "epoch": epochs, "confusion": confusion, "worst": worst})
    )
    np.savez_compressed(run_dir / "final.npz", worst_images=r.random((16, 1, 28, 28)).astype(np.float16))
    return run_dir


def test_decimate_keeps_the_newest_points_and_averages_the_old():
    xs = list(range(1000))
    dx, dy = report.decimate(xs, [float(x) for x in xs], max_points=100)
    assert len(dx) == len(dy) == 100
    assert dx[-50:] == xs[-50:]  # the newest half as recorded
    assert dy[0] == pytest.approx(np.mean(range(950 // 50)))  # the first bucket: a mean
    assert report.decimate([1, 2], [None, 3.0]) == ([1, 2], [None, 3.0])


def test_line_chart_draws_series_band_and_says_when_empty():
    empty = report.line_chart("k", "t", [("a", [], [])])
    assert 'data-chart="k"' in empty
    assert "not recorded yet" in empty
    svg = report.line_chart(
        "u", "ratios", [("w", [1, 2, 3], [1e-3, 2e-3, None])], log_y=True, band=(1e-4, 1e-2)
    )
    assert svg.count("<polyline") == 1  # the None ends the line; one run of two points
    assert 'fill="#2ca02c" fill-opacity="0.10"' in svg  # the healthy band


def test_tile_grid_lays_tiles_out_with_gaps():
    tiles = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    grid = report.tile_grid(tiles)
    assert grid.shape == (2 * 5 + 1, 3 * 6 + 1)
    assert grid[0].tolist() == [255] * grid.shape[1]  # the gap row
    assert grid[1, 1] == 0
    assert grid[4, 5] == 255  # each tile stretched to its own range


def _external_references(page):
    """src/href attributes, CSS url() and @import pointing anywhere but a data: URI or the page itself."""
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page)
    refs += re.findall(r"url\(([^)]*)\)", page) + re.findall(r"@import", page)
    return [r for r in refs if not r.startswith(("data:", "#"))]


def test_report_of_a_finished_run_has_every_section_and_no_external_reference(tmp_path):
    drive(telemetry.Recorder(tmp_path / "run", every=1), epochs=2)
    out = report.write_report(tmp_path / "run", tmp_path / "report.html")
    page = out.read_text()
    for key in CHARTS:
        assert f'data-chart="{key}"' in page
    assert "data-chart='confusion'" in page
    assert "data-chart='worst'" in page
    assert (
        page.count("data-key=") == len(np.load(tmp_path / "run" / "epoch_0002.npz").files) - 1
    )  # not digits
    assert "Content-Security-Policy" in page
    assert _external_references(page) == []
    embedded = json.loads(re.search(r"id='report-data'>(.*?)</script>", page).group(1))
    assert [e["epoch"] for e in embedded["epochs"]] == [1, 2]


def test_a_run_in_progress_shows_what_is_there(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    telemetry.append_record(run / "steps.jsonl", {"step": 20, "loss": 2.3, "accuracy": 0.1, "lr": 0.1})
    with open(run / "steps.jsonl", "ab") as f:
        f.write(b'{"step": 40, "lo')  # being written right now
    page = report.build_report(run)
    assert "No epoch finished yet" in page
    assert "Written when training finishes" in page
    assert "No graph recorded" in page
    assert page.count("not recorded yet") == 4  # gradient flow, update ratio, activations, dead ReLUs
    with pytest.raises(FileNotFoundError, match="no run directory"):
        report.build_report(tmp_path / "nowhere")


def test_pictures_cut_short_by_a_crash_count_as_missing(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    telemetry.append_record(run / "epochs.jsonl", {"epoch": 1, "step": 10, "test_accuracy": 0.5})
    (run / "epoch_0001.npz").write_bytes(b"")  # never flushed to disk (the recorder does not fsync)
    page = report.build_report(run)  # no error: the epoch has no pictures, as if not written yet
    assert "No epoch finished yet" in page


def test_fifty_epochs_of_every_layer_stay_a_few_megabytes(tmp_path):
    run = synthetic_run(tmp_path / "run")
    page = report.build_report(run)
    size = len(page.encode())
    assert size < 12e6, f"{size / 1e6:.1f} MB"
    # every chart series is decimated: 2350 recorded steps, at most MAX_POINTS points per line
    for points in re.findall(r'points="([^"]*)"', page):
        assert len(points.split()) <= report.MAX_POINTS


# ---- in a real browser ------------------------------------------------------------------------------------
def _not_blank(png_path):
    image = cv2.imread(str(png_path))
    assert image is not None
    colours = len(np.unique(image.reshape(-1, 3), axis=0))
    assert image.std() > 5, "the screenshot is (nearly) one colour"
    assert colours > 50


@pytest.mark.slow
@pytest.mark.needs("chromium", "dot")
def test_the_report_works_in_headless_chromium(tmp_path):
    drive(telemetry.Recorder(tmp_path / "run", every=1), epochs=2)
    page = report.write_report(tmp_path / "run", tmp_path / "report.html")
    nodes = json.loads((tmp_path / "run" / "graph_nodes.json").read_text())
    param = next(k for k, v in nodes.items() if v.get("name") == "0.weight")
    dom = browser.dump_dom(page, fragment=f"select={param}")  # the page clicks that node once loaded
    root = re.search(r"<html[^>]*>", dom).group(0)
    assert 'data-loaded="1"' in root
    assert 'data-errors="[]"' in root  # no script error, no console.error, no blocked request
    assert 'data-resources="[]"' in root  # nothing fetched
    assert re.search(r"<div id=\"graph\"><svg[^>]*viewBox", dom)
    for key in CHARTS:
        assert f'data-chart="{key}"' in dom
    panel = re.search(r'<div id="node-panel" data-node="(\w+)">(.*?)</div>', dom, re.S)
    assert panel is not None, "clicking the node did not fill the statistics panel"
    assert panel.group(1) == param
    assert "<h3>0.weight</h3>" in panel.group(2)
    assert "(8, 1, 3, 3)" in panel.group(2)
    assert "gradient" in panel.group(2)
    # the pictures docs/watching.md shows (examples/report_screenshots.py regenerates them from a real run)
    shots = browser.section_screenshots(page, tmp_path / "shots", node=param)
    assert [p.name for p in shots] == [f"report_{s}.png" for s in browser.SECTIONS]
    for shot in shots:
        _not_blank(shot)


@pytest.mark.needs("chromium")
def test_the_browser_check_sees_script_errors_and_requests(tmp_path):
    """The probe the report's test relies on reports a broken script and a blocked fetch."""
    page = report.build_report(synthetic_run(tmp_path / "run", epochs=1, records_per_epoch=2))
    page = page.replace(
        "</body>", "<script>noSuchFunction()</script><img src='http://127.0.0.1:9/x.png'></body>"
    )
    (tmp_path / "broken.html").write_text(page)
    root = re.search(r"<html[^>]*>", browser.dump_dom(tmp_path / "broken.html")).group(0)
    assert "noSuchFunction" in root
    assert "blocked http://127.0.0.1:9/x.png" in root


# ---- inline in Jupyter ------------------------------------------------------------------------------------
def test_curves_are_the_reports_charts_and_show_inline(tmp_path):
    import xml.etree.ElementTree as ET

    run = synthetic_run(tmp_path / "run", epochs=2, records_per_epoch=3)
    charts = report.curves(run)
    assert list(charts) == ["loss", "accuracy", "lr", "gradflow", "update", "activations", "dead"]
    page = report.build_report(run)
    for key in charts:  # the very SVG the page embeds, not a look-alike
        assert charts[key].svg in page
        assert f'data-chart="{key}"' in charts[key].svg
    inline = charts._repr_html_()
    assert inline.count('<svg class="chart"') == 7
    assert inline.startswith("<style>")
    assert "svg.chart text" in inline
    assert "<div class='charts'>" in inline
    one = charts["loss"]._repr_svg_()
    root = ET.fromstring(one)  # well-formed standalone SVG, with the page's text style inside
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.find("{http://www.w3.org/2000/svg}style").text.count("svg.chart text") == 1
    assert len(root.findall("{http://www.w3.org/2000/svg}polyline")) >= 2  # train batch, train epoch, test
    with pytest.raises(KeyError, match=r"report.curves: no chart 'nope'; the charts are \['loss'"):
        charts["nope"]
    with pytest.raises(FileNotFoundError, match=r"report.curves: no run directory"):
        report.curves(tmp_path / "nowhere")


def test_curves_of_a_run_that_recorded_nothing_yet_say_so(tmp_path):
    (tmp_path / "run").mkdir()
    charts = report.curves(tmp_path / "run")
    assert charts._repr_html_().count("not recorded yet") == 7


def _two_layer_model():
    from microgradcnn import nn

    conv = nn.Conv2d(1, 3, 3, rng=np.random.default_rng(1))
    return nn.Sequential(conv, nn.ReLU(), nn.Flatten()), conv


def test_feature_maps_show_one_layers_output_as_an_inline_png_grid():
    import microgradcnn as mg
    from microgradcnn import functional as F

    model, conv = _two_layer_model()
    model.train()
    x = np.random.default_rng(2).random((2, 1, 8, 8), dtype=np.float32)
    shown = report.feature_maps(model, "1", x, max_channels=2, zoom=4)
    want = np.maximum(F.conv2d(mg.Tensor(x), conv.weight, conv.bias).data, 0)[:, :2]
    np.testing.assert_allclose(shown.maps, want, rtol=1e-6)
    assert shown.grid.shape == (2 * 7 + 1, 2 * 7 + 1)  # 2 images x 2 channels of 6x6, 1-pixel gaps
    png = shown._repr_png_()
    decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(decoded[::4, ::4], shown.grid)  # zoom 4: square 4x4 pixels
    np.testing.assert_array_equal(decoded[3::4, 3::4], shown.grid)
    assert decoded.shape == (60, 60)
    inline = shown._repr_html_()
    assert "src='data:image/png;base64," in inline
    assert "width='60' height='60'" in inline  # 15 pixels x zoom 4
    assert "layer 1: 2 channel(s) of 2 image(s)" in inline
    assert "image-rendering: pixelated" in inline
    assert model.training  # the model's mode is restored and the hook gone
    assert not any(m._forward_hooks for m in model.modules())


def test_feature_maps_name_a_bad_layer():
    model, _ = _two_layer_model()
    x = np.zeros((1, 1, 8, 8), np.float32)
    with pytest.raises(KeyError, match=r"layer_outputs: no leaf module named \['9'\]"):
        report.feature_maps(model, "9", x)
    with pytest.raises(ValueError, match=r"report.feature_maps: layer '2' outputs \(1, 108\), not maps"):
        report.feature_maps(model, "2", x)
    with pytest.raises(ValueError, match="max_channels"):
        report.feature_maps(model, "0", x, max_channels=0)
