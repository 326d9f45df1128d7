"""Make ``examples/digit7.png``: a real handwritten 7 from the mnist5k *test* split, drawn as a scan would be.

The digit is upscaled to 140x140 and printed dark on light-grey paper with a little noise, the opposite
polarity of MNIST, so that ``microgradcnn predict`` exercises all of ``microgradcnn.image.load_digit_image``
(inversion, background removal, size normalisation, centring). It is never in the training split.

Run: python examples/make_digit7.py [OUT]   (needs the data extra: pip install "microgradcnn[data]")
OUT defaults to examples/digit7.png; with --quick (the tests) to ./digit7.png, leaving the repository alone.
"""

import os
import sys
from pathlib import Path

import cv2
import numpy as np

from microgradcnn import data

images, labels = data.load_mnist5k("test")
digit = images[np.flatnonzero(labels == 7)[0]]  # the first 7 of the test split: a fixed, reproducible choice
big = cv2.resize(digit, (140, 140), interpolation=cv2.INTER_CUBIC).astype(np.float32)
paper = 235.0 - big * (200.0 / 255.0)  # dark ink (35) on light paper (235)
noise = np.random.default_rng(7).normal(0.0, 4.0, paper.shape)
scan = np.clip(paper + noise, 0, 255).astype(np.uint8)
args = [a for a in sys.argv[1:] if a != "--quick"]
quick = "--quick" in sys.argv or os.environ.get("MICROGRADCNN_EXAMPLE_QUICK") == "1"
out = Path(args[0]) if args else Path("digit7.png") if quick else Path(__file__).with_name("digit7.png")
ok, png = cv2.imencode(".png", scan)
assert ok, "OpenCV could not encode the PNG"
out.write_bytes(png.tobytes())
print(f"wrote {out} ({scan.shape[1]}x{scan.shape[0]})")
