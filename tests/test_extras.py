"""The two seed extras against plain-Python reference loops transcribed from their documents."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from parity import RTOL_F64, assert_trace_close, optlib_trace, torch_trace
from references import CosineAnnealingWarmUpRestarts, document_linear_decay

import optlib

WARM_UP_RESTARTS = [  # (optimizer lr = base_lr, scheduler kwargs, steps)
    (0.0, dict(T_0=150, T_mult=1, eta_max=0.1, T_up=10, gamma=0.5), 620),  # the document's example
    (0.0, dict(T_0=20, T_mult=2, eta_max=0.1, T_up=5, gamma=0.8), 700),
    (1e-4, dict(T_0=7, T_mult=3, eta_max=3e-3, T_up=0, gamma=1.0), 500),
    (1e-3, dict(T_0=1, T_mult=2, eta_max=0.05, T_up=0, gamma=0.9), 300),
    (2e-4, dict(T_0=33, T_mult=1, eta_max=1e-2, T_up=32, gamma=1.0), 400),
    (0.0, dict(T_0=10, T_mult=1, eta_max=1.0, T_up=3, gamma=0.0), 300),
    (0.0, dict(T_0=5), 300),  # defaults: T_mult=1, eta_max=0.1, T_up=0, gamma=1
]


def _restarts_id(case):
    return "-".join(f"{key}{value}" for key, value in case[1].items()) + f"-lr{case[0]}"


@pytest.mark.parametrize("case", WARM_UP_RESTARTS, ids=_restarts_id)
def test_warm_up_restarts_matches_document_loop_step_by_step(case):
    base_lr, kwargs, steps = case
    reference = torch_trace(
        lambda opt: CosineAnnealingWarmUpRestarts(opt, **kwargs), base_lr, steps
    )
    schedule = optlib.cosine_annealing_warm_up_restarts(base_lr, **kwargs)
    assert_trace_close(optlib_trace(schedule, steps), reference, label=_restarts_id(case))


@pytest.mark.parametrize("case", WARM_UP_RESTARTS[:3], ids=_restarts_id)
def test_warm_up_restarts_matches_document_loop_in_float64(case, x64):
    base_lr, kwargs, steps = case
    reference = torch_trace(
        lambda opt: CosineAnnealingWarmUpRestarts(opt, **kwargs), base_lr, steps
    )
    schedule = optlib.get_scheduler(
        "CosineAnnealingWarmUpRestarts", learning_rate=base_lr, **kwargs
    )
    assert schedule(3).dtype == jnp.float64
    assert_trace_close(optlib_trace(schedule, steps), reference, rtol=RTOL_F64, atol_peak=1e-15)


def test_warm_up_restarts_keeps_cycling_far_out_and_near_int32_max():
    """Cycles are endless; deep cycles are located exactly (compared with the loop's own
    arithmetic: the scheduler object stepped to each cycle boundary would take hours)."""
    kwargs = dict(T_0=150, T_mult=1, eta_max=0.1, T_up=10, gamma=0.999)
    schedule = optlib.cosine_annealing_warm_up_restarts(0.0, **kwargs)
    far = np.array([2**31 - 1 - 150 * 3 + offset for offset in range(0, 450, 7)] + [2**31 - 1])
    ours = np.asarray(jax.jit(jax.vmap(schedule))(jnp.asarray(far, jnp.int32)), np.float64)
    # the document's get_lr at (cycle, T_cur) = divmod(step, T_0) for T_mult == 1
    reference = []
    for step in far:
        cycle, t_cur = divmod(int(step), kwargs["T_0"])
        eta = kwargs["eta_max"] * kwargs["gamma"] ** cycle
        if t_cur < kwargs["T_up"]:
            reference.append(eta * t_cur / kwargs["T_up"])
        else:
            angle = math.pi * (t_cur - kwargs["T_up"]) / (kwargs["T_0"] - kwargs["T_up"])
            reference.append(eta * (1 + math.cos(angle)) / 2)
    assert_trace_close(ours, np.array(reference))


@pytest.mark.parametrize(
    "kwargs,error,fragment",
    [
        (dict(T_0=0), ValueError, "T_0"),
        (dict(T_0=2.5), TypeError, "T_0"),
        (dict(T_0=10, T_mult=0), ValueError, "T_mult"),
        (dict(T_0=10, T_up=-1), ValueError, "T_up"),
        (dict(T_0=10, T_up=10), ValueError, "T_up"),
        (dict(T_0=10, eta_max=-0.1), ValueError, "eta_max"),
        (dict(T_0=10, gamma=-0.5), ValueError, "gamma"),
    ],
)
def test_warm_up_restarts_rejects_bad_arguments_naming_them(kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        optlib.cosine_annealing_warm_up_restarts(0.0, **kwargs)


# --------------------------------------------------------------------------- reference: seed 004
LINEAR_DECAY = [  # (initial_lr, final_lr, total_iterations, warmup_iterations)
    (0.01, 0.001, 1000, 100),  # the document's numbers
    (0.01, 0.001, 300, 0),  # example 1: no hold
    (3e-4, 0.0, 257, 31),
    (1e-3, 5e-3, 200, 20),  # increasing: a line is a line
    (0.1, 0.01, 150, 150),  # hold for the whole run, then the final value
]


@pytest.mark.parametrize("case", LINEAR_DECAY)
def test_linear_decay_matches_document_loop_and_then_holds_final(case):
    initial, final, total, hold = case
    steps = total + 100
    reference = document_linear_decay(initial, final, total, hold, steps)
    schedule = optlib.get_scheduler(
        "linear_decay",
        learning_rate=initial,
        num_training_steps=total,
        scheduler_specific_kwargs={"final_learning_rate": final, "num_hold_steps": hold},
    )
    assert schedule(jnp.int32(0)).dtype == jnp.float32
    assert_trace_close(optlib_trace(schedule, steps), reference)


def test_linear_decay_matches_document_loop_in_float64(x64):
    reference = document_linear_decay(0.01, 0.001, 1000, 100, 1100)
    schedule = optlib.linear_decay(0.01, 0.001, 1000, num_hold_steps=100)
    assert schedule(3).dtype == jnp.float64
    assert_trace_close(optlib_trace(schedule, 1100), reference, rtol=RTOL_F64, atol_peak=1e-15)


def test_linear_decay_long_horizon_counts_the_last_steps_exactly():
    total = 2**31 - 2
    steps = np.array([0, 99, 100, 2**30, total - 3, total - 2, total - 1, total, total + 1])
    ours = np.asarray(
        jax.vmap(optlib.linear_decay(0.01, 0.0, total, 100))(jnp.asarray(steps, jnp.int32))
    )
    reference = [
        0.01 - 0.01 * (int(k) - 100) / (total - 100)
        if 100 <= k < total
        else (0.01 if k < 100 else 0.0)
        for k in steps
    ]
    assert_trace_close(ours, np.array(reference))


@pytest.mark.parametrize(
    "args,kwargs,fragment",
    [
        ((0.01, 0.001, 100), dict(num_hold_steps=101), "num_hold_steps"),
        ((0.01, 0.001, -1), {}, "num_training_steps"),
        ((0.01, -0.001, 100), {}, "final_learning_rate"),
        ((-0.01, 0.001, 100), {}, "learning_rate"),
    ],
)
def test_linear_decay_rejects_bad_arguments_naming_them(args, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        optlib.linear_decay(*args, **kwargs)


def test_extras_are_reachable_by_name_with_their_references():
    names = optlib.scheduler_names()
    for name in (
        "cosine_annealing_warm_up_restarts",
        "CosineAnnealingWarmUpRestarts",
        "linear_decay",
    ):
        assert name in names
        assert optlib._registry.scheduler_entry(name).family == "optlib"
    with pytest.raises(ValueError, match="requires `num_training_steps`"):
        optlib.get_scheduler("linear_decay", learning_rate=0.1, final_learning_rate=0.0)
    with pytest.raises(TypeError, match="T_zero"):
        optlib.get_scheduler("CosineAnnealingWarmUpRestarts", learning_rate=0.0, T_zero=3)
