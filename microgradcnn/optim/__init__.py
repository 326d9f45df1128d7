"""Optimizers and learning-rate schedules with PyTorch's names, update rules and state dicts.

``Optimizer``, ``SGD``, ``Adam``, ``AdamW`` and ``RMSprop`` live in ``optim.optimizer``; the schedulers
(``StepLR``, ``CosineAnnealingLR``, ``OneCycleLR``) in ``optim.lr_scheduler``, as in ``torch.optim``.
``create_optimizer`` and ``lr_scheduler.create_scheduler`` build them by name, for a command line.

>>> import numpy as np
>>> from microgradcnn import nn, optim
>>> model = nn.Linear(3, 2, rng=np.random.default_rng(0))
>>> opt = optim.AdamW(model.parameters(), lr=0.1)
>>> schedule = optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
>>> lrs = []
>>> for _ in range(4):
...     opt.step()
...     schedule.step()
...     lrs.append(schedule.get_last_lr()[0])
>>> lrs
[0.1, 0.05, 0.05, 0.025]
"""

from microgradcnn.optim import lr_scheduler
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
    "lr_scheduler",
]
