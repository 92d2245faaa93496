"""Each optlib optimizer with its optax twin and its torch reference, configured alike.

``same_math`` says whether the optax twin computes the same update as optlib (and torch) up
to round-off; where it does not, ``note`` says how it differs and the twin is the closest
optax configuration (the timing comparison is still fair: same kind of work per element).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import optax

import optlib


@dataclasses.dataclass(frozen=True)
class Twin:
    """One row of the update-time table.

    Attributes:
      name: row label.
      optlib: builds the optlib optimizer.
      optax: builds the optax twin.
      torch: builds the reference optimizer from a list of torch parameters.
      torch_label: what ``torch`` is.
      same_math: whether the optax twin's update is optlib's (up to round-off).
      note: how the optax twin differs, when it does.
    """

    name: str
    optlib: Callable[[], optax.GradientTransformation]
    optax: Callable[[], optax.GradientTransformation]
    torch: Callable[[list[Any]], Any]
    torch_label: str
    same_math: bool
    note: str = ""


def _torch_optim(class_name: str, **kwargs) -> Callable[[list[Any]], Any]:
    def build(params):
        import torch

        return getattr(torch.optim, class_name)(params, foreach=True, **kwargs)

    return build


def _hf_adafactor(params):
    from transformers.optimization import Adafactor

    return Adafactor(params)  # HF defaults: relative_step, scale_parameter, no beta1


def _by_ndim(params):
    """``"muon"`` for the 2-D leaves, ``"adam"`` for the others (optax.contrib.muon's split)."""
    return jax.tree.map(lambda p: "muon" if p.ndim == 2 else "adam", params)


def _optlib_muon():
    return optlib.param_groups(
        {"muon": optlib.muon(2e-2), "adam": optlib.adamw(2e-2, weight_decay=0.0)}, _by_ndim
    )


class _TorchMuonAdamW:
    """torch.optim.Muon on the 2-D tensors and AdamW on the others (torch's Muon recipe)."""

    def __init__(self, params):
        import torch

        matrices = [p for p in params if p.ndim == 2]
        others = [p for p in params if p.ndim != 2]
        self.optimizers = [torch.optim.Muon(matrices, lr=2e-2)] if matrices else []
        if others:
            self.optimizers.append(
                torch.optim.AdamW(others, lr=2e-2, weight_decay=0.0, foreach=True)
            )

    def step(self):
        for optimizer in self.optimizers:
            optimizer.step()

    @property
    def state(self):
        return {p: s for optimizer in self.optimizers for p, s in optimizer.state.items()}


TWINS: tuple[Twin, ...] = (
    Twin(
        "adam",
        lambda: optlib.adam(1e-3),
        lambda: optax.adam(1e-3),
        _torch_optim("Adam", lr=1e-3),
        "torch.optim.Adam(foreach=True)",
        True,
    ),
    Twin(
        "adamw",
        lambda: optlib.adamw(1e-3, weight_decay=1e-2),
        lambda: optax.adamw(1e-3, weight_decay=1e-2),
        _torch_optim("AdamW", lr=1e-3, weight_decay=1e-2),
        "torch.optim.AdamW(foreach=True)",
        True,
    ),
    Twin(
        "sgd_momentum",
        lambda: optlib.sgd(1e-3, momentum=0.9),
        lambda: optax.sgd(1e-3, momentum=0.9),
        _torch_optim("SGD", lr=1e-3, momentum=0.9),
        "torch.optim.SGD(momentum=0.9, foreach=True)",
        True,
        "optax.trace == torch's buffer when dampening=0",
    ),
    Twin(
        "adagrad",
        lambda: optlib.adagrad(1e-2),
        lambda: optax.adagrad(1e-2, initial_accumulator_value=0.0, eps=1e-10),
        _torch_optim("Adagrad", lr=1e-2),
        "torch.optim.Adagrad(foreach=True)",
        False,
        "optax: eps inside the square root, no lr_decay",
    ),
    Twin(
        "rmsprop",
        lambda: optlib.rmsprop(1e-2),
        lambda: optax.rmsprop(1e-2, decay=0.99, eps=1e-8, eps_in_sqrt=False),
        _torch_optim("RMSprop", lr=1e-2),
        "torch.optim.RMSprop(foreach=True)",
        True,
        "optax.rmsprop(eps_in_sqrt=False)",
    ),
    Twin(
        "adadelta",
        lambda: optlib.adadelta(1.0),
        lambda: optax.adadelta(1.0, rho=0.9, eps=1e-6),
        _torch_optim("Adadelta", lr=1.0),
        "torch.optim.Adadelta(foreach=True)",
        True,
    ),
    Twin(
        "nadam",
        lambda: optlib.nadam(2e-3),
        lambda: optax.nadam(2e-3),
        _torch_optim("NAdam", lr=2e-3),
        "torch.optim.NAdam(foreach=True)",
        False,
        "optax.nadam: no momentum_decay schedule (mu_t), different bias correction",
    ),
    Twin(
        "adafactor",
        lambda: optlib.adafactor(),
        lambda: optax.adafactor(1e-2, min_dim_size_to_factor=1),
        _hf_adafactor,
        "transformers Adafactor (torch, no foreach)",
        False,
        "optax.adafactor(min_dim_size_to_factor=1): factors the two largest dims, eps "
        "and param scale placed differently, fixed lr instead of HF's relative step",
    ),
    Twin(
        "muon",
        _optlib_muon,
        lambda: optax.contrib.muon(2e-2, weight_decay=0.1),
        _TorchMuonAdamW,
        "torch.optim.Muon on 2-D + AdamW(foreach=True) on the rest (Muon has no foreach)",
        False,
        "optax.contrib.muon: lr ratio sqrt(max(1, cols/rows)) (torch: rows/cols), eps 1e-8 "
        "added to the norm, Newton-Schulz in float32 (optlib/torch: bfloat16), bias-corrected "
        "momentum; Muon on the 2-D leaves, AdamW on the rest in all three",
    ),
)

TWINS_BY_NAME = {twin.name: twin for twin in TWINS}
