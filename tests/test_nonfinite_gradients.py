"""NaN and Inf gradient entries give each reference's parameters (float64, four steps).

A gradient with a NaN and an Inf entry, then one with a -Inf entry, then a finite one: after
every step the parameters have NaN exactly where the reference's have NaN, the same
infinities, and the finite entries agree to float64 rounding. This pins the references'
rules rather than optlib's taste: torch's ``sign`` of NaN is 0 (Rprop, Lion), optimi clips
StableAdamW's rate with Python's ``max(1, rms)`` (1 for a NaN rms), and a NaN in a moment
stays in that entry only. ASGD gets NaN entries only: once a parameter is infinite, torch's
in-place ``p.mul_(1 - lambd * eta)`` keeps it infinite where optax's update ``inf - inf`` is
NaN (documented in the README's deviations).
"""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from parity import torch_default_dtype

import optlib

schedulefree = pytest.importorskip("schedulefree", reason="the schedule-free references")
lion_pytorch = pytest.importorskip("lion_pytorch", reason="the Lion reference")
optimi = pytest.importorskip("optimi", reason="the StableAdamW reference (torch-optimi)")
pytest.importorskip("bitsandbytes", reason="the AdEMAMix reference")
transformers_optimization = pytest.importorskip("transformers.optimization")
from bitsandbytes.optim.ademamix import _ReferenceAdEMAMix  # noqa: E402

T = torch.optim
CASES = {  # name -> (reference on a list of tensors, optlib optimizer)
    "sgd": (lambda p: T.SGD(p, lr=0.1, momentum=0.9), lambda: optlib.sgd(0.1, momentum=0.9)),
    "sgd_nesterov_decay": (
        lambda p: T.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
        lambda: optlib.sgd(0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
    ),
    "adam": (lambda p: T.Adam(p, lr=0.1), lambda: optlib.adam(0.1)),
    "amsgrad": (lambda p: T.Adam(p, lr=0.1, amsgrad=True), lambda: optlib.adam(0.1, amsgrad=True)),
    "adamw": (lambda p: T.AdamW(p, lr=0.1), lambda: optlib.adamw(0.1)),
    "adagrad": (lambda p: T.Adagrad(p, lr=0.1), lambda: optlib.adagrad(0.1)),
    "rmsprop_centered_momentum": (
        lambda p: T.RMSprop(p, lr=0.01, momentum=0.9, centered=True),
        lambda: optlib.rmsprop(0.01, momentum=0.9, centered=True),
    ),
    "adadelta": (lambda p: T.Adadelta(p, lr=1.0), lambda: optlib.adadelta(1.0)),
    "nadam": (lambda p: T.NAdam(p, lr=0.1), lambda: optlib.nadam(0.1)),
    "radam": (lambda p: T.RAdam(p, lr=0.1), lambda: optlib.radam(0.1)),
    "adamax": (lambda p: T.Adamax(p, lr=0.1), lambda: optlib.adamax(0.1)),
    "asgd": (lambda p: T.ASGD(p, lr=0.1, t0=1), lambda: optlib.asgd(0.1, t0=1)),
    "rprop": (lambda p: T.Rprop(p, lr=0.1), lambda: optlib.rprop(0.1)),
    "torch_adafactor": (lambda p: T.Adafactor(p, lr=0.1), lambda: optlib.torch_adafactor(0.1)),
    "hf_adafactor": (
        lambda p: transformers_optimization.Adafactor(p),
        lambda: optlib.adafactor(),
    ),
    "schedule_free_adamw": (
        lambda p: schedulefree.AdamWScheduleFree(p, lr=0.1),
        lambda: optlib.schedule_free_adamw(0.1),
    ),
    "schedule_free_sgd": (
        lambda p: schedulefree.SGDScheduleFree(p, lr=0.1),
        lambda: optlib.schedule_free_sgd(0.1),
    ),
    "schedule_free_radam": (
        lambda p: schedulefree.RAdamScheduleFree(p, lr=0.1),
        lambda: optlib.schedule_free_radam(0.1),
    ),
    "lion": (lambda p: lion_pytorch.Lion(p, lr=0.1), lambda: optlib.lion(0.1)),
    "ademamix": (lambda p: _ReferenceAdEMAMix(p, lr=0.1), lambda: optlib.ademamix(0.1)),
    "stable_adamw": (
        lambda p: optimi.StableAdamW(p, lr=0.1, foreach=False, triton=False),
        lambda: optlib.stable_adamw(0.1),
    ),
}
NAN_ONLY = {"asgd"}  # see the module docstring


def _gradients(name: str) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    gradients = [rng.standard_normal((3, 4)) for _ in range(4)]
    gradients[1][0, 0] = np.nan
    gradients[1][1, 2] = np.nan if name in NAN_ONLY else np.inf
    gradients[2][2, 3] = np.nan if name in NAN_ONLY else -np.inf
    return gradients


@pytest.mark.parametrize("name", list(CASES))
def test_nonfinite_gradient_entries_give_the_references_parameters(name, x64):
    make_reference, make_optlib = CASES[name]
    p0 = np.random.default_rng(1).standard_normal((3, 4))
    reference = torch.tensor(p0, dtype=torch.float64, requires_grad=True)
    with warnings.catch_warnings(), torch_default_dtype(torch.float64):
        warnings.simplefilter("ignore")
        optimizer = make_reference([reference])
    if hasattr(optimizer, "train"):
        optimizer.train()  # schedule-free references refuse to step in eval mode
    tx = make_optlib()
    params = jnp.asarray(p0)
    state = tx.init(params)
    step = jax_step(tx)
    for k, gradient in enumerate(_gradients(name)):
        reference.grad = torch.tensor(gradient, dtype=torch.float64)
        with torch_default_dtype(torch.float64):  # torch's scalar state (NAdam's mu_product)
            optimizer.step()
        params, state = step(params, state, jnp.asarray(gradient))
        expected, ours = reference.detach().numpy(), np.asarray(params)
        where = f"{name}, step {k + 1}"
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(expected), err_msg=where)
        np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=0, err_msg=where)


def jax_step(tx: optax.GradientTransformation):
    def step(params, state, gradient):
        updates, state = tx.update(gradient, state, params)
        return optax.apply_updates(params, updates), state

    return step
