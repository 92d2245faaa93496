"""Parity of every step-based ``torch.optim.lr_scheduler`` scheduler with torch itself.

A case is ``(torch class name, kwargs)``. The same kwargs build torch's scheduler (driven by a
real ``optimizer.step(); scheduler.step()`` loop) and optlib's schedule through
``optlib.get_scheduler`` (one jitted vmap), and the traces are compared step by step. Cases
are a few seeded random configurations per scheduler plus the edge cases of the issue.
SequentialLR / ChainedScheduler cases nest sub-cases ``(name, kwargs)``, built in order on
one torch optimizer, and by ``get_scheduler`` for optlib.
"""

from __future__ import annotations

import inspect
import random
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from parity import (
    COMPOSITES,
    RTOL_F64,
    assert_trace_close,
    build_optlib,
    build_torch,
    make_torch_optimizer,
    optlib_trace,
    torch,
    torch_trace,
)

import optlib
from optlib._registry import scheduler_entry

lr_scheduler = torch.optim.lr_scheduler
STEPS = 320
RANDOM_PER_SCHEDULER = 3
# Under x64, where torch's own float64 arithmetic is not exact to 1e-12 (optlib's is; see
# test_float64_gap_is_torch_rounding): closed forms that cancel near a minimum (1 + cos(x) in
# CosineAnnealingWarmRestarts, OneCycleLR's linear anneal) are off by a few ulps of the peak
# lr, and CosineAnnealingLR's recursion of ratios of 1 + cos(x) carries a relative error up
# to ~eps * T_max**2 / pi**2 near and after its minima.
F64_PEAK_FLOOR = 1e-15
F64_COSINE_RTOL_PER_T_MAX_SQUARED = 1e-16


def torch_f64_rtol(name: str, kwargs: dict) -> float:
    """1e-12, widened by the rounding of torch's CosineAnnealingLR recursion (if any)."""
    if name in COMPOSITES:
        return max(torch_f64_rtol(n, k) for n, k in kwargs["schedulers"])
    t_max = kwargs["T_max"] if name == "CosineAnnealingLR" else 0
    return RTOL_F64 + F64_COSINE_RTOL_PER_T_MAX_SQUARED * t_max**2


FUNCTIONS = {
    "StepLR": optlib.step_lr,
    "MultiStepLR": optlib.multi_step_lr,
    "ExponentialLR": optlib.exponential_lr,
    "CosineAnnealingLR": optlib.cosine_annealing_lr,
    "LinearLR": optlib.linear_lr,
    "LambdaLR": optlib.lambda_lr,
    "MultiplicativeLR": optlib.multiplicative_lr,
    "ConstantLR": optlib.constant_lr,
    "PolynomialLR": optlib.polynomial_lr,
    "CosineAnnealingWarmRestarts": optlib.cosine_annealing_warm_restarts,
    "CyclicLR": optlib.cyclic_lr,
    "OneCycleLR": optlib.one_cycle_lr,
    "SequentialLR": optlib.sequential_lr,
    "ChainedScheduler": optlib.chained_scheduler,
}

# Factors written with operators only, so one function serves torch (Python int) and jax.
LR_LAMBDAS = (
    lambda e: 1.0 / (1.0 + 0.05 * e),
    lambda e: (e + 1.0) / (e + 10.0),
    lambda e: 0.5 + 0.5 * ((e % 7) / 7.0),
)
MULTIPLICATIVE_LAMBDAS = (
    lambda e: 0.99,
    lambda e: 1.0 - 0.001 * (e % 5),
    lambda e: (e + 2.0) / (e + 3.0),
)
SCALE_FNS = (lambda x: 1.0 / (1.0 + 0.1 * x), lambda x: 0.5 + 0.5 / (1.0 + x))


# ------------------------------------------------------------------------------- building


def cycles_momentum(name: str, kwargs: dict) -> bool:
    if name in COMPOSITES:
        return any(cycles_momentum(n, k) for n, k in kwargs["schedulers"])
    return name in ("CyclicLR", "OneCycleLR") and kwargs.get("cycle_momentum", True)


# ------------------------------------------------------------------- random configurations


def _random_kwargs(name: str, rng: random.Random, steps: int = STEPS) -> dict:
    """A random valid configuration of ``name`` that runs ``steps`` torch steps."""
    if name == "StepLR":
        return {"step_size": rng.randint(1, 80), "gamma": rng.uniform(0.05, 1.0)}
    if name == "MultiStepLR":
        milestones = [rng.randint(0, steps + 10) for _ in range(rng.randint(0, 6))]
        return {"milestones": milestones, "gamma": rng.uniform(0.05, 1.0)}
    if name == "ExponentialLR":
        return {"gamma": rng.uniform(0.9, 1.0)}
    if name == "CosineAnnealingLR":
        return {"T_max": rng.randint(1, 400), "eta_min": rng.choice([0.0, rng.uniform(0, 0.05)])}
    if name == "LinearLR":
        return {
            "start_factor": rng.uniform(0.01, 1.0),
            "end_factor": rng.choice([0.0, 1.0, rng.uniform(0.0, 1.0)]),
            "total_iters": rng.randint(1, 350),
        }
    if name == "LambdaLR":
        return {"lr_lambda": rng.choice(LR_LAMBDAS)}
    if name == "MultiplicativeLR":
        return {"lr_lambda": rng.choice(MULTIPLICATIVE_LAMBDAS)}
    if name == "ConstantLR":
        return {"factor": rng.uniform(0.05, 1.0), "total_iters": rng.randint(0, 350)}
    if name == "PolynomialLR":
        return {"total_iters": rng.randint(1, 400), "power": rng.uniform(0.0, 4.0)}
    if name == "CosineAnnealingWarmRestarts":
        return {
            "T_0": rng.randint(1, 60),
            "T_mult": rng.randint(1, 4),
            "eta_min": rng.choice([0.0, rng.uniform(0, 0.05)]),
        }
    if name == "CyclicLR":
        kwargs = {
            "base_lr": rng.uniform(1e-4, 0.05),
            "max_lr": rng.uniform(0.05, 1.0),
            "step_size_up": rng.randint(1, 60),
            "step_size_down": rng.choice([None, rng.randint(0, 60)]),
            "mode": rng.choice(["triangular", "triangular2", "exp_range"]),
            "gamma": rng.uniform(0.98, 1.0),
            "cycle_momentum": rng.random() < 0.7,
            "base_momentum": rng.uniform(0.5, 0.85),
            "max_momentum": rng.uniform(0.85, 0.99),
        }
        if rng.random() < 0.3:
            kwargs["scale_fn"] = rng.choice(SCALE_FNS)
            kwargs["scale_mode"] = rng.choice(["cycle", "iterations"])
        return kwargs
    if name == "OneCycleLR":
        kwargs = {
            "max_lr": rng.uniform(0.01, 1.0),
            "pct_start": rng.uniform(0.05, 0.95),
            "anneal_strategy": rng.choice(["cos", "linear"]),
            "three_phase": rng.random() < 0.4,
            "div_factor": rng.uniform(2.0, 50.0),
            "final_div_factor": rng.choice([1e4, rng.uniform(10.0, 1e3)]),
            "cycle_momentum": rng.random() < 0.7,
        }
        if rng.random() < 0.5:
            kwargs["total_steps"] = rng.randint(steps, steps + 300)
        else:
            kwargs["steps_per_epoch"] = rng.randint(1, 40)
            kwargs["epochs"] = -(-steps // kwargs["steps_per_epoch"]) + rng.randint(0, 3)
        return kwargs
    if name == "SequentialLR":
        count = rng.randint(2, 4)
        milestones = sorted(rng.randint(1, steps - 1) for _ in range(count - 1))
        ends = [*milestones, steps]
        subs = []
        for index in range(count):
            candidates = [n for n in FUNCTIONS if n not in COMPOSITES]
            if index > 0:
                candidates.remove("OneCycleLR")
            sub = rng.choice(candidates)
            subs.append((sub, _random_kwargs(sub, rng, ends[index])))
        return {"schedulers": subs, "milestones": milestones}
    if name == "ChainedScheduler":
        while True:  # draw until torch's recursion has a closed form (see optlib's docstring)
            names = [rng.choice([n for n in FUNCTIONS if n not in COMPOSITES]) for _ in range(3)]
            subs = [(n, _random_kwargs(n, rng, steps)) for n in names]
            subs = [s for i, s in enumerate(subs) if s[0] != "OneCycleLR" or i == 0]
            try:
                build_optlib(name, {"schedulers": subs}, 0.1)
            except ValueError:
                continue
            return {"schedulers": subs}
    raise KeyError(name)


def _random_cases() -> list:
    cases = []
    for name in FUNCTIONS:
        rng = random.Random(f"torch-schedules-{name}")
        for index in range(RANDOM_PER_SCHEDULER):
            learning_rate = rng.choice([0.1, 1e-3, rng.uniform(1e-4, 1.0)])
            kwargs = _random_kwargs(name, rng)
            cases.append(pytest.param(name, kwargs, learning_rate, id=f"{name}-random{index}"))
    return cases


LINEAR_WARMUP = ("LinearLR", {"start_factor": 0.1, "total_iters": 20})
WARMUP_THEN_COSINE = {
    "schedulers": [LINEAR_WARMUP, ("CosineAnnealingLR", {"T_max": 200, "eta_min": 1e-3})],
    "milestones": [20],
}
WARMUP_TIMES_EXPONENTIAL = {"schedulers": [LINEAR_WARMUP, ("ExponentialLR", {"gamma": 0.99})]}
CYCLIC = {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 13, "step_size_down": 7}

EDGE_CASES = [
    pytest.param(
        "MultiStepLR",
        {"milestones": [40, 40, 100], "gamma": 0.5},
        0.1,
        id="multistep-milestone-listed-twice-decays-twice",
    ),
    pytest.param(
        "MultiStepLR",
        {"milestones": [200, 0, 50]},
        0.1,
        id="multistep-unsorted-milestones-and-zero",
    ),
    pytest.param("MultiStepLR", {"milestones": []}, 0.1, id="multistep-no-milestones"),
    pytest.param(
        "CosineAnnealingLR",
        {"T_max": 37, "eta_min": 0.003},
        0.1,
        id="cosine-keeps-oscillating-past-t-max",
    ),
    pytest.param("CosineAnnealingLR", {"T_max": 1}, 0.1, id="cosine-t-max-1"),
    pytest.param(
        "ConstantLR",
        {"factor": 0.25, "total_iters": 0},
        0.1,
        id="constant-total-iters-0-keeps-factor",
    ),
    pytest.param("ConstantLR", {"factor": 1.0, "total_iters": 3}, 0.1, id="constant-factor-1"),
    pytest.param(
        "LinearLR",
        {"start_factor": 1.0, "end_factor": 0.0, "total_iters": 150},
        0.1,
        id="linear-decay-to-zero",
    ),
    pytest.param("PolynomialLR", {"total_iters": 1, "power": 0.0}, 0.1, id="polynomial-power-0"),
    pytest.param(
        "CosineAnnealingWarmRestarts",
        {"T_0": 3, "T_mult": 2, "eta_min": 0.01},
        0.1,
        id="warm-restarts-t-mult-2",
    ),
    pytest.param(
        "CosineAnnealingWarmRestarts",
        {"T_0": 1, "T_mult": 3},
        0.1,
        id="warm-restarts-t-0-1-t-mult-3",
    ),
    pytest.param(
        "CyclicLR", {**CYCLIC, "mode": "triangular2"}, 0.1, id="cyclic-triangular2-step-size-down"
    ),
    pytest.param(
        "CyclicLR", {**CYCLIC, "mode": "exp_range", "gamma": 0.99}, 0.1, id="cyclic-exp-range"
    ),
    pytest.param(
        "CyclicLR",
        {**CYCLIC, "scale_fn": SCALE_FNS[0], "scale_mode": "cycle", "mode": "custom"},
        0.1,
        id="cyclic-custom-scale-fn-cycle",
    ),
    pytest.param(
        "CyclicLR",
        {**CYCLIC, "scale_fn": SCALE_FNS[1], "scale_mode": "iterations"},
        0.1,
        id="cyclic-custom-scale-fn-iterations",
    ),
    pytest.param("CyclicLR", {**CYCLIC, "step_size_down": 0}, 0.1, id="cyclic-sawtooth"),
    pytest.param(
        "CyclicLR",
        {"base_lr": 0.2, "max_lr": 0.05, "step_size_up": 5},
        0.1,
        id="cyclic-base-above-max",
    ),
    pytest.param(
        "OneCycleLR",
        {"max_lr": 0.5, "total_steps": STEPS, "three_phase": True},
        0.1,
        id="one-cycle-three-phase",
    ),
    pytest.param(
        "OneCycleLR",
        {"max_lr": 0.5, "total_steps": 333, "anneal_strategy": "linear"},
        0.1,
        id="one-cycle-linear-fractional-phase-end",
    ),
    pytest.param(
        "OneCycleLR",
        {
            "max_lr": 0.5,
            "epochs": 8,
            "steps_per_epoch": 40,
            "div_factor": 10.0,
            "final_div_factor": 100.0,
        },
        0.1,
        id="one-cycle-epochs-times-steps-per-epoch",
    ),
    pytest.param(
        "OneCycleLR",
        {"max_lr": 0.5, "total_steps": STEPS, "pct_start": 0.002},
        0.1,
        id="one-cycle-first-phase-unreachable",
    ),
    pytest.param(
        "OneCycleLR",
        {"max_lr": 0.5, "total_steps": STEPS, "pct_start": 1.0, "three_phase": True},
        0.1,
        id="one-cycle-three-phase-pct-1",
    ),
    pytest.param("SequentialLR", WARMUP_THEN_COSINE, 0.1, id="sequential-warmup-then-cosine"),
    pytest.param(
        "SequentialLR",
        {
            "schedulers": [
                LINEAR_WARMUP,
                ("ConstantLR", {"factor": 0.5, "total_iters": 0}),
                ("MultiplicativeLR", {"lr_lambda": MULTIPLICATIVE_LAMBDAS[1]}),
            ],
            "milestones": [20, 150],
        },
        0.1,
        id="sequential-closed-form-at-milestone-and-multiplicative-keeps-lr",
    ),
    pytest.param(
        "SequentialLR",
        {
            "schedulers": [
                ("ExponentialLR", {"gamma": 0.98}),
                ("StepLR", {"step_size": 10}),
                ("LambdaLR", {"lr_lambda": LR_LAMBDAS[0]}),
            ],
            "milestones": [50, 50],
        },
        0.1,
        id="sequential-milestone-listed-twice-skips",
    ),
    pytest.param(
        "SequentialLR",
        {
            "schedulers": [
                ("ExponentialLR", {"gamma": 0.98}),
                ("MultiplicativeLR", {"lr_lambda": MULTIPLICATIVE_LAMBDAS[0]}),
            ],
            "milestones": [0],
        },
        0.1,
        id="sequential-milestone-zero-skips-first",
    ),
    pytest.param(
        "SequentialLR",
        {
            "schedulers": [
                ("CyclicLR", CYCLIC),
                ("ExponentialLR", {"gamma": 0.98}),
                ("CosineAnnealingWarmRestarts", {"T_0": 30, "T_mult": 2}),
            ],
            "milestones": [100, 180],
        },
        0.1,
        id="sequential-cyclic-first-sets-base-lr",
    ),
    pytest.param(
        "SequentialLR",
        {
            "schedulers": [
                ("OneCycleLR", {"max_lr": 0.4, "total_steps": 150}),
                ("StepLR", {"step_size": 30}),
            ],
            "milestones": [150],
        },
        0.1,
        id="sequential-one-cycle-then-step",
    ),
    pytest.param(
        "SequentialLR",
        {
            "schedulers": [
                LINEAR_WARMUP,
                ("CyclicLR", CYCLIC),
                ("StepLR", {"step_size": 9}),
                (
                    "CyclicLR",
                    {"base_lr": 0.02, "max_lr": 0.05, "step_size_up": 7, "base_momentum": 0.5},
                ),
            ],
            "milestones": [20, 100, 200],
        },
        0.1,
        id="sequential-momentum-kept-between-cyclics",
    ),
    pytest.param(
        "SequentialLR",
        {"schedulers": [("PolynomialLR", {"total_iters": 100})], "milestones": []},
        0.1,
        id="sequential-single",
    ),
    pytest.param(
        "ChainedScheduler", WARMUP_TIMES_EXPONENTIAL, 0.1, id="chained-warmup-exponential"
    ),
    pytest.param(
        "ChainedScheduler",
        {
            "schedulers": [
                ("StepLR", {"step_size": 9, "gamma": 0.9}),
                ("CosineAnnealingLR", {"T_max": 40}),
                ("ConstantLR", {"total_iters": 60}),
            ]
        },
        0.1,
        id="chained-cosine-restarts-drop-factors",
    ),
    pytest.param(
        "ChainedScheduler",
        {
            "schedulers": [
                ("MultiplicativeLR", {"lr_lambda": MULTIPLICATIVE_LAMBDAS[2]}),
                ("CosineAnnealingLR", {"T_max": 25}),
                ("LinearLR", {"total_iters": 60, "end_factor": 0.5}),
            ]
        },
        0.1,
        id="chained-multiplicative-cosine-linear",
    ),
    pytest.param(
        "ChainedScheduler",
        {
            "schedulers": [
                ("CosineAnnealingLR", {"T_max": 40, "eta_min": 0.01}),
                ("LambdaLR", {"lr_lambda": LR_LAMBDAS[1]}),
                ("StepLR", {"step_size": 9, "gamma": 0.98}),
                ("CosineAnnealingLR", {"T_max": 30, "eta_min": 0.001}),
            ]
        },
        0.1,
        id="chained-absolute-resets-then-cosine-eta-min",
    ),
    pytest.param(
        "ChainedScheduler",
        {
            "schedulers": [
                ("CyclicLR", CYCLIC),
                ("ExponentialLR", {"gamma": 0.99}),
                ("CosineAnnealingLR", {"T_max": 30, "eta_min": 0.001}),
            ]
        },
        0.1,
        id="chained-cyclic-first-with-momentum",
    ),
    pytest.param(
        "ChainedScheduler",
        {
            "schedulers": [
                ("OneCycleLR", {"max_lr": 0.3, "total_steps": 400}),
                ("MultiplicativeLR", {"lr_lambda": MULTIPLICATIVE_LAMBDAS[0]}),
            ]
        },
        0.1,
        id="chained-one-cycle-first",
    ),
    pytest.param(
        "ChainedScheduler",
        {"schedulers": [("CosineAnnealingLR", {"T_max": 30, "eta_min": 0.01})]},
        0.1,
        id="chained-single-cosine-eta-min",
    ),
]

RANDOM_CASES = _random_cases()
CASES = RANDOM_CASES + EDGE_CASES
ONE_RANDOM_CASE_PER_SCHEDULER = RANDOM_CASES[::RANDOM_PER_SCHEDULER]
QUIRK_CASES = [case for case in EDGE_CASES if case.values[0] in COMPOSITES]
# One configuration per scheduler where torch's float64 arithmetic is itself exact to 1e-12.
STRICT_F64_CASES = [
    pytest.param(*values, id=f"{values[0]}-strict")
    for values in [
        ("StepLR", {"step_size": 7, "gamma": 0.7}, 0.1),
        ("MultiStepLR", {"milestones": [30, 30, 80, 5], "gamma": 0.5}, 0.1),
        ("ExponentialLR", {"gamma": 0.99}, 0.1),
        ("CosineAnnealingLR", {"T_max": 100, "eta_min": 0.001}, 0.1),
        ("LinearLR", {"start_factor": 0.25, "end_factor": 0.0, "total_iters": 100}, 0.1),
        ("LambdaLR", {"lr_lambda": LR_LAMBDAS[0]}, 0.1),
        ("MultiplicativeLR", {"lr_lambda": MULTIPLICATIVE_LAMBDAS[2]}, 0.1),
        ("ConstantLR", {"factor": 0.3, "total_iters": 40}, 0.1),
        ("PolynomialLR", {"total_iters": 200, "power": 2.5}, 0.1),
        ("CosineAnnealingWarmRestarts", {"T_0": 10, "T_mult": 2, "eta_min": 0.001}, 0.1),
        ("CyclicLR", {**CYCLIC, "mode": "exp_range", "gamma": 0.995}, 0.1),
        ("OneCycleLR", {"max_lr": 0.5, "total_steps": STEPS, "final_div_factor": 100.0}, 0.1),
        ("SequentialLR", WARMUP_THEN_COSINE, 0.1),
        ("ChainedScheduler", WARMUP_TIMES_EXPONENTIAL, 0.1),
    ]
]


# ----------------------------------------------------------------------------- parity


def optlib_traces(schedule, steps: int = STEPS):
    """``(lr, momentum or None)`` at steps ``0..steps-1``, in one jit of a vmap.

    Also checks that the jit compiles once: a second range of steps reuses the trace.
    """
    traces = []

    def lr_and_momentum(step):
        traces.append(step)
        if isinstance(schedule, optlib.MomentumSchedule):
            return schedule(step), schedule.momentum(step)
        return schedule(step), None

    compiled = jax.jit(jax.vmap(lr_and_momentum))
    lr, momentum = compiled(jnp.arange(steps, dtype=jnp.int32))
    later, _ = compiled(jnp.arange(steps, 2 * steps, dtype=jnp.int32))
    assert len(traces) == 1 and lr.dtype == later.dtype == jnp.result_type(float)
    to_numpy = lambda x: None if x is None else np.asarray(x, np.float64)
    return to_numpy(lr), to_numpy(momentum)


def assert_matches_torch(name, kwargs, learning_rate, **tolerance):
    """lr against torch's SGD loop; momentum (if cycled) against SGD's ``momentum`` and
    Adam's ``betas[0]``; returns the worst relative errors."""
    schedule = build_optlib(name, kwargs, learning_rate)
    assert isinstance(schedule, optlib.MomentumSchedule) == cycles_momentum(name, kwargs)
    lr, momentum = optlib_traces(schedule)
    make = build_torch(name, kwargs)
    reference = torch_trace(make, learning_rate, STEPS)
    errors = [assert_trace_close(lr, reference, label=name, **tolerance)]
    if momentum is not None:
        for optimizer_cls, key in ((torch.optim.SGD, "momentum"), (torch.optim.Adam, "beta1")):
            reference = torch_trace(
                make, learning_rate, STEPS, optimizer_cls=optimizer_cls, key=key
            )
            label = f"{name} {key}"
            errors.append(assert_trace_close(momentum, reference, label=label, **tolerance))
    return errors


@pytest.mark.parametrize("name, kwargs, learning_rate", CASES)
def test_matches_torch_in_float32(name, kwargs, learning_rate):
    assert_matches_torch(name, kwargs, learning_rate)


@pytest.mark.parametrize("name, kwargs, learning_rate", STRICT_F64_CASES)
def test_matches_torch_to_1e12_relative_in_float64(x64, name, kwargs, learning_rate):
    assert_matches_torch(name, kwargs, learning_rate, rtol=RTOL_F64, atol_peak=0.0)


@pytest.mark.parametrize("name, kwargs, learning_rate", QUIRK_CASES)
def test_matches_torch_in_float64(x64, name, kwargs, learning_rate):
    rtol = torch_f64_rtol(name, kwargs)
    assert_matches_torch(name, kwargs, learning_rate, rtol=rtol, atol_peak=F64_PEAK_FLOOR)


@pytest.mark.parametrize("three_phase", [False, True])
def test_one_cycle_holds_torchs_last_value_past_total_steps(three_phase):
    kwargs = {"max_lr": 0.3, "total_steps": 50, "three_phase": three_phase, "pct_start": 0.37}
    optimizer = make_torch_optimizer(0.1)
    scheduler = lr_scheduler.OneCycleLR(optimizer, **kwargs)
    for _ in range(50):
        optimizer.step()
        scheduler.step()
    last = optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["momentum"]
    with pytest.raises(ValueError, match="Tried to step"):
        scheduler.step()
    schedule = optlib.one_cycle_lr(**kwargs)
    steps = jnp.asarray([50, 51, 10**6, 2**31 - 1], jnp.int32)
    lr, momentum = jax.jit(jax.vmap(lambda t: (schedule(t), schedule.momentum(t))))(steps)
    np.testing.assert_allclose(np.asarray(lr), last[0], rtol=2e-5)
    np.testing.assert_allclose(np.asarray(momentum), last[1], rtol=2e-5)


# ------------------------------------------------------ float64: what torch itself rounds


def _mp_half_cosine(mp, fraction):
    return (1 + mp.cos(mp.pi * fraction)) / 2


def test_float64_gap_is_torch_rounding(x64):
    """Near a cosine minimum torch's float64 lr is off by more than 1e-12 relative (its
    ``1 + cos(x)`` cancels), by the amounts the float64 tolerances above allow; optlib's is
    exact."""
    mp = pytest.importorskip("mpmath").mp
    mp.dps = 40
    steps, peak = 2100, 0.1
    cases = [
        ("CosineAnnealingLR", {"T_max": 2000}, lambda t: _mp_half_cosine(mp, mp.mpf(t) / 2000)),
        (
            "CosineAnnealingWarmRestarts",
            {"T_0": 1000},
            lambda t: _mp_half_cosine(mp, mp.mpf(t % 1000) / 1000),
        ),
    ]
    for name, kwargs, exact in cases:
        reference = torch_trace(build_torch(name, kwargs), peak, steps)
        ours = optlib_trace(build_optlib(name, kwargs, peak), steps)
        truth = np.asarray([float(peak * exact(t)) for t in range(steps)])
        nonzero = truth != 0
        torch_rel = np.abs(reference - truth)[nonzero] / truth[nonzero]
        ours_rel = np.abs(ours - truth)[nonzero] / truth[nonzero]
        assert np.max(ours_rel) <= 1e-14, name
        assert np.max(torch_rel) > 1e-12, name
        if name == "CosineAnnealingLR":
            assert np.max(torch_rel) <= F64_COSINE_RTOL_PER_T_MAX_SQUARED * 2000**2
        else:
            assert np.max(np.abs(reference - truth)) <= F64_PEAK_FLOOR * peak


# -------------------------------------------------------------------------- per epoch


def _torch_epoch_trace(make, learning_rate, epochs, steps_per_epoch, key="lr"):
    optimizer = make_torch_optimizer(learning_rate)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduler = make(optimizer)
        values = []
        for _ in range(epochs):
            for _ in range(steps_per_epoch):
                values.append(optimizer.param_groups[0][key])
                optimizer.step()
            scheduler.step()
    return np.asarray(values)


PER_EPOCH_CASES = [
    ("StepLR", {"step_size": 3, "gamma": 0.5}),
    ("MultiStepLR", {"milestones": [2, 5, 5]}),
    ("CosineAnnealingLR", {"T_max": 7, "eta_min": 0.01}),
    ("CyclicLR", {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 3}),
    ("OneCycleLR", {"max_lr": 0.3, "total_steps": 12}),
    (
        "SequentialLR",
        {
            "schedulers": [("LinearLR", {"total_iters": 3}), ("ExponentialLR", {"gamma": 0.8})],
            "milestones": [3],
        },
    ),
]


@pytest.mark.parametrize(
    "name, kwargs, steps_per_epoch",
    [(name, kwargs, 7) for name, kwargs in PER_EPOCH_CASES] + [(*PER_EPOCH_CASES[-2], 1)],
)
def test_per_epoch_changes_lr_at_epoch_boundaries_like_torch(name, kwargs, steps_per_epoch):
    epochs = 12
    schedule = optlib.per_epoch(build_optlib(name, kwargs, 0.1), steps_per_epoch)
    updates = epochs * steps_per_epoch
    reference = _torch_epoch_trace(build_torch(name, kwargs), 0.1, epochs, steps_per_epoch)
    assert_trace_close(optlib_trace(schedule, updates), reference, label=name)
    if cycles_momentum(name, kwargs):
        reference = _torch_epoch_trace(
            build_torch(name, kwargs), 0.1, epochs, steps_per_epoch, key="momentum"
        )
        assert_trace_close(optlib_trace(schedule.momentum, updates), reference, label=name)


def test_per_epoch_rejects_bad_steps_per_epoch():
    with pytest.raises(ValueError, match="steps_per_epoch"):
        optlib.per_epoch(optlib.step_lr(0.1, 3), 0)
    with pytest.raises(TypeError, match="steps_per_epoch"):
        optlib.per_epoch(optlib.step_lr(0.1, 3), 2.5)


# ----------------------------------------------------------------- jit, vmap, dtype


@pytest.mark.parametrize(
    "make",
    [
        lambda: optlib.step_lr(0.1, step_size=30),
        lambda: optlib.one_cycle_lr(max_lr=0.1, total_steps=1000),
        lambda: optlib.sequential_lr(
            0.1,
            [optlib.linear_lr(0.1, total_iters=10), optlib.cosine_annealing_lr(0.1, T_max=90)],
            milestones=[10],
        ),
    ],
    ids=["StepLR", "OneCycleLR", "SequentialLR"],
)
def test_compiles_once_for_scalar_steps(make):
    """What optax does: ``schedule(count)`` with a scalar count under ``jit``."""
    schedule, traces = make(), []

    def lr(step):
        traces.append(step)
        return schedule(step)

    jitted = jax.jit(lr)
    steps = [0, 1, 7, 150, 2**31 - 1]
    values = [float(jitted(jnp.int32(step))) for step in steps]
    assert len(traces) == 1
    batched = optlib_trace(schedule, 1, start=0)[0], [float(jitted(step)) for step in steps]
    np.testing.assert_allclose(values, batched[1])
    np.testing.assert_allclose(values[0], batched[0], rtol=1e-6)


def test_rejects_non_integer_steps():
    with pytest.raises(TypeError, match="integer step"):
        optlib.step_lr(0.1, 3)(1.5)


# ------------------------------------------------------------------ registry and names


def test_every_torch_name_is_registered_with_its_function():
    for name, function in FUNCTIONS.items():
        entry = scheduler_entry(name)
        assert entry.factory is function
        assert entry.reference == f"torch.optim.lr_scheduler.{name}"
        assert entry.family == "torch"


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_signature_is_torchs_with_learning_rate(name):
    reference = inspect.signature(getattr(lr_scheduler, name).__init__).parameters
    torch_params = {
        key: p.default
        for key, p in reference.items()
        if key not in ("self", "optimizer", "last_epoch", "verbose")
    }
    ours = dict(inspect.signature(FUNCTIONS[name]).parameters)
    if "last_epoch" in reference:  # torch's keyword, accepted with torch's meaning
        assert ours.pop("last_epoch").default == -1, name
    assert next(iter(ours)) == "learning_rate"
    assert list(ours)[1:] == list(torch_params)
    for key, default in torch_params.items():
        expected = None if default is inspect.Parameter.empty else default
        assert ours[key].default == expected, (name, key)


def test_get_scheduler_errors():
    with pytest.raises(TypeError, match="'bogus'"):
        optlib.get_scheduler("StepLR", learning_rate=0.1, step_size=3, bogus=1)
    with pytest.raises(TypeError, match="num_training_steps"):
        optlib.get_scheduler("StepLR", learning_rate=0.1, step_size=3, num_training_steps=10)
    with pytest.raises(ValueError, match=r"Unknown scheduler name 'StepLr'.*StepLR"):
        optlib.get_scheduler("StepLr", learning_rate=0.1, step_size=3)
    with pytest.raises(ValueError, match="step_size"):
        optlib.get_scheduler("StepLR", learning_rate=0.1)


# ---------------------------------------------------------------------- invalid input

SUB = ("StepLR", {"step_size": 3})
# (name, kwargs, error, text in the message, what torch does: "raises" at construction,
#  "fails" within 400 steps, "accepts" silently, or None where not comparable)
INVALID = [
    ("StepLR", {"step_size": 0}, ValueError, "step_size", "fails"),
    ("StepLR", {"step_size": 2.5}, TypeError, "step_size", None),
    ("StepLR", {}, ValueError, "step_size", "raises"),
    ("StepLR", {"step_size": 3, "gamma": 0.0}, ValueError, "gamma", "accepts"),
    ("StepLR", {"step_size": 3, "gamma": -0.5}, ValueError, "gamma", "accepts"),
    ("MultiStepLR", {"milestones": [10, 2.5]}, TypeError, "milestones[1]", None),
    ("MultiStepLR", {"milestones": [-1, 4]}, ValueError, "milestones[0]", "accepts"),
    ("MultiStepLR", {"milestones": 5}, TypeError, "milestones", "raises"),
    ("ExponentialLR", {}, ValueError, "gamma", "raises"),
    ("ExponentialLR", {"gamma": -1.0}, ValueError, "gamma", "accepts"),
    ("CosineAnnealingLR", {"T_max": 0}, ValueError, "T_max", "fails"),
    ("CosineAnnealingLR", {"T_max": 10.5}, TypeError, "T_max", None),
    ("CosineAnnealingLR", {"T_max": 10, "eta_min": -0.1}, ValueError, "eta_min", "accepts"),
    ("LinearLR", {"start_factor": 0.0}, ValueError, "start_factor", "raises"),
    ("LinearLR", {"start_factor": 1.5}, ValueError, "start_factor", "raises"),
    ("LinearLR", {"end_factor": -0.1}, ValueError, "end_factor", "raises"),
    ("LinearLR", {"total_iters": 0}, ValueError, "total_iters", "accepts"),
    ("LinearLR", {"total_iters": -3}, ValueError, "total_iters", "accepts"),
    ("ConstantLR", {"factor": 1.5}, ValueError, "factor", "raises"),
    ("ConstantLR", {"factor": 0.0, "total_iters": 5}, ValueError, "factor", "fails"),
    ("ConstantLR", {"total_iters": -1}, ValueError, "total_iters", "accepts"),
    ("PolynomialLR", {"total_iters": 0}, ValueError, "total_iters", "accepts"),
    ("PolynomialLR", {"power": -1.0}, ValueError, "power", "fails"),
    ("LambdaLR", {"lr_lambda": 0.5}, TypeError, "lr_lambda", "raises"),
    ("LambdaLR", {}, ValueError, "lr_lambda", "raises"),
    ("MultiplicativeLR", {"lr_lambda": "x"}, TypeError, "lr_lambda", "raises"),
    ("CosineAnnealingWarmRestarts", {"T_0": 0}, ValueError, "T_0", "raises"),
    ("CosineAnnealingWarmRestarts", {"T_0": 2.5}, TypeError, "T_0", "raises"),
    ("CosineAnnealingWarmRestarts", {"T_0": 5, "T_mult": 0}, ValueError, "T_mult", "raises"),
    ("CosineAnnealingWarmRestarts", {"T_0": 5, "T_mult": 1.5}, TypeError, "T_mult", "raises"),
    ("CosineAnnealingWarmRestarts", {"T_0": 5, "eta_min": "a"}, TypeError, "eta_min", "raises"),
    ("CyclicLR", {**CYCLIC, "mode": "foo"}, ValueError, "mode", "raises"),
    ("CyclicLR", {**CYCLIC, "step_size_up": 0}, ValueError, "step_size_up", "raises"),
    ("CyclicLR", {**CYCLIC, "step_size_down": -1}, ValueError, "step_size_down", "accepts"),
    (
        "CyclicLR",
        {**CYCLIC, "scale_fn": SCALE_FNS[0], "scale_mode": "foo"},
        ValueError,
        "scale_mode",
        "accepts",
    ),
    ("CyclicLR", {**CYCLIC, "scale_fn": 3}, TypeError, "scale_fn", "raises"),
    ("CyclicLR", {**CYCLIC, "mode": "exp_range", "gamma": 0.0}, ValueError, "gamma", "accepts"),
    ("CyclicLR", {"max_lr": 0.1}, ValueError, "base_lr", "raises"),
    ("CyclicLR", {"base_lr": 0.1}, ValueError, "max_lr", "raises"),
    ("CyclicLR", {**CYCLIC, "cycle_momentum": "yes"}, TypeError, "cycle_momentum", None),
    ("OneCycleLR", {"max_lr": 0.1}, ValueError, "total_steps", "raises"),
    ("OneCycleLR", {"max_lr": 0.1, "epochs": 3}, ValueError, "steps_per_epoch", "raises"),
    ("OneCycleLR", {"max_lr": 0.1, "total_steps": 0}, ValueError, "total_steps", "raises"),
    (
        "OneCycleLR",
        {"max_lr": 0.1, "epochs": 0, "steps_per_epoch": 3},
        ValueError,
        "epochs",
        "raises",
    ),
    (
        "OneCycleLR",
        {"max_lr": 0.1, "epochs": 2, "steps_per_epoch": 1.5},
        TypeError,
        "steps_per_epoch",
        "raises",
    ),
    (
        "OneCycleLR",
        {"max_lr": 0.1, "total_steps": 10, "pct_start": 1.5},
        ValueError,
        "pct_start",
        "raises",
    ),
    (
        "OneCycleLR",
        {"max_lr": 0.1, "total_steps": 10, "anneal_strategy": "exp"},
        ValueError,
        "anneal_strategy",
        "raises",
    ),
    (
        "OneCycleLR",
        {"max_lr": 0.1, "total_steps": 10, "div_factor": 0.0},
        ValueError,
        "div_factor",
        "raises",
    ),
    (
        "OneCycleLR",
        {"max_lr": 0.1, "total_steps": 10, "final_div_factor": 0.0},
        ValueError,
        "final_div_factor",
        "raises",
    ),
    ("OneCycleLR", {"total_steps": 10}, ValueError, "max_lr", "raises"),
    (
        "OneCycleLR",
        {"max_lr": 0.1, "total_steps": 10, "pct_start": 1.0},
        ValueError,
        "pct_start",
        "fails",
    ),
    (
        "OneCycleLR",
        {"max_lr": 0.1, "total_steps": 10, "pct_start": 0.1},
        ValueError,
        "pct_start",
        "raises",
    ),
    (
        "SequentialLR",
        {"schedulers": [SUB, SUB], "milestones": []},
        ValueError,
        "milestones",
        "raises",
    ),
    (
        "SequentialLR",
        {"schedulers": [SUB, SUB, SUB], "milestones": [9, 4]},
        ValueError,
        "milestones",
        "accepts",
    ),
    ("SequentialLR", {"schedulers": [], "milestones": []}, ValueError, "schedulers", "raises"),
    (
        "SequentialLR",
        {
            "schedulers": [SUB, ("SequentialLR", {"schedulers": [SUB], "milestones": []})],
            "milestones": [5],
        },
        ValueError,
        "schedulers[1]",
        "fails",
    ),
    (
        "SequentialLR",
        {
            "schedulers": [SUB, ("OneCycleLR", {"max_lr": 0.1, "total_steps": 500})],
            "milestones": [5],
        },
        ValueError,
        "schedulers[1]",
        None,
    ),
    (
        "ChainedScheduler",
        {"schedulers": [SUB, ("CosineAnnealingLR", {"T_max": 9, "eta_min": 0.01})]},
        ValueError,
        "eta_min",
        None,
    ),
    (
        "ChainedScheduler",
        {
            "schedulers": [
                ("CosineAnnealingLR", {"T_max": 9}),
                SUB,
                ("CosineAnnealingLR", {"T_max": 5}),
            ]
        },
        ValueError,
        "two CosineAnnealingLR",
        None,
    ),
    (
        "ChainedScheduler",
        {"schedulers": [SUB, ("ChainedScheduler", {"schedulers": [SUB]})]},
        ValueError,
        "nesting",
        None,
    ),
]


def _torch_outcome(name, kwargs) -> str:
    """``"raises"`` at construction, ``"fails"`` in a later step, or ``"accepts"``."""
    optimizer = make_torch_optimizer(0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            scheduler = build_torch(name, kwargs)(optimizer)
        except Exception:
            return "raises"
        try:
            for _ in range(kwargs.get("total_steps", 400)):  # OneCycleLR: its legal steps
                optimizer.step()
                scheduler.step()
        except Exception:
            return "fails"
    return "accepts"


@pytest.mark.parametrize(
    "name, kwargs, error, text, torch_does", INVALID, ids=[f"{r[0]}-{r[3]}" for r in INVALID]
)
def test_invalid_arguments_raise_naming_the_parameter(name, kwargs, error, text, torch_does):
    with pytest.raises(error, match=re.escape(text)):
        build_optlib(name, kwargs, 0.1)
    if torch_does is not None:
        outcome = _torch_outcome(name, kwargs)
        assert outcome == torch_does


def test_invalid_learning_rates():
    with pytest.raises(ValueError, match="learning_rate"):
        optlib.step_lr(-0.1, 3)
    with pytest.raises(TypeError, match="learning_rate"):
        optlib.step_lr("0.1", 3)


def test_composite_requires_the_base_lr_torch_gives_each_scheduler():
    with pytest.raises(ValueError, match=r"schedulers\[1\].*learning_rate=0.1"):
        optlib.sequential_lr(0.1, [optlib.step_lr(0.1, 3), optlib.step_lr(0.2, 3)], [5])
    cyclic = optlib.cyclic_lr(0.1, base_lr=0.01, max_lr=0.1)
    with pytest.raises(ValueError, match=r"base lr 0.01 \(from CyclicLR built first\)"):
        optlib.chained_scheduler(0.1, [cyclic, optlib.exponential_lr(0.1, gamma=0.9)])
    optlib.chained_scheduler(0.1, [cyclic, optlib.exponential_lr(0.01, gamma=0.9)])


def test_composite_rejects_metric_driven_and_foreign_schedules():
    plateau = optlib.get_scheduler("ReduceLROnPlateau", learning_rate=0.1)
    with pytest.raises(ValueError, match="ReduceLROnPlateau"):
        optlib.chained_scheduler(0.1, [optlib.step_lr(0.1, 3), plateau])
    with pytest.raises(TypeError, match=r"schedulers\[0\]"):
        optlib.sequential_lr(0.1, [lambda step: 0.1, optlib.step_lr(0.1, 3)], [5])


def test_learning_rate_does_not_change_cyclic_or_one_cycle():
    for make in (
        lambda lr: optlib.cyclic_lr(lr, base_lr=0.01, max_lr=0.1, step_size_up=7),
        lambda lr: optlib.one_cycle_lr(lr, max_lr=0.1, total_steps=60),
    ):
        unset, given = optlib_traces(make(None)), optlib_traces(make(0.5))
        np.testing.assert_array_equal(unset[0], given[0])
        np.testing.assert_array_equal(unset[1], given[1])
