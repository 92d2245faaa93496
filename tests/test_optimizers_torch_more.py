"""optlib.radam / adamax / rprop against torch.optim.RAdam / Adamax / Rprop, NAdam in float64,
and CosineAnnealingWarmRestarts at fractional epochs.

The configurations are torch's own: ``optim_db``'s ``optim_inputs_func(device="cpu")`` for each
optimizer (torch's optimizer test database), without the implementation switches (foreach,
fused, capturable, differentiable) that have no meaning in optlib. Both frameworks run the
quartic problem of ``parity.py`` step by step on their own parameters (optlib: one jitted
``lax.scan``); float64 runs agree to float64 rounding, float32 ones to float32 rounding.
"""

from __future__ import annotations

import sys
import types
import unittest
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from parity import (
    OPTIMIZER_RTOL_F32,
    OPTIMIZER_RTOL_F64,
    RTOL_F32,
    assert_trace_close,
    make_problem,
    make_torch_optimizer,
    max_relative_error,
    optlib_trajectory,
    torch,
    torch_kwargs_to_optlib,
    torch_trajectory,
)

import optlib

STEPS = 40
OPTIMIZERS = {
    "RAdam": (torch.optim.RAdam, optlib.radam),
    "Adamax": (torch.optim.Adamax, optlib.adamax),
    "Rprop": (torch.optim.Rprop, optlib.rprop),
}
SWITCHES = ("foreach", "fused", "capturable", "differentiable")


def _optim_db() -> dict:
    """torch's ``optim_db`` by class name. Its module imports ``expecttest`` (a test-only
    dependency of torch) for a base class only; a stand-in is enough when it is missing."""
    try:
        import expecttest  # noqa: F401
    except ModuleNotFoundError:
        stand_in = types.ModuleType("expecttest")
        stand_in.TestCase = unittest.TestCase
        sys.modules["expecttest"] = stand_in
    from torch.testing._internal.common_optimizers import optim_db

    return {info.optim_cls.__name__: info for info in optim_db}


def _as_optlib_config(kwargs: dict) -> dict:
    """torch's kwargs minus the implementation switches, tensor values as floats."""
    return {
        key: float(value) if isinstance(value, torch.Tensor) else value
        for key, value in kwargs.items()
        if key not in SWITCHES
    }


def torch_db_configs() -> list[tuple[str, dict, str]]:
    """``(name, kwargs, desc)`` of every distinct configuration torch's database lists."""
    database = _optim_db()
    configs = []
    for name in OPTIMIZERS:
        seen = []
        for optim_input in database[name].optim_inputs_func(device="cpu"):
            kwargs = _as_optlib_config(optim_input.kwargs)
            if kwargs not in seen:  # a config differing from another only by a switch
                seen.append(kwargs)
                configs.append((name, kwargs, optim_input.desc))
    return configs


DB_CONFIGS = torch_db_configs()
# RAdam's switch to the rectified update: step 6 for the default b2 = 0.999, 10 for 0.7, 16 for
# 0.67; never for b2 <= 2/3 (rho_inf <= 5). A switch one step early or late is a large error.
SWITCH_CONFIGS = [
    ("RAdam", {"lr": 0.05, "betas": (0.9, beta2)}, f"rectified from torch's step, b2={beta2}")
    for beta2 in (0.9, 0.7, 0.67, 0.6)
]
EXTRA_CONFIGS = [
    ("Adamax", {"lr": 0.05, "betas": (0.5, 0.8), "eps": 1e-3}, "betas, eps"),
    ("Rprop", {"lr": 100.0, "step_sizes": (1e-6, 50)}, "first step clipped to step_sizes[1]"),
    ("Rprop", {"lr": 1e-8, "etas": (0.3, 1.1)}, "first step clipped to step_sizes[0]"),
]
ALL_CONFIGS = DB_CONFIGS + SWITCH_CONFIGS + EXTRA_CONFIGS


def _id(config) -> str:
    name, kwargs, desc = config
    return f"{name}-{desc}-" + (",".join(f"{k}={v}" for k, v in kwargs.items()) or "defaults")


def run_case(name, kwargs, dtype, steps=STEPS, *, learning_rate=None, metrics=None, **hooks):
    """``(max relative parameter error, optlib state, torch optimizer)`` of one run."""
    torch_cls, optlib_fn = OPTIMIZERS[name]
    problem = make_problem(steps, sign=-1.0 if kwargs.get("maximize") else 1.0)
    optlib_kwargs = torch_kwargs_to_optlib(kwargs)
    if learning_rate is not None:
        optlib_kwargs["learning_rate"] = learning_rate
    jax_dtype = jnp.float64 if dtype == torch.float64 else jnp.float32
    ours, state = optlib_trajectory(optlib_fn(**optlib_kwargs), problem, jax_dtype, metrics=metrics)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's scheduler warnings
        reference, optimizer, _ = torch_trajectory(
            lambda params: torch_cls(list(params.values()), **kwargs),
            problem,
            dtype,
            metrics=metrics,
            **hooks,
        )
    return max_relative_error(ours, reference), state, optimizer


def test_torch_database_lists_the_expected_configurations():
    counts = {name: sum(c[0] == name for c in DB_CONFIGS) for name in OPTIMIZERS}
    assert counts == {"RAdam": 6, "Adamax": 5, "Rprop": 5}, counts


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=[_id(c) for c in ALL_CONFIGS])
def test_float64_trajectory_matches_torch(config, x64):
    name, kwargs, _ = config
    error, *_ = run_case(name, kwargs, torch.float64)
    assert error <= OPTIMIZER_RTOL_F64, f"{_id(config)}: max relative error {error:.3e}"


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=[_id(c) for c in ALL_CONFIGS])
def test_float32_trajectory_matches_torch(config):
    name, kwargs, _ = config
    error, *_ = run_case(name, kwargs, torch.float32)
    assert error <= OPTIMIZER_RTOL_F32, f"{_id(config)}: max relative error {error:.3e}"


# ---------------------------------------------------------------------------------------------
# Learning-rate schedules, momentum cycling, metric-driven rates.


def _lr_factor(step):
    return 0.5 + 0.5 * jnp.cos(jnp.pi * step / 25.0)


SCHEDULE_CASES = [
    ("RAdam", {"lr": 0.05, "weight_decay": 0.1}),
    ("Adamax", {"lr": 0.05}),
    ("Rprop", {"lr": 0.02}),
]


@pytest.mark.parametrize("name, kwargs", SCHEDULE_CASES, ids=[c[0] for c in SCHEDULE_CASES])
def test_lambda_lr_schedule_matches_torch(name, kwargs, x64):
    """RAdam and Adamax read the scheduled lr at every step. torch's Rprop reads ``lr`` once,
    when it creates its state (the first step): the schedule's value at count 0 sets the
    initial step sizes and later values only change ``group['lr']``; optlib does the same."""
    base = kwargs["lr"]
    error, state, optimizer = run_case(
        name,
        kwargs,
        torch.float64,
        learning_rate=lambda step: base * _lr_factor(step),
        scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: float(_lr_factor(step))
        ),
    )
    assert error <= OPTIMIZER_RTOL_F64, f"{name}: max relative error {error:.3e}"
    np.testing.assert_allclose(
        float(optlib.current_learning_rate(state)), optimizer.param_groups[0]["lr"], rtol=1e-12
    )


def test_rprop_ignores_the_schedule_after_its_first_step_like_torch(x64):
    constant, *_ = run_case("Rprop", {"lr": 0.02}, torch.float64)
    problem = make_problem(STEPS)
    scheduled, _ = optlib_trajectory(
        optlib.rprop(lambda step: 0.02 * _lr_factor(step)), problem, jnp.float64
    )
    fixed, _ = optlib_trajectory(optlib.rprop(0.02), problem, jnp.float64)
    assert constant <= OPTIMIZER_RTOL_F64
    for key in fixed:
        np.testing.assert_array_equal(scheduled[key], fixed[key])


def test_rprop_with_nonfinite_gradients_follows_torch(x64):
    """torch's ``sign`` of NaN is 0: a NaN product keeps the step size (factor 1), a NaN
    gradient does not move its entry (it is still stored as ``prev``), an Inf one moves it by
    the step size; every later step then reads that ``prev`` as torch does."""
    p0 = np.array([1.0, -2.0, 0.5, 3.0, 0.0])
    nan, inf = np.nan, np.inf
    gradients = [
        [0.1, -0.2, 0.3, 0.0, 1.0],
        [nan, 0.2, -0.3, inf, 1.0],
        [0.1, nan, 0.3, -1.0, -inf],
        [0.1, 0.2, 0.3, 1.0, 1.0],
        [-0.1, 0.2, 0.3, 1.0, nan],
    ]
    reference = torch.tensor(p0, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Rprop([reference], lr=0.01)
    tx = optlib.rprop(0.01)
    params = jnp.asarray(p0)
    state = tx.init(params)
    for gradient in gradients:
        reference.grad = torch.tensor(gradient, dtype=torch.float64)
        optimizer.step()
        updates, state = tx.update(jnp.asarray(gradient), state, params)
        params = optax.apply_updates(params, updates)
        torch_state = optimizer.state[reference]
        for ours, theirs in [
            (params, reference.detach()),
            (state["rprop"].step_size, torch_state["step_size"]),
            (state["rprop"].prev, torch_state["prev"]),
        ]:
            np.testing.assert_array_equal(np.asarray(ours), theirs.numpy())


def test_rprop_takes_the_rate_set_before_its_first_step_like_torch(x64):
    """torch creates Rprop's step sizes at the first ``step()`` from ``group['lr']`` then:
    a rate injected after ``init`` and before the first update is the one used."""
    problem = make_problem(STEPS)

    def set_rate_before_first_step(opt, step):
        if step == 0:
            opt.param_groups[0]["lr"] = 0.05

    reference, *_ = torch_trajectory(
        lambda params: torch.optim.Rprop(params.values(), lr=0.01),
        problem,
        torch.float64,
        before_step=set_rate_before_first_step,
    )
    injected = optax.inject_hyperparams(optlib.rprop)(learning_rate=0.01)
    init = injected.init

    def init_then_set_rate(params):
        state = init(params)
        state.hyperparams["learning_rate"] = jnp.asarray(0.05, jnp.float64)
        return state

    ours, _ = optlib_trajectory(
        optax.GradientTransformation(init_then_set_rate, injected.update), problem, jnp.float64
    )
    assert max_relative_error(ours, reference) <= OPTIMIZER_RTOL_F64


@pytest.mark.parametrize("name", ["RAdam", "Adamax"])
def test_one_cycle_lr_cycles_beta1_like_torch(name, x64):
    """torch's OneCycleLR (cycle_momentum=True) sets lr and betas[0] at every step."""
    schedule = optlib.one_cycle_lr(max_lr=0.05, total_steps=STEPS + 1)
    assert isinstance(schedule, optlib.MomentumSchedule)
    error, state, optimizer = run_case(
        name,
        {"lr": 0.05, "weight_decay": 0.01},
        torch.float64,
        learning_rate=schedule,
        scheduler=lambda opt: torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=0.05, total_steps=STEPS + 1
        ),
    )
    assert error <= OPTIMIZER_RTOL_F64, f"{name} + OneCycleLR: max relative error {error:.3e}"
    np.testing.assert_allclose(
        float(optlib.current_learning_rate(state)), optimizer.param_groups[0]["lr"], rtol=1e-12
    )


def test_momentum_schedule_rejected_for_rprop_like_torch():
    optimizer = torch.optim.Rprop([torch.nn.Parameter(torch.zeros(1))])
    with pytest.raises(ValueError, match="momentum or beta1"):
        torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=10)
    with pytest.raises(ValueError, match="momentum or beta1"):
        optlib.rprop(optlib.one_cycle_lr(max_lr=0.1, total_steps=10))


# A loss that improves, then stalls: ReduceLROnPlateau(patience=2) halves the lr a few times.
PLATEAU_METRICS = np.r_[np.linspace(1.0, 0.5, 8), np.full(STEPS - 8, 0.5)]


@pytest.mark.parametrize("name, kwargs", SCHEDULE_CASES, ids=[c[0] for c in SCHEDULE_CASES])
def test_reduce_lr_on_plateau_learning_rate_matches_torch(name, kwargs, x64):
    """``optimizer.step(); scheduler.step(metric)`` in torch; ``update(..., value=metric)`` in
    optlib. Rprop's steps ignore the reduced lr (torch reads lr once), its group lr does not."""
    error, state, optimizer = run_case(
        name,
        kwargs,
        torch.float64,
        learning_rate=optlib.reduce_lr_on_plateau(kwargs["lr"], patience=2, factor=0.5),
        metrics=PLATEAU_METRICS,
        scheduler=lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, patience=2, factor=0.5
        ),
    )
    assert error <= OPTIMIZER_RTOL_F64, f"{name}: max relative error {error:.3e}"
    final_lr = optimizer.param_groups[0]["lr"]
    assert final_lr < kwargs["lr"] / 4  # the plateau did reduce the rate
    np.testing.assert_allclose(float(optlib.current_learning_rate(state)), final_lr, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Where optax's twins differ from torch (documented in the docstrings and benchmarks/twins.py).


def _first_differing_step(ours: dict, reference: dict, tolerance: float) -> int | None:
    for step in range(next(iter(reference.values())).shape[0]):
        single = max_relative_error(
            {k: v[step : step + 1] for k, v in ours.items()},
            {k: v[step : step + 1] for k, v in reference.items()},
        )
        if single > tolerance:
            return step + 1
    return None


def test_optax_radam_departs_from_torch_at_the_first_rectified_step_and_optlib_does_not(x64):
    problem = make_problem(STEPS)
    reference, *_ = torch_trajectory(
        lambda params: torch.optim.RAdam(list(params.values()), lr=0.05, eps=1e-4),
        problem,
        torch.float64,
    )
    twin, _ = optlib_trajectory(optax.radam(0.05, eps=1e-4), problem, jnp.float64)
    ours, _ = optlib_trajectory(optlib.radam(0.05, eps=1e-4), problem, jnp.float64)
    assert _first_differing_step(twin, reference, OPTIMIZER_RTOL_F64) == 6
    assert _first_differing_step(ours, reference, OPTIMIZER_RTOL_F64) is None


def test_optax_rprop_departs_from_torch_at_step_one_and_optlib_does_not(x64):
    problem = make_problem(STEPS)
    reference, *_ = torch_trajectory(
        lambda params: torch.optim.Rprop(list(params.values())), problem, torch.float64
    )
    twin, _ = optlib_trajectory(optax.rprop(1e-2), problem, jnp.float64)
    ours, _ = optlib_trajectory(optlib.rprop(1e-2), problem, jnp.float64)
    assert _first_differing_step(twin, reference, OPTIMIZER_RTOL_F64) == 1
    assert _first_differing_step(ours, reference, 0.0) is None  # bit for bit


# ---------------------------------------------------------------------------------------------
# NAdam in float64: mu_product follows the parameters' dtype.


@pytest.mark.parametrize("decoupled", [False, True])
def test_nadam_float64_matches_torch_with_float64_default_dtype(decoupled, x64):
    """torch keeps ``mu_product`` in its default dtype (float64 here, ``torch_trajectory``);
    a float32 ``mu_product`` would be off by ~1e-7 relative from the first step."""
    kwargs = {"lr": 0.05, "betas": (0.8, 0.95), "weight_decay": 0.1}
    kwargs["decoupled_weight_decay"] = decoupled
    problem = make_problem(STEPS)
    reference, optimizer, _ = torch_trajectory(
        lambda params: torch.optim.NAdam(list(params.values()), **kwargs), problem, torch.float64
    )
    assert next(iter(optimizer.state.values()))["mu_product"].dtype == torch.float64
    ours, state = optlib_trajectory(
        optlib.nadam(**torch_kwargs_to_optlib(kwargs)), problem, jnp.float64
    )
    assert state["nadam"].mu_product.dtype == jnp.float64
    error = max_relative_error(ours, reference)
    assert error <= OPTIMIZER_RTOL_F64, f"max relative error {error:.3e}"


# ---------------------------------------------------------------------------------------------
# CosineAnnealingWarmRestarts at fractional epochs: torch's scheduler.step(epoch + i / iters).

ITERS = 7


def _torch_fractional_lrs(epochs, **kwargs) -> np.ndarray:
    optimizer = make_torch_optimizer(0.1)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, **kwargs)
    rates = []
    for epoch in epochs:
        optimizer.step()
        scheduler.step(epoch)
        rates.append(optimizer.param_groups[0]["lr"])
    return np.asarray(rates)


def _fractional_epochs(t_mult: int) -> list[float]:
    last_epoch = 40 if t_mult == 1 else 10 * (t_mult**3 - 1) // (t_mult - 1) + 5
    epochs = [epoch + i / ITERS for epoch in range(last_epoch) for i in range(ITERS)]
    return epochs + [37.5, 3.25, 10.0, 0.0, 29.999]  # torch allows any order ("interleaved")


@pytest.mark.parametrize("t_mult", [1, 2, 3, 4])
def test_warm_restarts_at_fractional_epochs_match_torch(t_mult, x64):
    kwargs = {"T_0": 10, "T_mult": t_mult, "eta_min": 1e-3}
    epochs = _fractional_epochs(t_mult)
    reference = _torch_fractional_lrs(epochs, **kwargs)
    schedule = optlib.cosine_annealing_warm_restarts(0.1, **kwargs)
    ours = np.asarray(jax.jit(jax.vmap(schedule))(jnp.asarray(epochs, jnp.float64)))
    assert_trace_close(ours, reference, rtol=1e-12, atol_peak=1e-15, label=f"T_mult={t_mult}")


def test_warm_restarts_integer_steps_unchanged_by_float_support(x64):
    schedule = optlib.cosine_annealing_warm_restarts(0.1, T_0=10, T_mult=2, eta_min=1e-3)
    steps = jnp.arange(0, 200, dtype=jnp.int32)
    integer = np.asarray(jax.vmap(schedule)(steps))
    fractional = np.asarray(jax.vmap(schedule)(steps.astype(jnp.float64)))
    np.testing.assert_allclose(fractional, integer, rtol=1e-14)


def test_warm_restarts_at_a_cycle_start_follow_torchs_float_log(x64):
    """torch's ``int(log(121 * 2 / 10 * ... + 1, 3))`` is 4, not 5 (``log(243, 3) =
    4.999...``): at epoch 1210.0 (start of cycle 5 for T_0=10, T_mult=3) torch gives eta_min,
    the integer step 1210 the restart value."""
    kwargs = {"T_0": 10, "T_mult": 3, "eta_min": 1e-3}
    epochs = [130.0, 400.0, 1210.0, 1210.5, 3640.0]
    reference = _torch_fractional_lrs(epochs, **kwargs)
    schedule = optlib.cosine_annealing_warm_restarts(0.1, **kwargs)
    ours = np.asarray([float(schedule(jnp.float64(epoch))) for epoch in epochs])
    np.testing.assert_allclose(ours, reference, rtol=1e-12)
    assert reference[2] == pytest.approx(1e-3)
    assert float(schedule(1210)) == pytest.approx(0.1)


def test_warm_restarts_at_fractional_epochs_float32():
    epochs = _fractional_epochs(2)[:300]
    reference = _torch_fractional_lrs(epochs, T_0=10, T_mult=2)
    schedule = optlib.cosine_annealing_warm_restarts(0.1, T_0=10, T_mult=2)
    ours = np.asarray(jax.jit(jax.vmap(schedule))(jnp.asarray(epochs, jnp.float32)))
    assert ours.dtype == np.float32
    assert_trace_close(ours, reference, rtol=RTOL_F32, label="float32")


def test_other_torch_schedules_still_reject_float_steps():
    with pytest.raises(TypeError, match="integer step"):
        optlib.cosine_annealing_lr(0.1, T_max=10)(1.5)


# ---------------------------------------------------------------------------------------------
# Bad input: ValueError / TypeError naming the parameter, at construction.

INVALID = [  # (name, kwargs, exception, parameter, torch raises too)
    ("RAdam", {"lr": -1e-3}, ValueError, "learning_rate", True),
    ("RAdam", {"eps": -1e-8}, ValueError, "eps", True),
    ("RAdam", {"betas": (1.0, 0.999)}, ValueError, r"betas\[0\]", True),
    ("RAdam", {"betas": (0.9, -0.1)}, ValueError, r"betas\[1\]", True),
    ("RAdam", {"weight_decay": -0.1}, ValueError, "weight_decay", True),
    ("RAdam", {"decoupled_weight_decay": "yes"}, TypeError, "decoupled_weight_decay", False),
    ("RAdam", {"betas": 0.9}, TypeError, "betas", False),
    ("Adamax", {"lr": -2e-3}, ValueError, "learning_rate", True),
    ("Adamax", {"eps": -1.0}, ValueError, "eps", True),
    ("Adamax", {"betas": (0.9, 1.0)}, ValueError, r"betas\[1\]", True),
    ("Adamax", {"betas": (-0.5, 0.9)}, ValueError, r"betas\[0\]", True),
    ("Adamax", {"weight_decay": -1e-3}, ValueError, "weight_decay", True),
    ("Adamax", {"maximize": 1}, TypeError, "maximize", False),
    ("Rprop", {"lr": -0.1}, ValueError, "learning_rate", True),
    ("Rprop", {"etas": (1.5, 1.2)}, ValueError, "etas", True),
    ("Rprop", {"etas": (0.5, 0.9)}, ValueError, "etas", True),
    ("Rprop", {"etas": (0.0, 1.2)}, ValueError, "etas", True),
    ("Rprop", {"etas": (0.5,)}, ValueError, "etas", False),
    ("Rprop", {"etas": (0.5, "x")}, TypeError, r"etas\[1\]", False),
    ("Rprop", {"step_sizes": (50, 1e-6)}, ValueError, "step_sizes", False),
    ("Rprop", {"step_sizes": (-1e-6, 50)}, ValueError, r"step_sizes\[0\]", False),
    ("Rprop", {"step_sizes": 1e-6}, TypeError, "step_sizes", False),
]


@pytest.mark.parametrize("case", INVALID, ids=[f"{c[0]}-{c[1]}" for c in INVALID])
def test_invalid_hyperparameter_raises_at_construction(case):
    name, kwargs, exception, parameter, torch_raises = case
    torch_cls, optlib_fn = OPTIMIZERS[name]
    if torch_raises:
        with pytest.raises(ValueError):
            torch_cls([torch.nn.Parameter(torch.zeros(1))], **kwargs)
    with pytest.raises(exception, match=parameter):
        optlib_fn(**torch_kwargs_to_optlib(kwargs))


def test_rprop_eta_error_quotes_torchs_wording():
    with pytest.raises(ValueError, match=r"Invalid eta values: 0\.5, 0\.9"):
        torch.optim.Rprop([torch.nn.Parameter(torch.zeros(1))], etas=(0.5, 0.9))
    with pytest.raises(ValueError, match=r"Invalid eta values: 0\.5, 0\.9"):
        optlib.rprop(etas=(0.5, 0.9))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_current_learning_rate_is_the_float_learning_rate(name):
    _, optlib_fn = OPTIMIZERS[name]
    tx = optlib_fn(0.125)
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    _, state = tx.update(params, state, params)
    assert float(optlib.current_learning_rate(state)) == 0.125
