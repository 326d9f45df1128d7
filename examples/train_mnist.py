"""Train the tutorial's seed CNN on mnist5k with the library API (no CLI): the whole loop, written out.

Run: python examples/train_mnist.py [--quick]      (mnist5k needs: pip install "microgradcnn[data]")
Writes seed_cnn.npz here; then: microgradcnn predict seed_cnn.npz examples/digit7.png
"""

import os
import sys
import time

import numpy as np

import microgradcnn as mg
from microgradcnn import functional as F
from microgradcnn.checkpoint import save_checkpoint
from microgradcnn.data import iterate_batches, load_mnist5k, preprocess
from microgradcnn.models import seed_cnn
from microgradcnn.optim import SGD

quick = "--quick" in sys.argv or os.environ.get("MICROGRADCNN_EXAMPLE_QUICK") == "1"
train_x, train_y = load_mnist5k("train")  # uint8 (4000, 28, 28), int64 (4000,): 400 per digit
test_x, test_y = load_mnist5k("test")  # 1000 more, never trained on
if quick:  # a smoke test: 400 images, 1 epoch
    train_x, train_y = train_x[::10], train_y[::10]
epochs = 1 if quick else 8

rng = np.random.default_rng(0)  # one seed: the same weights and batch order every run
model = seed_cnn(rng=rng)  # Conv2d(1, 8, 3) -> MaxPool2d(2) -> Flatten -> Linear(1352, 10)
opt = SGD(model.parameters(), lr=0.05, momentum=0.9)
batches = iterate_batches(train_x, train_y, batch_size=32, rng=rng)  # reshuffled each epoch

for epoch in range(epochs):
    tic = time.perf_counter()
    for step, (x, y) in enumerate(batches):  # x float32 (32, 1, 28, 28) = pixels / 255 - 0.5
        opt.param_groups[0]["lr"] = 0.05 * 0.7 ** (epoch + step / len(batches))  # x0.7 per epoch
        loss = F.cross_entropy(model(mg.Tensor(x)), y)  # softmax cross-entropy, as the tutorial
        opt.zero_grad()
        loss.backward()
        opt.step()
    with mg.no_grad():  # evaluation records no graph
        logits = model(mg.Tensor(preprocess(test_x)))  # (1000, 10)
    accuracy = (logits.data.argmax(axis=1) == test_y).mean()
    seconds = time.perf_counter() - tic
    print(
        f"epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}, test accuracy {accuracy:.2%} ({seconds:.1f} s)"
    )

# config["model"] lets `microgradcnn evaluate/predict` rebuild the network from the file
save_checkpoint("seed_cnn.npz", model, opt, epoch=epochs, config={"model": "seed", "dataset": "mnist5k"})
print("saved seed_cnn.npz; try: microgradcnn predict seed_cnn.npz examples/digit7.png")
