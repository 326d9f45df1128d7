"""Train cnn2 on mnist5k with telemetry, write the report, and screenshot it for docs/watching.md.

Run: python examples/report_screenshots.py [--quick]
Writes the run to ./report_run, the report to ./report.html and, with Chromium installed, the screenshots
docs/img/report_*.png (with --quick: a tiny run, the screenshots in the working directory instead).
"""

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from microgradcnn import optim, report, telemetry, train
from microgradcnn.data import iterate_batches, load_mnist5k
from microgradcnn.models import small_cnn
from microgradcnn.report import browser

quick = "--quick" in sys.argv or os.environ.get("MICROGRADCNN_EXAMPLE_QUICK") == "1"
train_x, train_y = load_mnist5k("train")
test_x, test_y = load_mnist5k("test")
if quick:
    train_x, train_y, test_x, test_y = train_x[::20], train_y[::20], test_x[::10], test_y[::10]
epochs = 1 if quick else 6

rng = np.random.default_rng(0)
model = small_cnn(rng=rng)
opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
batches = iterate_batches(train_x, train_y, batch_size=32, rng=rng)
recorder = telemetry.Recorder("report_run", every=5)
recorder.start(model, test_x, test_y, config={"model": "cnn2", "dataset": "mnist5k", "epochs": epochs})
for epoch in range(epochs):  # what train.fit does with a recorder
    model.train()
    loss_sum = correct = 0
    for i, (x, y) in enumerate(batches):
        step = epoch * len(batches) + i  # steps taken so far
        opt.param_groups[0]["lr"] = 0.05 * 0.7 ** (step / len(batches))  # x0.7 per epoch
        loss, hits = train.train_step(model, opt, x, y)
        recorder.on_step(step + 1, loss, hits / len(y), opt.param_groups[0]["lr"])
        loss_sum, correct = loss_sum + loss * len(y), correct + hits
    metrics = train.evaluate(model, test_x, test_y)
    n = len(train_y)
    recorder.on_epoch(
        epoch + 1,
        {
            "train_loss": loss_sum / n,
            "train_accuracy": correct / n,
            "test_loss": metrics.loss,
            "test_accuracy": metrics.accuracy,
        },
    )
    print(f"epoch {epoch + 1}/{epochs}: test accuracy {metrics.accuracy:.2%}")
recorder.finish(model, test_x, test_y)
page = report.write_report("report_run", "report.html")
print(f"wrote {page} ({page.stat().st_size / 1e6:.2f} MB)")

if shutil.which("chromium") is None:
    print("Chromium is not installed (apt-get install chromium): no screenshots")
    sys.exit(0)
out = Path(".") if quick else Path(__file__).resolve().parents[1] / "docs" / "img"
nodes = json.loads((Path("report_run") / "graph_nodes.json").read_text())
node = next((k for k, v in nodes.items() if v.get("name") == "0.weight"), None)  # show a parameter's stats
for shot in browser.section_screenshots(page, out, node=node):
    print("wrote", shot)
