"""torch schedules stay exact at steps around 10**9 and at 2**31 - 1 (optax's int32 count).

float32 cannot hold such step numbers (``float32(10**9 - 1) == float32(10**9)``), so a
schedule that divides the step as a float gets cycle indices and positions wrong there.
Each row compares optlib, in float32 and under x64, with the float64 Python closed form of
torch's scheduler, whose indices are computed on Python integers. Rows put cycle or decay
boundaries right at the steps checked.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from parity import ATOL_PEAK_F32, RTOL_F32, RTOL_F64, assert_trace_close

import optlib

LR = 0.1
STEPS = [10**9 - 1, 10**9, 10**9 + 1, 10**9 + 123_457, 2**31 - 2, 2**31 - 1]


def cosine(high: float, low: float, fraction: float) -> float:
    """torch's ``low + (high - low) * (1 + cos(pi * fraction)) / 2``."""
    return low + (high - low) * (1 + math.cos(math.pi * fraction)) / 2


def warm_restarts(t: int, first: int, growth: int, eta_min: float) -> float:
    start, length = 0, first
    while t >= start + length:
        start, length = start + length, length * growth
    return cosine(LR, eta_min, (t - start) / length)


def cyclic(t: int, up: int, down: int, mode: str, gamma: float = 1.0, momentum: bool = False):
    """CyclicLR's closed form (``base_lr=0.01, max_lr=0.1``; momentum 0.8..0.9)."""
    total = up + down
    cycle, position = 1 + t // total, t % total
    x, ratio = position / total, up / total
    height = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
    scale = {"triangular": 1.0, "triangular2": 0.5 ** (cycle - 1), "exp_range": gamma**t}[mode]
    if momentum:
        return 0.9 - (0.9 - 0.8) * height * scale
    return 0.01 + (0.1 - 0.01) * height * scale


def one_cycle(t: int, total: int, pct: float, three_phase: bool, strategy: str, key: str = "lr"):
    """OneCycleLR's phases (``max_lr=0.1``, torch's other defaults), as torch computes them."""
    initial = 0.1 / 25.0
    lr = {"initial": initial, "max": 0.1, "min": initial / 1e4}
    momentum = {"max": 0.95, "base": 0.85}
    if three_phase:
        ends = [float(pct * total) - 1, float(2 * pct * total) - 2, total - 1]
        path = {
            "lr": [("initial", "max"), ("max", "initial"), ("initial", "min")],
            "momentum": [("max", "base"), ("base", "max"), ("max", "max")],
        }
    else:
        ends = [float(pct * total) - 1, total - 1]
        path = {
            "lr": [("initial", "max"), ("max", "min")],
            "momentum": [("max", "base"), ("base", "max")],
        }
    values = lr if key == "lr" else momentum
    start = 0.0
    for index, end in enumerate(ends):
        if t <= end or index == len(ends) - 1:
            pct_done = (t - start) / (end - start)
            high, low = (values[name] for name in path[key][index])
            if strategy == "cos":
                return low + (high - low) / 2.0 * (math.cos(math.pi * pct_done) + 1)
            return (low - high) * pct_done + high
        start = end
    raise AssertionError


ROWS = [
    (
        "StepLR-boundary-at-1e9",
        lambda: optlib.step_lr(LR, step_size=10**9, gamma=0.5),
        lambda t: LR * 0.5 ** (t // 10**9),
    ),
    (
        "StepLR-small-steps",
        lambda: optlib.step_lr(LR, step_size=7, gamma=1 - 1e-9),
        lambda t: LR * (1 - 1e-9) ** (t // 7),
    ),
    (
        "MultiStepLR",
        lambda: optlib.multi_step_lr(LR, milestones=[10**9, 10**9, 2**31 - 1], gamma=0.3),
        lambda t: LR * 0.3 ** sum(m <= t for m in [10**9, 10**9, 2**31 - 1]),
    ),
    (
        "ExponentialLR",
        lambda: optlib.exponential_lr(LR, gamma=1 - 1e-9),
        lambda t: LR * (1 - 1e-9) ** t,
    ),
    (
        "CosineAnnealingLR-near-minimum",
        lambda: optlib.cosine_annealing_lr(LR, T_max=10**9 - 3, eta_min=1e-4),
        lambda t: cosine(LR, 1e-4, (t % (2 * (10**9 - 3))) / (10**9 - 3)),
    ),
    (
        "CosineAnnealingLR-many-periods",
        lambda: optlib.cosine_annealing_lr(LR, T_max=12345),
        lambda t: cosine(LR, 0.0, (t % 24690) / 12345),
    ),
    (
        "LinearLR",
        lambda: optlib.linear_lr(LR, start_factor=0.2, end_factor=0.9, total_iters=2**31 - 3),
        lambda t: LR * (0.2 + 0.7 * min(t, 2**31 - 3) / (2**31 - 3)),
    ),
    (
        "PolynomialLR",
        lambda: optlib.polynomial_lr(LR, total_iters=1_500_000_000, power=2.0),
        lambda t: LR * (1 - min(t, 1_500_000_000) / 1_500_000_000) ** 2.0,
    ),
    (
        "ConstantLR",
        lambda: optlib.constant_lr(LR, factor=0.5, total_iters=10**9),
        lambda t: LR * (0.5 if t < 10**9 else 1.0),
    ),
    (
        "WarmRestarts-T_mult-1",
        lambda: optlib.cosine_annealing_warm_restarts(LR, T_0=1000, eta_min=1e-3),
        lambda t: warm_restarts(t, 1000, 1, 1e-3),
    ),
    (
        "WarmRestarts-T_mult-2",
        lambda: optlib.cosine_annealing_warm_restarts(LR, T_0=7, T_mult=2),
        lambda t: warm_restarts(t, 7, 2, 0.0),
    ),
    (
        "WarmRestarts-T_mult-3",
        lambda: optlib.cosine_annealing_warm_restarts(LR, T_0=3, T_mult=3),
        lambda t: warm_restarts(t, 3, 3, 0.0),
    ),
    *[
        (
            f"CyclicLR-{mode}{'-momentum' * momentum}",
            lambda mode=mode, momentum=momentum: (lambda s: s.momentum if momentum else s)(
                optlib.cyclic_lr(
                    base_lr=0.01,
                    max_lr=0.1,
                    step_size_up=1000,
                    step_size_down=777,
                    mode=mode,
                    gamma=1 - 1e-9,
                )
            ),
            lambda t, mode=mode, momentum=momentum: cyclic(t, 1000, 777, mode, 1 - 1e-9, momentum),
        )
        for mode in ("triangular", "triangular2", "exp_range")
        for momentum in (False, True)
        if mode == "triangular" or not momentum
    ],
    *[
        (
            f"OneCycleLR-{strategy}{'-three-phase' * three_phase}-{key}",
            lambda strategy=strategy, three_phase=three_phase, key=key: (
                lambda s: s.momentum if key == "momentum" else s
            )(
                optlib.one_cycle_lr(
                    max_lr=0.1,
                    total_steps=2**31 - 1,
                    pct_start=0.3,
                    anneal_strategy=strategy,
                    three_phase=three_phase,
                )
            ),
            lambda t, strategy=strategy, three_phase=three_phase, key=key: one_cycle(
                t, 2**31 - 1, 0.3, three_phase, strategy, key
            ),
        )
        for strategy in ("cos", "linear")
        for three_phase in (False, True)
        for key in ("lr", "momentum")
        if strategy == "cos" or key == "lr"
    ],
    (
        "SequentialLR",
        lambda: optlib.sequential_lr(
            LR,
            [optlib.linear_lr(LR, total_iters=1000), optlib.cosine_annealing_lr(LR, T_max=10**9)],
            milestones=[1000],
        ),
        lambda t: cosine(LR, 0.0, ((t - 1000) % (2 * 10**9)) / 10**9),
    ),
    (
        "ChainedScheduler",
        lambda: optlib.chained_scheduler(
            LR,
            [
                optlib.step_lr(LR, step_size=10**9, gamma=0.5),
                optlib.exponential_lr(LR, gamma=1 - 1e-10),
            ],
        ),
        lambda t: LR * 0.5 ** (t // 10**9) * (1 - 1e-10) ** t,
    ),
    (
        "per_epoch-StepLR",
        lambda: optlib.per_epoch(optlib.step_lr(LR, step_size=30, gamma=0.9), 10**6),
        lambda t: LR * 0.9 ** ((t // 10**6) // 30),
    ),
]


def test_float32_cannot_hold_these_steps():
    assert np.float32(10**9 - 1) == np.float32(10**9)
    assert np.float32(2**31 - 2) == np.float32(2**31 - 1)


@pytest.mark.parametrize("x64_enabled", [False, True], ids=["float32", "float64"])
@pytest.mark.parametrize("make, reference", [row[1:] for row in ROWS], ids=[row[0] for row in ROWS])
def test_exact_at_steps_near_int32_max(make, reference, x64_enabled):
    expected = np.asarray([reference(t) for t in STEPS])
    with jax.enable_x64(x64_enabled):
        schedule = make()
        ours = np.asarray(jax.jit(jax.vmap(schedule))(jnp.asarray(STEPS, jnp.int32)), np.float64)
    if x64_enabled:
        # The float64 reference itself rounds 1 + cos(x) near a minimum: a few ulps of the peak.
        assert_trace_close(ours, expected, rtol=RTOL_F64, atol_peak=1e-15)
    else:
        assert_trace_close(ours, expected, rtol=RTOL_F32, atol_peak=ATOL_PEAK_F32)
