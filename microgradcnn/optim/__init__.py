"""Optimizers and learning-rate schedules with PyTorch's names, update rules and state dicts.

``Optimizer``, ``SGD``, ``Adam``, ``AdamW`` and ``RMSprop`` live in ``optim.optimizer``;
``create_optimizer`` builds them by name, for a command line.

>>> import numpy as np
>>> import microgradcnn as mg
>>> from microgradcnn import nn, optim
>>> model = nn.Linear(3, 2, rng=np.random.default_rng(0))
>>> opt = optim.AdamW(model.parameters(), lr=0.1)
>>> model(mg.Tensor(np.ones((1, 3)))).sum().backward()
>>> opt.step()
>>> sorted(opt.state[model.weight])
['exp_avg', 'exp_avg_sq', 'step']
"""

from microgradcnn.optim.optimizer import (
    OPTIMIZERS,
    SGD,
    Adam,
    AdamW,
    Optimizer,
    RMSprop,
    create_optimizer,
)

__all__ = [
    "OPTIMIZERS",
    "SGD",
    "Adam",
    "AdamW",
    "Optimizer",
    "RMSprop",
    "create_optimizer",
]
