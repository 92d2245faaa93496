"""Property tests of every registered step-based schedule (issue 9.8).

For each name in ``optlib.scheduler_names()`` (metric-driven ones aside), hypothesis draws a
valid configuration (learning rate included) and a few random steps below a random horizon.
Then:

* **finite everywhere**: the schedule is finite at every step up to the horizon and at far
  steps (``10**6`` ... ``2**31 - 1``);
* **within the bounds the reference implies**: e.g. between ``eta_min`` and the base lr for
  the cosines, between ``base_lr`` and ``max_lr`` for CyclicLR, between the final and the
  peak rate for OneCycleLR, in ``[0, lr]`` for the decays (decay factors drawn in ``(0, 1]``,
  lambdas with values in ``[0, 1]``), in ``[lr * min_lr_rate, lr]`` after HF's warm-ups;
* **equal to the reference**: the reference scheduler (torch, transformers, or the seed
  document's loop) is driven step by step to the largest drawn step, and optlib must match
  it at every step up to there (float32 tolerances of ``tests/parity.py``).

The schedules are evaluated eagerly (``jax.vmap`` without ``jit``): each example is a new
configuration, and compiling each would cost more than evaluating it.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from parity import (
    ATOL_PEAK_F32,
    RTOL_F32,
    assert_trace_close,
    build_optlib,
    build_torch,
    torch,
    torch_trace,
)
from references import CosineAnnealingWarmUpRestarts, document_linear_decay
from reliability_cases import HF_NAMES, INT32_MAX, step_based_names

import optlib

transformers = pytest.importorskip("transformers", reason="HF parity needs transformers")

HYPOTHESIS = settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
HORIZON = 300
FAR = [10**6, 10**9, INT32_MAX - 1, INT32_MAX]
BOUND_SLACK = 1e-6  # float32 rounding of the bounds themselves

learning_rates = st.sampled_from([1e-4, 3e-3, 0.1, 1.0]) | st.floats(1e-5, 1.0)
unit_gammas = st.floats(0.05, 1.0)
fractions = st.floats(0.0, 1.0)


def rates_from_zero(high: float):
    """0, or a rate in float32's normal range up to ``high`` (the schedules compute in
    float32: a rate of 1e-98 is 0 there, and a trace whose peak is 1e-98 has no tolerance)."""
    return st.just(0.0) | st.floats(1e-30, high)


def _unit_lambdas():
    # operators only: one function serves torch (a Python int) and jax (a traced int)
    return [
        lambda e: 1.0 / (1.0 + 0.05 * e),
        lambda e: (e % 7) / 7.0,
        lambda e: 0.5 + 0.5 / (1.0 + e),
    ]


def _multipliers():
    return [lambda e: 0.99, lambda e: 1.0 - 0.001 * (e % 5), lambda e: (e + 2.0) / (e + 3.0)]


# ------------------------------------------------------------------ torch configurations


def _decaying(name: str, horizon: int = HORIZON) -> st.SearchStrategy:
    """Configurations of the schedulers whose factor stays in ``[0, 1]``."""
    return {
        "StepLR": st.fixed_dictionaries(dict(step_size=st.integers(1, 100), gamma=unit_gammas)),
        "MultiStepLR": st.fixed_dictionaries(
            dict(milestones=st.lists(st.integers(0, horizon + 10), max_size=6), gamma=unit_gammas)
        ),
        "ExponentialLR": st.fixed_dictionaries(dict(gamma=st.floats(0.9, 1.0))),
        "LinearLR": st.fixed_dictionaries(
            dict(
                start_factor=st.floats(0.01, 1.0),
                end_factor=fractions,
                total_iters=st.integers(1, horizon + 50),
            )
        ),
        "ConstantLR": st.fixed_dictionaries(
            dict(factor=st.floats(0.05, 1.0), total_iters=st.integers(0, horizon + 50))
        ),
        "PolynomialLR": st.fixed_dictionaries(
            dict(total_iters=st.integers(1, horizon + 50), power=st.floats(0.0, 4.0))
        ),
        "CosineAnnealingLR": st.fixed_dictionaries(
            dict(T_max=st.integers(1, horizon + 50), eta_min=st.just(0.0))
        ),
    }[name]


DECAYING = (
    "StepLR",
    "MultiStepLR",
    "ExponentialLR",
    "LinearLR",
    "ConstantLR",
    "PolynomialLR",
    "CosineAnnealingLR",
)  # the cosine last


@st.composite
def cyclic_configs(draw) -> dict:
    config = dict(
        base_lr=draw(st.floats(1e-4, 0.05)),
        max_lr=draw(st.floats(1e-4, 1.0)),
        step_size_up=draw(st.integers(1, 60)),
        step_size_down=draw(st.none() | st.integers(0, 60)),
        mode=draw(st.sampled_from(["triangular", "triangular2", "exp_range"])),
        gamma=draw(st.floats(0.98, 1.0)),
        cycle_momentum=draw(st.booleans()),
    )
    if draw(st.booleans()):
        config["scale_fn"] = draw(st.sampled_from(_unit_lambdas()))
        config["scale_mode"] = draw(st.sampled_from(["cycle", "iterations"]))
    return config


@st.composite
def one_cycle_configs(draw) -> dict:
    config = dict(
        max_lr=draw(st.floats(0.01, 1.0)),
        total_steps=draw(st.integers(2, HORIZON + 50)),
        pct_start=draw(st.floats(0.05, 0.95)),
        anneal_strategy=draw(st.sampled_from(["cos", "linear"])),
        three_phase=draw(st.booleans()),
        div_factor=draw(st.floats(0.5, 50.0)),
        final_div_factor=draw(st.floats(1.0, 1e4)),
        cycle_momentum=draw(st.booleans()),
    )
    try:
        optlib.one_cycle_lr(
            max_lr=config["max_lr"],
            total_steps=config["total_steps"],
            pct_start=config["pct_start"],
            three_phase=config["three_phase"],
        )
    except ValueError:  # a zero-length phase: torch divides by zero there
        assume(False)
    return config


@st.composite
def composite_configs(draw, name: str) -> dict:
    count = draw(st.integers(2, 3))
    # ChainedScheduler without CosineAnnealingLR: one step after a cosine minimum torch's
    # recursion restarts from base * (1 - cos(pi / T_max)) / 2, dropping the factors of the
    # others, which can then lift the rate above the base lr (optlib reproduces it; the
    # torch parity tests cover it). Without it, every factor is in [0, 1].
    candidates = DECAYING if name == "SequentialLR" else DECAYING[:-1]
    names = draw(st.lists(st.sampled_from(candidates), min_size=count, max_size=count))
    subs = [(sub, draw(_decaying(sub))) for sub in names]
    if name == "SequentialLR":
        milestones = sorted(
            draw(st.lists(st.integers(0, HORIZON), min_size=count - 1, max_size=count - 1))
        )
        return {"schedulers": subs, "milestones": milestones}
    return {"schedulers": subs}


def torch_configs(name: str) -> st.SearchStrategy:
    if name in DECAYING:
        return (
            _decaying(name)
            if name != "CosineAnnealingLR"
            else st.fixed_dictionaries(
                dict(T_max=st.integers(1, HORIZON + 50), eta_min=st.floats(0.0, 0.2))
            )
        )
    return {
        "LambdaLR": st.fixed_dictionaries(dict(lr_lambda=st.sampled_from(_unit_lambdas()))),
        "MultiplicativeLR": st.fixed_dictionaries(dict(lr_lambda=st.sampled_from(_multipliers()))),
        "CosineAnnealingWarmRestarts": st.fixed_dictionaries(
            dict(T_0=st.integers(1, 60), T_mult=st.integers(1, 4), eta_min=st.floats(0.0, 0.2))
        ),
        "CyclicLR": cyclic_configs(),
        "OneCycleLR": one_cycle_configs(),
        "SequentialLR": composite_configs("SequentialLR"),
        "ChainedScheduler": composite_configs("ChainedScheduler"),
    }[name]


def torch_bounds(name: str, lr: float, config: dict) -> tuple[float, float]:
    if name in ("CosineAnnealingLR", "CosineAnnealingWarmRestarts"):
        return min(lr, config["eta_min"]), max(lr, config["eta_min"])
    if name == "LinearLR":
        factors = (config["start_factor"], config["end_factor"])
        return lr * min(factors), lr * max(factors)
    if name == "ConstantLR":
        return lr * config["factor"], lr
    if name == "CyclicLR":
        return min(config["base_lr"], config["max_lr"]), max(config["base_lr"], config["max_lr"])
    if name == "OneCycleLR":
        initial = config["max_lr"] / config["div_factor"]
        rates = (initial, config["max_lr"], initial / config["final_div_factor"])
        return min(rates), max(rates)
    return 0.0, lr  # the decays, lambdas and multipliers in [0, 1], their composites


# --------------------------------------------------------------------- HF configurations


@st.composite
def hf_configs(draw, name: str, lr: float) -> tuple[dict, dict]:
    """``(standard arguments, scheduler_specific_kwargs)``."""
    warmup = draw(st.sampled_from([0, 1]) | st.integers(2, 80))
    total = warmup + draw(st.integers(1, 250))
    standard = dict(num_warmup_steps=warmup, num_training_steps=total)
    cycles = draw(st.sampled_from([0.5, 1.0, 1.5]) | st.floats(0.2, 3.0))
    specific: dict = {}
    if name == "constant":
        standard = {}
    elif name in ("constant_with_warmup", "inverse_sqrt"):
        standard = dict(num_warmup_steps=warmup)
        if name == "inverse_sqrt" and draw(st.booleans()):
            specific["timescale"] = draw(st.integers(1, 400))
    elif name == "cosine":
        specific["num_cycles"] = cycles
    elif name == "cosine_with_restarts":
        specific["num_cycles"] = draw(st.integers(1, 6))
    elif name == "polynomial":
        specific = dict(lr_end=lr * draw(st.floats(0.0, 0.9)), power=draw(st.floats(0.2, 3.0)))
    elif name in ("cosine_with_min_lr", "cosine_warmup_with_min_lr"):
        specific["num_cycles"] = cycles
        floor = draw(st.floats(0.0, 0.5))
        specific.update({"min_lr": lr * floor} if draw(st.booleans()) else {"min_lr_rate": floor})
        if name == "cosine_warmup_with_min_lr" and draw(st.booleans()):
            specific["warmup_lr_rate"] = draw(st.floats(0.0, 0.5))
    elif name == "warmup_stable_decay":
        specific = dict(
            num_decay_steps=draw(st.integers(0, total - warmup)),
            warmup_type=draw(st.sampled_from(["linear", "cosine", "1-sqrt"])),
            decay_type=draw(st.sampled_from(["linear", "cosine", "1-sqrt"])),
            min_lr_ratio=draw(st.sampled_from([0.0]) | st.floats(0.0, 0.3)),
            num_cycles=cycles,
        )
    return standard, specific


def hf_floor(name: str, lr: float, specific: dict) -> float:
    """The rate HF's schedule never goes below once its warm-up is over."""
    if name in ("cosine_with_min_lr", "cosine_warmup_with_min_lr"):
        return specific.get("min_lr", lr * specific.get("min_lr_rate", 0.0))
    if name == "polynomial":
        return specific["lr_end"]
    return 0.0


# ------------------------------------------------------------------------------ the checks


def draw_steps(data, horizon: int) -> list[int]:
    steps = data.draw(st.lists(st.integers(0, horizon - 1), min_size=1, max_size=8))
    return sorted(set(steps))


EVERYWHERE = list(range(HORIZON + 60)) + FAR  # one shape: eager ops compile once per schedule type


def assert_properties(
    schedule, reference_trace, steps, low, high, *, bounded_until=None, far=True, label=""
):
    """Finite everywhere (up to the horizon and far out), in ``[low, high]`` (at steps below
    ``bounded_until``, if given), and equal to the reference at every step up to the
    largest drawn one."""
    everywhere = EVERYWHERE if far else EVERYWHERE[: -len(FAR)]
    values = np.asarray(jax.vmap(schedule)(jnp.asarray(everywhere, jnp.int32)), np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    assert bad.size == 0, f"{label}: not finite at steps {[everywhere[i] for i in bad[:5]]}"
    checked = np.asarray(everywhere) < (bounded_until if bounded_until is not None else 2**32)
    slack = BOUND_SLACK * max(abs(low), abs(high)) + 1e-30
    outside = np.flatnonzero(checked & ((values < low - slack) | (values > high + slack)))
    assert outside.size == 0, (
        f"{label}: outside [{low}, {high}] at steps "
        f"{[everywhere[i] for i in outside[:5]]}: {values[outside[:5]]}"
    )
    last = max(steps) + 1
    assert_trace_close(
        values[:last], reference_trace[:last], rtol=RTOL_F32, atol_peak=ATOL_PEAK_F32, label=label
    )


def _quietly(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


TORCH_NAMES = (
    "StepLR",
    "MultiStepLR",
    "ExponentialLR",
    "CosineAnnealingLR",
    "LinearLR",
    "LambdaLR",
    "MultiplicativeLR",
    "ConstantLR",
    "PolynomialLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "OneCycleLR",
    "SequentialLR",
    "ChainedScheduler",
)
EXTRA_NAMES = ("cosine_annealing_warm_up_restarts", "CosineAnnealingWarmUpRestarts", "linear_decay")


def test_every_step_based_schedule_has_a_property_test():
    assert set(step_based_names()) == (
        set(TORCH_NAMES) | set(HF_NAMES) | set(EXTRA_NAMES) | set(SWA_NAMES)
    )


@pytest.mark.parametrize("name", TORCH_NAMES)
def test_torch_schedule_properties(name):
    @HYPOTHESIS
    @given(lr=learning_rates, config=torch_configs(name), data=st.data())
    def check(lr, config, data):
        horizon = config.get("total_steps", HORIZON + 1) if name == "OneCycleLR" else HORIZON
        steps = draw_steps(data, horizon)
        reference = _quietly(torch_trace, build_torch(name, config), lr, max(steps) + 1)
        schedule = build_optlib(name, config, lr)
        low, high = torch_bounds(name, lr, config)
        # OneCycleLR: at step total_steps torch extrapolates its last phase one step beyond
        # the path (optlib matches, then holds that value where torch would raise)
        bounded_until = config["total_steps"] if name == "OneCycleLR" else None
        assert_properties(
            schedule,
            reference,
            steps,
            low,
            high,
            bounded_until=bounded_until,
            far=name != "MultiplicativeLR",
            label=f"{name} lr={lr} {config}",
        )

    check()


@pytest.mark.parametrize("name", HF_NAMES)
def test_hf_schedule_properties(name):
    @HYPOTHESIS
    @given(lr=learning_rates, data=st.data())
    def check(lr, data):
        standard, specific = data.draw(hf_configs(name, lr))
        steps = draw_steps(data, HORIZON)

        def make(optimizer):
            return transformers.get_scheduler(
                name, optimizer, scheduler_specific_kwargs=specific or None, **standard
            )

        reference = _quietly(torch_trace, make, lr, max(steps) + 1)
        schedule = _quietly(
            optlib.get_scheduler,
            name,
            learning_rate=lr,
            **standard,
            scheduler_specific_kwargs=specific,
        )
        values = np.asarray(jax.vmap(schedule)(jnp.asarray(EVERYWHERE, jnp.int32)), np.float64)
        warmup = standard.get("num_warmup_steps", 0)
        floor = hf_floor(name, lr, specific)
        assert np.all(values[warmup:] >= floor * (1 - BOUND_SLACK) - 1e-30), f"{name}: below floor"
        assert_properties(
            schedule, reference, steps, 0.0, lr, label=f"{name} lr={lr} {standard} {specific}"
        )

    check()


@st.composite
def warm_up_restarts_configs(draw) -> dict:
    first = draw(st.integers(1, 60))
    return dict(
        T_0=first,
        T_mult=draw(st.integers(1, 3)),
        eta_max=draw(rates_from_zero(0.2)),
        T_up=draw(st.integers(0, first - 1)),
        gamma=draw(fractions),
    )


@pytest.mark.parametrize("name", EXTRA_NAMES[:2])
def test_warm_up_restarts_properties(name):
    @HYPOTHESIS
    @given(base=rates_from_zero(0.01), config=warm_up_restarts_configs(), data=st.data())
    def check(base, config, data):
        steps = draw_steps(data, HORIZON)
        reference = _quietly(
            torch_trace,
            lambda opt: CosineAnnealingWarmUpRestarts(opt, **config),
            base,
            max(steps) + 1,
        )
        schedule = optlib.get_scheduler(name, learning_rate=base, **config)
        assert_properties(
            schedule,
            reference,
            steps,
            0.0,
            max(base, config["eta_max"]),
            label=f"{name} base={base} {config}",
        )

    check()


def test_linear_decay_properties():
    @HYPOTHESIS
    @given(
        initial=learning_rates,
        final=st.floats(0.0, 1.0),
        total=st.integers(1, HORIZON),
        data=st.data(),
    )
    def check(initial, final, total, data):
        hold = data.draw(st.integers(0, total))
        steps = draw_steps(data, HORIZON)
        reference = document_linear_decay(initial, final, total, hold, max(steps) + 1)
        schedule = optlib.get_scheduler(
            "linear_decay",
            learning_rate=initial,
            num_training_steps=total,
            scheduler_specific_kwargs={"final_learning_rate": final, "num_hold_steps": hold},
        )
        assert_properties(
            schedule,
            reference,
            steps,
            min(initial, final),
            max(initial, final),
            label=f"linear_decay {initial} {final} {total} {hold}",
        )

    check()


# ------------------------------------------------------------------ torch.optim.swa_utils

SWA_NAMES = ("SWALR",)


def test_swalr_properties():
    @HYPOTHESIS
    @given(
        lr=learning_rates,
        swa_lr=st.floats(0.0, 1.0),
        anneal_epochs=st.sampled_from([0, 1]) | st.integers(2, HORIZON + 50),
        strategy=st.sampled_from(["cos", "linear"]),
        data=st.data(),
    )
    def check(lr, swa_lr, anneal_epochs, strategy, data):
        steps = draw_steps(data, HORIZON)
        config = dict(swa_lr=swa_lr, anneal_epochs=anneal_epochs, anneal_strategy=strategy)
        reference = _quietly(
            torch_trace, lambda opt: torch.optim.swa_utils.SWALR(opt, **config), lr, max(steps) + 1
        )
        schedule = optlib.get_scheduler("SWALR", learning_rate=lr, **config)
        assert_properties(
            schedule,
            reference,
            steps,
            min(lr, swa_lr),
            max(lr, swa_lr),
            label=f"SWALR lr={lr} {config}",
        )

    check()
