"""optlib.asgd and optlib.torch_adafactor against torch.optim.ASGD / torch.optim.Adafactor.

Every configuration torch's own test database (``optim_db``) lists for the two optimizers is
run for 30 steps on the harness problem (tests/parity.py) in float64 and compared step by
step; then float32, a schedule, ``reduce_lr_on_plateau`` as the learning rate, ASGD's averaged
parameters ``ax`` and the constructor checks.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from parity import (
    OPTIMIZER_RTOL_F32,
    OPTIMIZER_RTOL_F64,
    SHAPES,
    make_problem,
    max_relative_error,
    optim_db_inputs,
    optlib_trajectory,
    torch,
    torch_default_dtype,
    torch_kwargs_to_optlib,
    torch_trajectory,
)

import optlib

STEPS = 30
OPTIMIZERS = {
    "ASGD": (torch.optim.ASGD, optlib.asgd),
    "Adafactor": (torch.optim.Adafactor, optlib.torch_adafactor),
}
# torch's database, plus an ASGD t0 that starts the averaging within the run.
CASES = [(name, desc, kwargs) for name in OPTIMIZERS for desc, kwargs in optim_db_inputs(name)]
CASES += [("ASGD", "t0 reached", {"t0": 5, "lambd": 1e-2})]


def _id(case) -> str:
    return f"{case[0]}-{case[1].replace(' ', '_')}"


def run_case(name, kwargs, jax_dtype, torch_dtype, *, learning_rate=None, torch_hooks=None):
    """optlib's and torch's trajectories; the torch run has ``torch_dtype`` as its default."""
    torch_cls, optlib_fn = OPTIMIZERS[name]
    problem = make_problem(STEPS, sign=-1.0 if kwargs.get("maximize") else 1.0)
    optlib_kwargs = torch_kwargs_to_optlib(kwargs)
    if learning_rate is not None:
        optlib_kwargs["learning_rate"] = learning_rate
    hooks = dict(torch_hooks or {})
    metrics = hooks.get("metrics")
    ours, state = optlib_trajectory(optlib_fn(**optlib_kwargs), problem, jax_dtype, metrics=metrics)
    with torch_default_dtype(torch_dtype):
        reference, optimizer, _ = torch_trajectory(
            lambda params: torch_cls(list(params.values()), **kwargs),
            problem,
            torch_dtype,
            **hooks,
        )
    return max_relative_error(ours, reference), state, optimizer


def _torch_state(optimizer, key: str) -> dict:
    """``{leaf name: optimizer.state[p][key]}`` (torch's params are in ``SHAPES`` order)."""
    params = optimizer.param_groups[0]["params"]
    return {name: optimizer.state[p][key].numpy() for name, p in zip(SHAPES, params)}


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_float64_trajectory_matches_torch_for_every_optim_db_config(case, x64):
    name, _, kwargs = case
    error, state, optimizer = run_case(name, kwargs, jnp.float64, torch.float64)
    assert error <= OPTIMIZER_RTOL_F64, f"{_id(case)}: max relative parameter error {error:.3e}"
    assert float(optlib.current_learning_rate(state)) == optimizer.param_groups[0]["lr"]
    if name == "ASGD":
        ax = optlib.averaged_params(state)
        ax_error = max_relative_error(
            {k: np.asarray(v)[None] for k, v in ax.items()},
            {k: v[None] for k, v in _torch_state(optimizer, "ax").items()},
        )
        assert ax_error <= OPTIMIZER_RTOL_F64, f"ax: max relative error {ax_error:.3e}"
        eta = _torch_state(optimizer, "eta")["scalar"]
        np.testing.assert_allclose(float(state["asgd"].eta), eta, rtol=1e-14)


F32_CASES = [
    ("ASGD", "f32", {"lr": 0.02, "lambd": 0.01, "t0": 5, "weight_decay": 0.1}),
    ("Adafactor", "f32", {"weight_decay": 0.1, "d": 1.5}),
]


@pytest.mark.parametrize("case", F32_CASES, ids=[_id(c) for c in F32_CASES])
def test_float32_trajectory_matches_torch_to_float32_rounding(case):
    name, _, kwargs = case
    error, *_ = run_case(name, kwargs, jnp.float32, torch.float32)
    assert error <= OPTIMIZER_RTOL_F32, f"{_id(case)}: max relative parameter error {error:.3e}"


def _lr_factor(step):
    return 0.5 + 0.5 * jnp.cos(jnp.pi * step / 12.0)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("ASGD", {"lr": 0.02, "lambd": 0.1, "t0": 5}),
        ("Adafactor", {"lr": 0.5, "weight_decay": 0.1}),
    ],
)
def test_schedule_drives_lr_like_lambda_lr(name, kwargs, x64):
    """ASGD's eta follows the lr one step late, Adafactor's rho_t = min(lr, 1/sqrt(t)) and its
    decay follow it at once: exactly as torch's group ``lr``."""
    base = kwargs["lr"]
    error, state, optimizer = run_case(
        name,
        kwargs,
        jnp.float64,
        torch.float64,
        learning_rate=lambda step: base * _lr_factor(step),
        torch_hooks={
            "scheduler": lambda opt: torch.optim.lr_scheduler.LambdaLR(
                opt, lambda step: float(_lr_factor(step))
            )
        },
    )
    assert error <= OPTIMIZER_RTOL_F64, f"{name}: max relative parameter error {error:.3e}"
    np.testing.assert_allclose(
        float(optlib.current_learning_rate(state)), optimizer.param_groups[0]["lr"], rtol=1e-12
    )


@pytest.mark.parametrize(
    "name, kwargs",
    [("ASGD", {"lr": 0.05, "t0": 3}), ("Adafactor", {"lr": 0.5, "weight_decay": 0.1})],
)
def test_reduce_lr_on_plateau_as_learning_rate_matches_torch(name, kwargs, x64):
    metrics = np.r_[np.linspace(1.0, 0.5, 8), np.full(STEPS - 8, 0.6)]
    base = kwargs["lr"]
    error, state, optimizer = run_case(
        name,
        kwargs,
        jnp.float64,
        torch.float64,
        learning_rate=optlib.reduce_lr_on_plateau(base, patience=2, factor=0.5),
        torch_hooks={
            "scheduler": lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, patience=2, factor=0.5
            ),
            "metrics": metrics,
        },
    )
    assert error <= OPTIMIZER_RTOL_F64, f"{name}: max relative parameter error {error:.3e}"
    assert optimizer.param_groups[0]["lr"] < base / 4  # the plateau reduced it
    np.testing.assert_allclose(
        float(optlib.current_learning_rate(state)), optimizer.param_groups[0]["lr"], rtol=1e-12
    )


def test_asgd_averaged_params_start_at_zeros_like_torch_ax():
    params = {"w": jnp.ones(3)}
    state = optlib.asgd().init(params)
    np.testing.assert_array_equal(optlib.averaged_params(state)["w"], np.zeros(3))


# ---------------------------------------------------------------------------------------------
# Invalid hyperparameters: ValueError / TypeError naming the parameter, at construction.

INVALID = [
    ("ASGD", {"lr": -0.1}, "learning_rate", True),
    ("ASGD", {"weight_decay": -0.1}, "weight_decay", True),
    ("ASGD", {"lambd": -0.1}, "lambd", False),  # torch accepts it; eta would turn NaN
    ("Adafactor", {"lr": -0.1}, "learning_rate", True),
    ("Adafactor", {"beta2_decay": 0.5}, "beta2_decay", True),
    ("Adafactor", {"eps": (-1.0, 1e-3)}, r"eps\[0\]", True),
    ("Adafactor", {"eps": (None, -1e-3)}, r"eps\[1\]", True),
    ("Adafactor", {"d": 0.5}, "d", True),
    ("Adafactor", {"weight_decay": -0.1}, "weight_decay", True),
]


@pytest.mark.parametrize("case", INVALID, ids=[f"{c[0]}-{c[2]}" for c in INVALID])
def test_invalid_hyperparameter_raises_naming_it(case):
    name, kwargs, parameter, torch_raises = case
    torch_cls, optlib_fn = OPTIMIZERS[name]
    if torch_raises:
        with pytest.raises(ValueError):
            torch_cls([torch.nn.Parameter(torch.zeros(1))], **kwargs)
    with pytest.raises(ValueError, match=parameter):
        optlib_fn(**torch_kwargs_to_optlib(kwargs))


@pytest.mark.parametrize("optlib_fn", [optlib.asgd, optlib.torch_adafactor])
def test_bad_types_and_momentum_schedules_raise(optlib_fn):
    with pytest.raises(TypeError, match="maximize"):
        optlib_fn(maximize="yes")
    with pytest.raises(ValueError, match="momentum or beta1"):
        optlib_fn(optlib.MomentumSchedule(lambda step: 0.1, lambda step: 0.9))


def test_torch_adafactor_eps_must_be_a_pair():
    with pytest.raises(TypeError, match="eps"):
        optlib.torch_adafactor(eps=1e-3)
