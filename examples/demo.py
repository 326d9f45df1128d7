"""A first taste: build a small expression, run backward, print the gradients.

Run: python examples/demo.py
"""

import numpy as np

import microgradcnn as mg

x = mg.Tensor(np.array([[1.0, -2.0], [3.0, 0.5]], dtype=np.float32), requires_grad=True)
w = mg.Tensor(np.array([0.5, -1.0], dtype=np.float32), requires_grad=True)
y = ((x @ w).tanh() * 2.0 + x.sum(axis=1)).relu().mean()
y.backward()
print("y      =", y.item())
print("dy/dx  =\n", x.grad)
print("dy/dw  =", w.grad)
