"""optlib.adafactor against transformers.optimization.Adafactor, step by step.

Both sides see the same problem: a parameter tree with a matrix, a zero-initialised bias (its
RMS is below ``eps[1]``), a scalar and a 3-D tensor (factored over its last two dims), and the
gradient ``g = p - target + noise_k`` (a deterministic function of the current parameters plus
a pre-generated noise sequence). HF runs a real torch loop (float64 tensors for the float64
rows); optlib runs one jitted ``lax.scan`` per configuration. Every number asserted is
produced by HF in the same run.

Errors: ``param`` is ``max|ours - ref| / max|ref|`` per leaf and step (worst over all);
``displacement`` is the same for ``p_t - p_0``, a much stricter measure when the steps are
tiny (e.g. ``warmup_init``). Run with ``-s`` to print them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from parity import torch

import optlib

hf_optimization = pytest.importorskip(
    "transformers.optimization", reason="Adafactor parity needs transformers"
)

SHAPES = {"a_matrix": (4, 3), "b_bias": (5,), "c_scalar": (), "d_tensor": (2, 3, 4)}
STEPS_F64 = 40
STEPS_F32 = 100
TOL_F64 = 1e-7
TOL_F32 = 1e-4
MEASURED: dict[str, float] = {}
# Compiling dominates these tiny runs; LLVM's expensive passes buy nothing here.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


# ------------------------------------------------------------------------ the problem


@dataclasses.dataclass(frozen=True)
class Problem:
    params: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]
    noise: dict[str, np.ndarray]  # (steps, *shape) per leaf
    metrics: np.ndarray  # one per step, for metric-driven rows


def make_problem(steps: int, seed: int = 0) -> Problem:
    rng = np.random.default_rng(seed)
    params = {name: rng.normal(size=shape) for name, shape in SHAPES.items()}
    params["b_bias"] = np.zeros(SHAPES["b_bias"])
    targets = {name: 2.0 * rng.normal(size=shape) for name, shape in SHAPES.items()}
    noise = {name: 0.5 * rng.normal(size=(steps, *shape)) for name, shape in SHAPES.items()}
    metrics = np.concatenate([np.linspace(1.0, 0.8, steps // 4), np.full(steps - steps // 4, 0.8)])
    return Problem(params, targets, noise, metrics)


def leaf_names() -> list[str]:
    """Leaf names in ``jax.tree.leaves`` order: HF gets its parameters in this order."""
    return sorted(SHAPES)


# ------------------------------------------------------------------------ reference rows


@dataclasses.dataclass(frozen=True)
class Case:
    """One configuration: HF ``Adafactor`` kwargs, plus an optional lr scheduler.

    ``lr_factor(k)`` drives torch's ``LambdaLR`` and optlib's schedule
    ``learning_rate * lr_factor(count)``; ``plateau`` drives torch's ``ReduceLROnPlateau``
    and ``optlib.reduce_lr_on_plateau`` with the same kwargs.
    """

    hf_kwargs: dict[str, Any]
    lr_factor: Callable[[Any], Any] | None = None
    plateau: dict[str, Any] | None = None

    @property
    def relative_step(self) -> bool:
        return self.hf_kwargs.get("relative_step", True)


def inverse_time(k):
    return 1.0 / (1.0 + 0.1 * k)


CASES = {
    "hf_defaults": Case({}),
    "warmup_init": Case({"warmup_init": True}),
    "relative_step_no_param_scale": Case({"scale_parameter": False}),
    "relative_step_beta1": Case({"beta1": 0.9}),
    "warmup_beta1_weight_decay": Case({"warmup_init": True, "beta1": 0.9, "weight_decay": 0.05}),
    "t5_recipe_external_lr": Case({"lr": 1e-3, "relative_step": False, "scale_parameter": False}),
    "external_lr_param_scale": Case({"lr": 3e-2, "relative_step": False}),
    "external_lr_beta1_weight_decay": Case(
        {"lr": 3e-2, "relative_step": False, "beta1": 0.8, "weight_decay": 0.2}
    ),
    "tight_clip_slow_decay": Case({"clip_threshold": 0.3, "decay_rate": -0.5}),
    "no_averaging_beta1_zero": Case({"decay_rate": 0.0, "beta1": 0.0}),
    "large_eps_no_clip": Case({"eps": (1e-2, 0.5), "clip_threshold": math.inf}),
    "schedule_beta1_weight_decay": Case(
        {"lr": 5e-2, "relative_step": False, "beta1": 0.9, "weight_decay": 0.1},
        lr_factor=inverse_time,
    ),
    "plateau_beta1_param_scale": Case(
        {"lr": 5e-2, "relative_step": False, "beta1": 0.9},
        plateau={"factor": 0.5, "patience": 2},
    ),
}


def optlib_factory(case: Case) -> optax.GradientTransformation:
    kwargs = dict(case.hf_kwargs)
    learning_rate = kwargs.pop("lr", None)
    if case.lr_factor is not None:
        learning_rate = (lambda base: lambda count: base * case.lr_factor(count))(learning_rate)
    if case.plateau is not None:
        learning_rate = optlib.reduce_lr_on_plateau(learning_rate, **case.plateau)
    return optlib.adafactor(learning_rate=learning_rate, **kwargs)


def hf_factory(case: Case, params: list[Any]):
    """``(optimizer, scheduler or None, scheduler-step function)``."""
    optimizer = hf_optimization.Adafactor(params, **case.hf_kwargs)
    if case.relative_step:
        scheduler = hf_optimization.AdafactorSchedule(optimizer)
        return optimizer, scheduler, lambda metric: scheduler.step()
    if case.lr_factor is not None:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, case.lr_factor)
        return optimizer, scheduler, lambda metric: scheduler.step()
    if case.plateau is not None:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **case.plateau)
        return optimizer, scheduler, lambda metric: scheduler.step(metric)
    return optimizer, None, lambda metric: None


# ------------------------------------------------------------------------ the two loops


def hf_reported_rate(case: Case, optimizer, scheduler, first_param) -> float:
    """The rate HF reports after a step for the first parameter.

    ``relative_step``: ``AdafactorSchedule``'s report. Otherwise ``Adafactor._get_lr`` of the
    first parameter (what ``AdafactorSchedule`` computes): the group's ``lr``, which the torch
    scheduler has already set for the next step, times the last step's parameter scale.
    """
    if case.relative_step:
        return scheduler.get_last_lr()[0]
    group = optimizer.param_groups[0]
    return float(optimizer._get_lr(group, optimizer.state[first_param]))


def run_hf(case: Case, problem: Problem, steps: int, dtype) -> tuple[dict, np.ndarray]:
    """HF loop: ``(trajectory per leaf (steps, *shape), reported lr per step)``."""
    names = leaf_names()
    params = [torch.nn.Parameter(torch.tensor(problem.params[n], dtype=dtype)) for n in names]
    targets = [torch.tensor(problem.targets[n], dtype=dtype) for n in names]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimizer, scheduler, step_scheduler = hf_factory(case, params)
        trajectory: dict[str, list[np.ndarray]] = {n: [] for n in names}
        rates = []
        for k in range(steps):
            for name, param, target in zip(names, params, targets):
                noise = torch.tensor(problem.noise[name][k], dtype=dtype)
                param.grad = param.detach() - target + noise
            optimizer.step()
            step_scheduler(float(problem.metrics[k]))
            rates.append(hf_reported_rate(case, optimizer, scheduler, params[0]))
            for name, param in zip(names, params):
                trajectory[name].append(param.detach().to(torch.float64).numpy().copy())
    return {n: np.stack(v) for n, v in trajectory.items()}, np.asarray(rates, np.float64)


def run_optlib(
    tx, problem: Problem, steps: int, dtype, *, metric_driven: bool = False, rates: bool = True
):
    """One jitted scan: ``(trajectory per leaf, current_learning_rate per step, final state)``."""

    def read_rate(state):  # per-parameter rates (scale_parameter): HF's first parameter's
        if not rates:
            return jnp.zeros([])
        rate = optlib.current_learning_rate(state)
        return rate[leaf_names()[0]] if isinstance(rate, dict) else rate

    cast = lambda tree: jax.tree.map(lambda x: jnp.asarray(x, dtype), tree)
    params, targets = cast(problem.params), cast(problem.targets)
    noise = cast(jax.tree.map(lambda x: x[:steps], problem.noise))
    metrics = jnp.asarray(problem.metrics[:steps], jnp.float32)

    def step(carry, inputs):
        params, state = carry
        noise_k, metric = inputs
        grads = jax.tree.map(lambda p, t, n: p - t + n, params, targets, noise_k)
        extra = {"value": metric} if metric_driven else {}
        updates, state = tx.update(grads, state, params, **extra)
        params = optax.apply_updates(params, updates)
        return (params, state), (params, read_rate(state))

    @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
    def run(params):
        carry = (params, tx.init(params))
        (_, state), (trajectory, rates) = jax.lax.scan(step, carry, (noise, metrics))
        return trajectory, rates, state

    trajectory, rates, state = run(params)
    return jax.tree.map(np.asarray, trajectory), np.asarray(rates, np.float64), state


def param_error(ours: dict, reference: dict, start: dict | None = None) -> float:
    """Worst ``max|ours - ref| / max|ref|`` over leaves and steps (of ``p - start`` if given)."""
    worst = 0.0
    for name, ref in reference.items():
        mine = np.asarray(ours[name], np.float64)
        if start is not None:
            mine, ref = mine - start[name], ref - start[name]
        for k in range(ref.shape[0]):
            scale = np.max(np.abs(ref[k]))
            worst = max(worst, float(np.max(np.abs(mine[k] - ref[k])) / scale))
    return worst


# ------------------------------------------------------------------------ parity


@pytest.mark.parametrize("name", list(CASES))
def test_adafactor_matches_hf_in_float64(name, x64):
    case = CASES[name]
    problem = make_problem(STEPS_F64)
    reference, reference_rates = run_hf(case, problem, STEPS_F64, torch.float64)
    tx = optlib_factory(case)
    metric_driven = case.plateau is not None
    ours, rates, _ = run_optlib(tx, problem, STEPS_F64, jnp.float64, metric_driven=metric_driven)
    error = param_error(ours, reference)
    displacement = param_error(ours, reference, start=problem.params)
    MEASURED[f"f64/{name}/param"] = error
    MEASURED[f"f64/{name}/displacement"] = displacement
    print(f"\n{name}: f64 param {error:.2e}, displacement {displacement:.2e}")
    assert error <= TOL_F64
    assert displacement <= TOL_F64
    np.testing.assert_allclose(rates, reference_rates, rtol=1e-12)


@pytest.mark.parametrize("name", ["hf_defaults", "schedule_beta1_weight_decay"])
def test_adafactor_matches_hf_in_float32_after_100_steps(name):
    case = CASES[name]
    problem = make_problem(STEPS_F32, seed=1)
    reference, reference_rates = run_hf(case, problem, STEPS_F32, torch.float32)
    ours, rates, _ = run_optlib(optlib_factory(case), problem, STEPS_F32, jnp.float32)
    error = param_error(ours, reference)
    MEASURED[f"f32/{name}/param"] = error
    print(f"\n{name}: f32 param {error:.2e}")
    assert error <= TOL_F32
    np.testing.assert_allclose(rates, reference_rates, rtol=TOL_F32)


def test_current_learning_rate_before_any_step_is_the_rate_of_the_first_step(x64):
    """HF's AdafactorSchedule reports a placeholder (``initial_lr``) before stepping; optlib
    reports the rate the first update applies, which AdafactorSchedule reports after it."""
    case = CASES["warmup_init"]
    problem = make_problem(1)
    _, reference_rates = run_hf(case, problem, 1, torch.float64)
    params = jax.tree.map(jnp.asarray, problem.params)
    state = optlib_factory(case).init(params)
    rate = optlib.current_learning_rate(state)
    rate = rate[leaf_names()[0]] if isinstance(rate, dict) else rate
    np.testing.assert_allclose(rate, reference_rates[0], rtol=1e-12)


def test_factored_statistics_have_hf_shapes_minus_the_reduced_axis(x64):
    """Row stats drop the last axis, column stats the second-to-last (sharding layout)."""
    problem = make_problem(1)
    names = leaf_names()
    params = [torch.nn.Parameter(torch.tensor(problem.params[n])) for n in names]
    optimizer = hf_optimization.Adafactor(params)
    for param in params:
        param.grad = torch.ones_like(param)
    optimizer.step()
    state = optlib.adafactor().init(jax.tree.map(jnp.asarray, problem.params))["factored_rms"]
    for name, param in zip(names, params):
        hf_state = optimizer.state[param]
        if "exp_avg_sq_row" in hf_state:
            assert state.exp_avg_sq_row[name].shape == tuple(hf_state["exp_avg_sq_row"].shape)
            assert state.exp_avg_sq_col[name].shape == tuple(hf_state["exp_avg_sq_col"].shape)
            assert state.exp_avg_sq[name].shape == ()
        else:
            assert state.exp_avg_sq[name].shape == tuple(hf_state["exp_avg_sq"].shape)
            assert state.exp_avg_sq_row[name].shape == state.exp_avg_sq_col[name].shape == ()


def test_optlib_is_hf_exact_where_optax_adafactor_drifts(x64):
    """optax.adafactor with HF's defaults (lr 1e-2 = HF's relative step before step 10^4)
    against HF; optax factors only dims >= 128 and is not HF's algorithm otherwise either."""
    case = CASES["hf_defaults"]
    problem = make_problem(STEPS_F64)
    reference, _ = run_hf(case, problem, STEPS_F64, torch.float64)
    ours, _, _ = run_optlib(optlib.adafactor(), problem, STEPS_F64, jnp.float64)
    errors = {"optlib": param_error(ours, reference)}
    displacements = {"optlib": param_error(ours, reference, start=problem.params)}
    for label, tx in {
        "optax.adafactor(1e-2)": optax.adafactor(learning_rate=1e-2),
        "optax.adafactor(1e-2, min_dim_size_to_factor=1)": optax.adafactor(
            learning_rate=1e-2, min_dim_size_to_factor=1
        ),
    }.items():
        theirs, _, _ = run_optlib(tx, problem, STEPS_F64, jnp.float64, rates=False)
        errors[label] = param_error(theirs, reference)
        displacements[label] = param_error(theirs, reference, start=problem.params)
    MEASURED.update({f"drift/{k}": v for k, v in errors.items()})
    for label, error in errors.items():
        displacement = displacements[label]
        print(f"\n{label}: {STEPS_F64} steps, param {error:.3e}, displacement {displacement:.3e}")
    assert errors["optlib"] <= TOL_F64
    assert errors["optax.adafactor(1e-2)"] > 1e3 * TOL_F64


# ------------------------------------------------------------------------ precision


@pytest.mark.parametrize("name", ["external_lr_beta1_weight_decay"])
def test_bfloat16_params_keep_float32_statistics_and_track_hf(name):
    case = CASES[name]
    steps = 20
    problem = make_problem(steps, seed=2)
    reference, _ = run_hf(case, problem, steps, torch.bfloat16)
    ours, _, state = run_optlib(optlib_factory(case), problem, steps, jnp.bfloat16)
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(ours))
    assert all(np.isfinite(np.asarray(leaf, np.float32)).all() for leaf in jax.tree.leaves(ours))
    factored = state["factored_rms"]
    statistics = [factored.exp_avg_sq_row, factored.exp_avg_sq_col, factored.exp_avg_sq]
    statistics += [s.ema for s in state.values() if isinstance(s, optax.EmaState)]
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(statistics))
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.bfloat16), problem.params)
    tx = optlib_factory(case)
    updates, _ = jax.eval_shape(tx.update, params, tx.init(params), params)
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(updates))
    # bf16 rounds each step (HF rounds the float32 result once, optlib's updates are bf16 too):
    # the trajectories agree to bf16 resolution, not bit for bit.
    error = param_error(ours, reference)
    MEASURED[f"bf16/{name}/param"] = error
    print(f"\n{name}: bf16 param {error:.2e}")
    assert error <= 2e-2


# ------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "kwargs, error, names_it, hf_raises",
    [
        ({"learning_rate": 1e-3}, ValueError, "relative_step", True),
        (
            {"warmup_init": True, "relative_step": False, "learning_rate": 1e-3},
            ValueError,
            "warmup_init",
            True,
        ),
        ({"relative_step": False}, ValueError, "learning_rate", False),
        ({"relative_step": False, "learning_rate": -1e-3}, ValueError, "learning_rate", False),
        ({"eps": (-1e-30, 1e-3)}, ValueError, "eps[0]", False),
        ({"eps": (1e-30, -1e-3)}, ValueError, "eps[1]", False),
        ({"eps": 1e-30}, TypeError, "eps", False),
        ({"eps": (1e-30, 1e-3, 1.0)}, ValueError, "eps", False),
        ({"clip_threshold": 0.0}, ValueError, "clip_threshold", False),
        ({"clip_threshold": -1.0}, ValueError, "clip_threshold", False),
        ({"decay_rate": 0.5}, ValueError, "decay_rate", False),
        ({"beta1": 1.0}, ValueError, "beta1", False),
        ({"beta1": -0.1}, ValueError, "beta1", False),
        ({"weight_decay": -0.1}, ValueError, "weight_decay", False),
    ],
)
def test_invalid_hyperparameters_raise_naming_the_parameter(kwargs, error, names_it, hf_raises):
    with pytest.raises(error, match=names_it.replace("[", r"\[").replace("]", r"\]")):
        optlib.adafactor(**kwargs)
    if hf_raises:
        hf_kwargs = {("lr" if k == "learning_rate" else k): v for k, v in kwargs.items()}
        param = torch.nn.Parameter(torch.zeros(2))
        with pytest.raises(ValueError):
            hf_optimization.Adafactor([param], **hf_kwargs)


def test_weight_decay_with_a_metric_driven_learning_rate_raises():
    with pytest.raises(ValueError, match="weight_decay"):
        optlib.adafactor(
            learning_rate=optlib.reduce_lr_on_plateau(1e-2),
            relative_step=False,
            weight_decay=0.1,
        )
