"""Each optlib optimizer with its optax twin and its torch reference, configured alike.

``same_math`` says whether the optax twin computes the same update as optlib (and torch) up
to round-off; where it does not, ``note`` says how it differs and the twin is the closest
optax configuration (the timing comparison is still fair: same kind of work per element).
``stand_in`` marks the optimizers optax does not have at all (ASGD, StableAdamW, schedule-free
RAdam): their row times the nearest optax optimizer for scale, and the "optlib <= optax"
target is not judged on it (it does less work per element than the reference's algorithm).
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
      stand_in: optax has no such optimizer; the twin is a stand-in, not judged.
      problems: the problems it is timed on (``"stack"``: a stack of square matrices).
    """

    name: str
    optlib: Callable[[], optax.GradientTransformation]
    optax: Callable[[], optax.GradientTransformation]
    torch: Callable[[list[Any]], Any]
    torch_label: str
    same_math: bool
    note: str = ""
    stand_in: bool = False
    problems: tuple[str, ...] = ("matrix", "tree")


def _torch_optim(class_name: str, **kwargs) -> Callable[[list[Any]], Any]:
    def build(params):
        import torch

        return getattr(torch.optim, class_name)(params, foreach=True, **kwargs)

    return build


def _schedulefree(class_name: str, **kwargs) -> Callable[[list[Any]], Any]:
    def build(params):
        import schedulefree

        optimizer = getattr(schedulefree, class_name)(params, foreach=True, **kwargs)
        optimizer.train()  # the reference refuses to step in eval mode
        return optimizer

    return build


def _hf_adafactor(params):
    from transformers.optimization import Adafactor

    return Adafactor(params)  # HF defaults: relative_step, scale_parameter, no beta1


def _bitsandbytes(class_name: str, **kwargs) -> Callable[[list[Any]], Any]:
    def build(params):
        import warnings

        import bitsandbytes

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return getattr(bitsandbytes.optim, class_name)(params, optim_bits=32, **kwargs)

    return build


def _optimi_stable_adamw(params):
    import warnings

    from optimi import StableAdamW

    with warnings.catch_warnings():  # foreach is deprecated in favour of (GPU-only) triton
        warnings.simplefilter("ignore")
        return StableAdamW(params, lr=1e-3, foreach=True, triton=False)


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
        "lion",
        lambda: optlib.lion(1e-4, weight_decay=1e-2),
        lambda: optax.lion(1e-4, weight_decay=1e-2),
        _bitsandbytes("Lion", lr=1e-4, weight_decay=1e-2),
        "bitsandbytes.optim.Lion(optim_bits=32) (Trainer's lion_32bit; no foreach)",
        True,
    ),
    Twin(
        "ademamix",
        lambda: optlib.ademamix(1e-3),
        lambda: optax.contrib.ademamix(1e-3, alpha=5.0, weight_decay=1e-2),
        _bitsandbytes("AdEMAMix", lr=1e-3),
        "bitsandbytes.optim.AdEMAMix(optim_bits=32) (Trainer's ademamix; no foreach)",
        True,
        "optax.contrib.ademamix: same update for constant alpha/beta3 (no t_alpha/t_beta3)",
    ),
    Twin(
        "stable_adamw",
        lambda: optlib.stable_adamw(1e-3),
        lambda: optax.adamw(1e-3, b2=0.99, eps=1e-6, weight_decay=1e-2),
        _optimi_stable_adamw,
        "optimi.StableAdamW(foreach=True) (Trainer's stable_adamw)",
        False,
        "optax.adamw: no per-tensor update-RMS clipping of the lr; Adam's bias corrections "
        "instead of debiased betas (the same moments)",
        stand_in=True,
    ),
    Twin(
        "radam",
        lambda: optlib.radam(1e-3),
        lambda: optax.radam(1e-3),
        _torch_optim("RAdam", lr=1e-3),
        "torch.optim.RAdam(foreach=True)",
        False,
        "optax.radam: eps added to sqrt(v_hat) instead of sqrt(v) (differs from the first "
        "rectified step, step 6), rectifies from rho_t >= 5 instead of > 5",
    ),
    Twin(
        "adamax",
        lambda: optlib.adamax(2e-3),
        lambda: optax.adamax(2e-3),
        _torch_optim("Adamax", lr=2e-3),
        "torch.optim.Adamax(foreach=True)",
        True,
    ),
    Twin(
        "rprop",
        lambda: optlib.rprop(1e-2),
        lambda: optax.rprop(1e-2),
        _torch_optim("Rprop", lr=1e-2),
        "torch.optim.Rprop(foreach=True)",
        False,
        "optax.rprop: applies the previous step's size and sign (first update 0; torch moves "
        "by lr), no clip when g * prev == 0",
    ),
    Twin(
        "asgd",
        lambda: optlib.asgd(1e-2),
        lambda: optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(1e-2)),
        _torch_optim("ASGD", lr=1e-2),
        "torch.optim.ASGD(foreach=True)",
        False,
        "optax has no ASGD: SGD with lambd as weight decay, no eta decay, no ax average",
        stand_in=True,
    ),
    Twin(
        "torch_adafactor",
        lambda: optlib.torch_adafactor(1e-2),
        lambda: optax.adafactor(1e-2, min_dim_size_to_factor=1),
        _torch_optim("Adafactor", lr=1e-2),
        "torch.optim.Adafactor(foreach=True)",
        False,
        "optax.adafactor(min_dim_size_to_factor=1): factors the two largest dims, eps added "
        "to g**2, fixed lr instead of torch's min(lr, 1/sqrt(t))",
    ),
    Twin(
        "schedule_free_adamw",
        lambda: optlib.schedule_free_adamw(2.5e-3, weight_decay=1e-2),
        lambda: optax.contrib.schedule_free_adamw(2.5e-3, weight_decay=1e-2),
        _schedulefree("AdamWScheduleFree", lr=2.5e-3, weight_decay=1e-2),
        "schedulefree.AdamWScheduleFree(foreach=True)",
        True,
        "same arithmetic without warm-up (optax recomputes x each step; with warmup_steps "
        "its z step lags the warm-up by one step; no r)",
    ),
    Twin(
        "schedule_free_sgd",
        lambda: optlib.schedule_free_sgd(1e-2),
        lambda: optax.contrib.schedule_free_sgd(1e-2),
        _schedulefree("SGDScheduleFree", lr=1e-2),
        "schedulefree.SGDScheduleFree(foreach=True)",
        True,
        "same arithmetic without warm-up (as schedule_free_adamw)",
    ),
    Twin(
        "schedule_free_radam",
        lambda: optlib.schedule_free_radam(2.5e-3),
        lambda: optax.contrib.schedule_free_adamw(2.5e-3),
        _schedulefree("RAdamScheduleFree", lr=2.5e-3),
        "schedulefree.RAdamScheduleFree(foreach=True)",
        False,
        "optax has no schedule-free RAdam: schedule_free_adamw (no rectification)",
        stand_in=True,
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
        problems=("matrix", "tree", "stack"),
    ),
)

TWINS_BY_NAME = {twin.name: twin for twin in TWINS}
