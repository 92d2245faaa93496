"""``statistics_dtype=None`` on bf16/fp16 parameters: the schedule-free optimizers and Muon
against their references (issue 18), 100 steps on the problem of ``low_precision_runs``.

* Schedule-free (``schedulefree``'s ``AdamWScheduleFree`` / ``SGDScheduleFree`` /
  ``RAdamScheduleFree``, ``foreach=False``, train mode, so the parameters are ``y``): the
  parameters and the state (``z``, ``exp_avg_sq``) equal the reference's bit for bit, NaN
  and infinities included (fp16 rounds ``eps=1e-8`` to 0, so where ``exp_avg_sq``
  underflows the normalised gradient is infinite, in both), with weight decay, warm-up and
  RAdam's SGD phase; so do the evaluation points (the reference's ``eval()``, optlib's
  ``schedule_free_eval_params``).
* Muon (``torch.optim.Muon``, given the matrix only, as it takes 2-D parameters): the
  momentum buffer equals torch's bit for bit; with torch's Muon running optlib's
  Newton–Schulz iteration on its own input, the parameters do too, so every other rounding
  of the step is torch's. With each side's own iteration they are not bit-identical: the
  bf16 products accumulate in float32 in oneDNN's order in torch and XLA's in optlib, now
  and then an entry of a product rounds to the neighbouring bf16 value, and the iteration
  and the parameter carry it on. That distance is measured (printed with ``-s``) and
  bounded.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from low_precision_runs import DTYPES, SHAPES, assert_same_bits, optlib_run, problem, torch_run

import optlib

NONE = {"statistics_dtype": None}


def _torch_muon():
    """torch's Muon module (its Newton–Schulz helper is patched by some tests)."""
    return pytest.importorskip("torch.optim._muon", reason="torch.optim.Muon (torch >= 2.9)")


def _schedule_free(name, **kwargs):
    def make(params):
        schedulefree = pytest.importorskip("schedulefree", reason="the schedule-free references")
        optimizer = getattr(schedulefree, name)(params, foreach=False, **kwargs)
        optimizer.train()
        return optimizer

    return make


_Z = {"z": lambda s, k: s["schedule_free"].z[k]}
_Z_AND_SQ = {**_Z, "exp_avg_sq": lambda s, k: s["second_moment"].exp_avg_sq[k]}

# name: (reference, optlib optimizer with statistics_dtype=None, state fields)
SCHEDULE_FREE = {
    "schedule_free_adamw": (
        _schedule_free("AdamWScheduleFree", lr=1e-2),
        lambda: optlib.schedule_free_adamw(1e-2, **NONE),
        _Z_AND_SQ,
    ),
    "schedule_free_adamw_weight_decay_warmup": (
        _schedule_free("AdamWScheduleFree", lr=1e-2, weight_decay=0.1, warmup_steps=10),
        lambda: optlib.schedule_free_adamw(1e-2, weight_decay=0.1, warmup_steps=10, **NONE),
        _Z_AND_SQ,
    ),
    "schedule_free_adamw_r_weight_lr_power": (
        _schedule_free(
            "AdamWScheduleFree", lr=1e-1, betas=(0.95, 0.99), r=1.0, weight_lr_power=1.0
        ),
        lambda: optlib.schedule_free_adamw(
            1e-1, betas=(0.95, 0.99), r=1.0, weight_lr_power=1.0, **NONE
        ),
        _Z_AND_SQ,
    ),
    "schedule_free_sgd": (
        _schedule_free("SGDScheduleFree", lr=1e-2),
        lambda: optlib.schedule_free_sgd(1e-2, **NONE),
        _Z,
    ),
    "schedule_free_sgd_weight_decay_warmup": (
        _schedule_free("SGDScheduleFree", lr=0.3, momentum=0.95, weight_decay=0.1, warmup_steps=7),
        lambda: optlib.schedule_free_sgd(
            0.3, momentum=0.95, weight_decay=0.1, warmup_steps=7, **NONE
        ),
        _Z,
    ),
    "schedule_free_radam": (
        _schedule_free("RAdamScheduleFree", lr=1e-2),
        lambda: optlib.schedule_free_radam(1e-2, **NONE),
        _Z_AND_SQ,
    ),
    "schedule_free_radam_weight_decay_sgd_phase": (
        _schedule_free("RAdamScheduleFree", lr=3e-2, weight_decay=0.2, silent_sgd_phase=False),
        lambda: optlib.schedule_free_radam(3e-2, weight_decay=0.2, silent_sgd_phase=False, **NONE),
        _Z_AND_SQ,
    ),
}


def _with_eval_points():
    """``tensors_of`` for ``torch_run``: the reference's ``eval()`` points ``x`` as state
    ``"x"``; the parameters are put back to ``y`` afterwards (``torch_run`` reads them
    last)."""
    points = {}

    def tensors_of(optimizer, k, p):
        if not points:
            params = [q for group in optimizer.param_groups for q in group["params"]]
            trained = [q.detach().clone() for q in params]
            optimizer.eval()
            for q, y in zip(params, trained):
                points[id(q)] = q.detach().float().numpy()
                q.data.copy_(y)
        return {"x": points[id(p)]}

    return tensors_of


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", list(SCHEDULE_FREE))
def test_schedule_free_equals_the_reference_bit_for_bit(name, dtype):
    make_reference, make_optlib, fields = SCHEDULE_FREE[name]
    jax_dtype, torch_dtype = DTYPES[dtype]
    reference = torch_run(make_reference, torch_dtype, tensors_of=_with_eval_points())
    ours, state = optlib_run(make_optlib(), jax_dtype)
    assert_same_bits(f"{name} {dtype}", ours, reference, state, fields)
    params = {k: jnp.asarray(v).astype(jax_dtype) for k, v in ours.items()}  # exact
    points = optlib.schedule_free_eval_params(params, state)
    for k in SHAPES:
        np.testing.assert_array_equal(
            np.asarray(points[k].astype(jnp.float32)),
            reference[1][k]["x"],
            err_msg=f"{name} {dtype}: eval point x[{k}]",
        )


# ---------------------------------------------------------------------------------------------
# Muon: the matrix only (torch's Muon takes 2-D parameters); the bias stays put.

# name: (torch keyword arguments, dtypes). torch 2.13 normalises a bf16 parameter's buffer in
# place when nesterov=False (grad.bfloat16() returns the buffer itself), so that row is fp16.
MUON = {
    "muon": ({"lr": 2e-2}, list(DTYPES)),
    "muon_match_rms_adamw_weight_decay": (
        {"lr": 2e-2, "adjust_lr_fn": "match_rms_adamw", "weight_decay": 0.5, "momentum": 0.9},
        list(DTYPES),
    ),
    "muon_no_nesterov": ({"lr": 2e-2, "nesterov": False}, ["float16"]),
}
MUON_ROWS = [(name, dtype) for name, (_, dtypes) in MUON.items() for dtype in dtypes]


def _muon_runs(name, dtype):
    """``(reference, ours, momentum buffer)`` after 100 steps of the matrix."""
    kwargs = MUON[name][0]
    jax_dtype, torch_dtype = DTYPES[dtype]
    _torch_muon()
    reference = torch_run(lambda p: torch.optim.Muon(p[:1], **kwargs), torch_dtype)
    options = {key: value for key, value in kwargs.items() if key != "lr"}
    tx = optlib.param_groups(
        {"muon": optlib.muon(kwargs["lr"], **options, **NONE), "frozen": optax.set_to_zero()},
        lambda params: {"w": "muon", "b": "frozen"},
    )
    ours, state = optlib_run(tx, jax_dtype)
    buffer = state.inner_states["muon"].inner_state["momentum"].momentum_buffer["w"]
    return reference, ours, np.asarray(buffer.astype(jnp.float32))


@pytest.fixture
def optlib_newton_schulz_in_torch(monkeypatch):
    """torch's Muon with optlib's Newton–Schulz iteration (jitted, the default bf16) on its
    own input, in place of ``_zeropower_via_newtonschulz``; the rest of torch's step runs
    unchanged."""
    iterate = jax.jit(optlib.newton_schulz, static_argnums=(1, 2, 3))
    dtypes = {torch.bfloat16: jnp.bfloat16, torch.float16: jnp.float16}

    def newton_schulz(grad, ns_coefficients, ns_steps, eps):
        x = jnp.asarray(grad.float().numpy()).astype(dtypes[grad.dtype])  # exact
        result = iterate(x, tuple(ns_coefficients), ns_steps, eps)
        return torch.tensor(np.asarray(result.astype(jnp.float32))).bfloat16()  # exact

    monkeypatch.setattr(_torch_muon(), "_zeropower_via_newtonschulz", newton_schulz)


@pytest.mark.parametrize(("name", "dtype"), MUON_ROWS)
def test_muon_momentum_buffer_equals_torch_bit_for_bit(name, dtype):
    """The buffer does not depend on the parameters (the gradients are given): torch's two
    ``lerp``s, each rounded, whatever the Newton–Schulz iteration does."""
    reference, _, buffer = _muon_runs(name, dtype)
    np.testing.assert_array_equal(
        buffer, reference[1]["w"]["momentum_buffer"], err_msg=f"{name} {dtype}"
    )


@pytest.mark.parametrize(("name", "dtype"), MUON_ROWS)
def test_muon_equals_torch_bit_for_bit_given_the_same_newton_schulz(
    name, dtype, optlib_newton_schulz_in_torch
):
    """Everything but the iteration is torch's arithmetic: the Nesterov look-ahead, the
    conversion to bf16, the decoupled decay ``p.mul_(1 - lr * wd)`` and the step
    ``p.add_(O, alpha=-lr * ratio)`` (alpha rounded to bf16 for a bf16 parameter, float32
    for a fp16 one, whose ``add_`` of a bf16 ``O`` computes in float32)."""
    reference, ours, buffer = _muon_runs(name, dtype)
    np.testing.assert_array_equal(ours["w"], reference[0]["w"], err_msg=f"{name} {dtype}")
    np.testing.assert_array_equal(ours["b"], reference[0]["b"])  # untouched on both sides
    np.testing.assert_array_equal(buffer, reference[1]["w"]["momentum_buffer"])


# Bounds on the measured distance with each side's own iteration (torch 2.13 CPU; measured:
# bf16 21.9% of the matrix entries differ, the largest by 0.071 of the largest movement;
# fp16 8.4% and 0.0023). A different oneDNN kernel (another CPU) sums in another order.
MUON_BOUNDS = {"bfloat16": (0.35, 0.15), "float16": (0.15, 0.01)}


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_muon_distance_to_torch_with_its_own_newton_schulz_is_measured(dtype, monkeypatch):
    """Measured (printed with ``-s``): the fraction of the matrix's entries that differ from
    torch's after 100 steps, the largest difference relative to the largest movement, and
    how often the two iterations differ on the same input (fraction of steps, mean fraction
    of entries of the result)."""
    torch_muon = _torch_muon()
    iterate = jax.jit(optlib.newton_schulz)
    original = torch_muon._zeropower_via_newtonschulz
    differing = []

    def recording(grad, ns_coefficients, ns_steps, eps):
        x = jnp.asarray(grad.float().numpy()).astype(DTYPES[dtype][0])
        ours = np.asarray(iterate(x).astype(jnp.float32))
        result = original(grad, ns_coefficients, ns_steps, eps)
        differing.append(np.mean(ours != result.float().numpy()))
        return result

    monkeypatch.setattr(torch_muon, "_zeropower_via_newtonschulz", recording)
    reference, ours, _ = _muon_runs("muon", dtype)
    start = problem()[0]["w"]
    movement = np.max(np.abs(reference[0]["w"] - start))
    differ = np.mean(ours["w"] != reference[0]["w"])
    relative = np.max(np.abs(ours["w"] - reference[0]["w"])) / movement
    steps = np.mean(np.asarray(differing) > 0)
    print(
        f"\nmuon {dtype} vs torch, 100 steps: {differ:.1%} of the matrix entries differ, max "
        f"error {relative:.4f} of the movement; the iterations differ on {steps:.0%} of the "
        f"steps' inputs ({np.mean(differing):.2%} of the result's entries on average)"
    )
    assert np.all(np.isfinite(ours["w"]))
    max_differ, max_relative = MUON_BOUNDS[dtype]
    assert differ <= max_differ
    assert relative <= max_relative
