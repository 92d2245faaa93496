"""Reference schedulers that no installed package provides, as plain Python loops.

``CosineAnnealingWarmUpRestarts`` is the public torch scheduler of that name (the
``katsura-jp/pytorch-cosine-annealing-with-warmup`` implementation, as published);
``document_linear_decay`` is the linear-decay-with-hold loop optlib.linear_decay mirrors. Both
are shared by the parity and property tests.
"""

from __future__ import annotations

import math

import numpy as np
from parity import torch


class CosineAnnealingWarmUpRestarts(torch.optim.lr_scheduler.LRScheduler):
    """Transcribed from the seed document (its ``__init__`` / ``get_lr`` / ``step``)."""

    def __init__(self, optimizer, T_0, T_mult=1, eta_max=0.1, T_up=0, gamma=1.0, last_epoch=-1):
        if T_0 <= 0 or not isinstance(T_0, int):
            raise ValueError(f"Expected positive integer T_0, but got {T_0}")
        if T_mult < 1 or not isinstance(T_mult, int):
            raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult}")
        if T_up < 0 or not isinstance(T_up, int):
            raise ValueError(f"Expected positive integer T_up, but got {T_up}")
        self.T_0 = T_0
        self.T_mult = T_mult
        self.base_eta_max = eta_max
        self.eta_max = eta_max
        self.T_up = T_up
        self.T_i = T_0
        self.gamma = gamma
        self.cycle = 0
        self.T_cur = last_epoch
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.T_cur == -1:
            return self.base_lrs
        elif self.T_cur < self.T_up:
            return [
                (self.eta_max - base_lr) * self.T_cur / self.T_up + base_lr
                for base_lr in self.base_lrs
            ]
        else:
            return [
                base_lr
                + (self.eta_max - base_lr)
                * (1 + math.cos(math.pi * (self.T_cur - self.T_up) / (self.T_i - self.T_up)))
                / 2
                for base_lr in self.base_lrs
            ]

    def step(self, epoch=None):
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur = self.T_cur + 1
            if self.T_cur >= self.T_i:
                self.cycle += 1
                self.T_cur = self.T_cur - self.T_i
                self.T_i = (self.T_i - self.T_up) * self.T_mult + self.T_up
        else:
            raise NotImplementedError(
                "optlib models the step() loop only"
            )  # document's else-branch
        self.eta_max = self.base_eta_max * (self.gamma**self.cycle)
        self.last_epoch = math.floor(epoch)
        for param_group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            param_group["lr"] = lr


def document_linear_decay(initial_lr, final_lr, total_iterations, warmup_iterations, steps):
    """The document's example-3 loop (lr set before each update); past ``total_iterations``
    the loop has ended and the rate stays at ``final_lr``, the line's value there."""
    lrs = []
    for iteration in range(steps):
        if iteration >= total_iterations:
            lrs.append(final_lr)
            continue
        lr = initial_lr
        if iteration >= warmup_iterations:
            lr = initial_lr - (initial_lr - final_lr) * (
                (iteration - warmup_iterations) / (total_iterations - warmup_iterations)
            )
        lrs.append(lr)
    return np.asarray(lrs)
