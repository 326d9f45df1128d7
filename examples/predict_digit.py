"""Classify digit images with a trained checkpoint, from Python: what `microgradcnn predict` does.

Run: python examples/predict_digit.py [CHECKPOINT [IMAGE ...]]
Defaults: seed_cnn.npz (made by `microgradcnn train` or examples/train_mnist.py) and examples/digit7.png.
With --quick and no checkpoint present it first trains a small one for a few seconds (used by the tests).
"""

import os
import sys
from pathlib import Path

import numpy as np

import microgradcnn as mg
from microgradcnn import functional as F
from microgradcnn.checkpoint import load_checkpoint, restore_model
from microgradcnn.image import load_digit_image

args = [a for a in sys.argv[1:] if a != "--quick"]
quick = "--quick" in sys.argv or os.environ.get("MICROGRADCNN_EXAMPLE_QUICK") == "1"
checkpoint = Path(args[0] if args else "seed_cnn.npz")
images = args[1:] or [str(Path(__file__).with_name("digit7.png"))]

if quick and not checkpoint.exists():
    from microgradcnn.train import TrainConfig, fit

    fit(TrainConfig(epochs=1, limit=500), out=checkpoint, progress=False)
if not checkpoint.exists():
    sys.exit(f"{checkpoint} not found: train one first with `microgradcnn train` or examples/train_mnist.py")

model = restore_model(load_checkpoint(checkpoint))  # the network named in the file, with its weights
# Each image: grayscale, inverted if dark-on-light, cropped, fitted to 20x20, centred in 28x28, x/255 - 0.5
x = np.stack([load_digit_image(path) for path in images])  # float32 (N, 1, 28, 28)
with mg.no_grad():
    probs = F.softmax(model(mg.Tensor(x)), axis=1).data  # (N, 10)
for path, p in zip(images, probs, strict=True):
    top3 = ", ".join(f"{d}: {p[d]:.1%}" for d in np.argsort(p)[::-1][:3])
    print(f"{path}: digit {p.argmax()}   (top 3: {top3})")
