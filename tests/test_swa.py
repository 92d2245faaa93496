"""Stochastic weight averaging: optlib.average_params and optlib.swa_lr against
torch.optim.swa_utils.AveragedModel and SWALR.

The schedules are compared value by value with torch's SWALR (alone and inside SequentialLR);
the averaging over whole training runs on the harness problem (tests/parity.py): torch's
per-epoch SWA recipe, the "ema" average, and averaging that starts late and skips steps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from parity import (
    OPTIMIZER_RTOL_F64,
    RTOL_F64,
    assert_trace_close,
    gradient,
    make_problem,
    max_relative_error,
    optlib_trace,
    optlib_trajectory,
    torch,
    torch_trace,
)

import optlib

swa_utils = torch.optim.swa_utils

# ------------------------------------------------------------------------------------ SWALR

SWALR_CASES = [
    dict(swa_lr=0.01),
    dict(swa_lr=0.01, anneal_epochs=5, anneal_strategy="linear"),
    dict(swa_lr=0.2, anneal_epochs=3),  # annealing upwards
    dict(swa_lr=0.05, anneal_epochs=1),
    dict(swa_lr=0.05, anneal_epochs=0),
]


@pytest.mark.parametrize("kwargs", SWALR_CASES, ids=str)
def test_swa_lr_matches_torch_swalr(kwargs, x64):
    reference = torch_trace(lambda opt: swa_utils.SWALR(opt, **kwargs), 0.1, 25)
    ours = optlib_trace(optlib.get_scheduler("SWALR", learning_rate=0.1, **kwargs), 25)
    assert_trace_close(ours, reference, rtol=RTOL_F64, atol_peak=0.0, label=str(kwargs))


@pytest.mark.parametrize("strategy", ["cos", "linear"])
@pytest.mark.parametrize("milestone", [0, 1, 8])
def test_sequential_lr_then_swalr_anneals_from_the_lr_left(strategy, milestone, x64):
    """torch's SequentialLR keeps the previous scheduler's last lr at the milestone, then
    SWALR anneals from it to swa_lr."""

    def make(opt):
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=12, eta_min=1e-3)
        swa = swa_utils.SWALR(opt, swa_lr=0.02, anneal_epochs=4, anneal_strategy=strategy)
        return torch.optim.lr_scheduler.SequentialLR(opt, [cosine, swa], milestones=[milestone])

    reference = torch_trace(make, 0.1, 25)
    ours = optlib.sequential_lr(
        0.1,
        [
            optlib.cosine_annealing_lr(0.1, T_max=12, eta_min=1e-3),
            optlib.swa_lr(0.1, 0.02, anneal_epochs=4, anneal_strategy=strategy),
        ],
        milestones=[milestone],
    )
    assert_trace_close(optlib_trace(ours, 25), reference, rtol=RTOL_F64, atol_peak=0.0)


@pytest.mark.parametrize(
    "kwargs, parameter, error",
    [
        (dict(swa_lr=0.01, anneal_strategy="exp"), "anneal_strategy", ValueError),
        (dict(swa_lr=0.01, anneal_epochs=-1), "anneal_epochs", ValueError),
        (dict(swa_lr=0.01, anneal_epochs=2.5), "anneal_epochs", TypeError),
        (dict(swa_lr=-0.01), "swa_lr", ValueError),
        (dict(), "swa_lr", ValueError),
    ],
)
def test_swa_lr_rejects_bad_arguments_at_construction(kwargs, parameter, error):
    if "swa_lr" in kwargs and kwargs["swa_lr"] >= 0:  # torch raises too
        with pytest.raises(ValueError):
            swa_utils.SWALR(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))]), **kwargs)
    with pytest.raises(error, match=parameter):
        optlib.get_scheduler("SWALR", learning_rate=0.1, **kwargs)


def test_swa_lr_in_chained_scheduler_is_refused():
    with pytest.raises(ValueError, match="SWALR"):
        optlib.chained_scheduler(
            0.1, [optlib.exponential_lr(0.1, gamma=0.9), optlib.swa_lr(0.1, 0.01)]
        )


# --------------------------------------------------------------------------------- averaging


def _torch_run(problem, steps, make_optimizer, after_update, before_training):
    """torch's loop on the harness problem: ``before_training(model)`` once (where the
    ``AveragedModel`` deep-copies the model), ``after_update(n, model)`` after update ``n``."""
    params = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in problem.params.items()}
    model = torch.nn.ParameterDict(params)
    before_training(model)
    a = {k: torch.tensor(v) for k, v in problem.a.items()}
    b = {k: torch.tensor(v) for k, v in problem.b.items()}
    noise = {k: torch.tensor(v) for k, v in problem.noise.items()}
    optimizer = make_optimizer(list(params.values()))
    trajectory = {k: [] for k in params}
    for step in range(steps):
        with torch.no_grad():
            for k, p in params.items():
                p.grad = gradient(p, a[k], b[k], noise[k][step, 0], problem.sign)
        optimizer.step()
        after_update(step + 1, model)
        for k, p in params.items():
            trajectory[k].append(p.detach().numpy().copy())
    return {k: np.stack(v) for k, v in trajectory.items()}


def _averaged(swa_model) -> dict:
    return {k: v.detach().numpy() for k, v in swa_model.module.items()}


def _average_error(ours: dict, reference: dict) -> float:
    return max_relative_error(
        {k: np.asarray(v)[None] for k, v in ours.items()},
        {k: v[None] for k, v in reference.items()},
    )


def test_swa_recipe_matches_averaged_model_and_swalr(x64):
    """torch's recipe: SGD, CosineAnnealingLR then SWALR from epoch ``swa_start`` (per-epoch
    SequentialLR), ``swa_model.update_parameters(model)`` after each epoch from ``swa_start``."""
    epochs, steps_per_epoch, swa_start = 12, 3, 6
    steps = epochs * steps_per_epoch
    problem = make_problem(steps)
    swa_models = []

    def make_optimizer(params):
        optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=swa_start)
        swalr = swa_utils.SWALR(optimizer, swa_lr=0.02, anneal_epochs=3)
        make_optimizer.scheduler = torch.optim.lr_scheduler.SequentialLR(
            optimizer, [cosine, swalr], milestones=[swa_start]
        )
        return optimizer

    def after_update(n, model):
        if n % steps_per_epoch == 0:  # the end of an epoch
            if n // steps_per_epoch - 1 >= swa_start:
                swa_models[0].update_parameters(model)
            make_optimizer.scheduler.step()

    reference = _torch_run(
        problem,
        steps,
        make_optimizer,
        after_update,
        lambda model: swa_models.append(swa_utils.AveragedModel(model)),
    )

    schedule = optlib.sequential_lr(
        0.05,
        [optlib.cosine_annealing_lr(0.05, T_max=swa_start), optlib.swa_lr(0.05, 0.02, 3)],
        milestones=[swa_start],
    )
    tx = optax.chain(
        optlib.sgd(optlib.per_epoch(schedule, steps_per_epoch), momentum=0.9),
        optlib.average_params(
            start_step=swa_start * steps_per_epoch, every_n_steps=steps_per_epoch
        ),
    )
    ours, state = optlib_trajectory(tx, problem, jnp.float64)
    assert max_relative_error(ours, reference) <= OPTIMIZER_RTOL_F64
    error = _average_error(optlib.averaged_params(state), _averaged(swa_models[0]))
    assert error <= OPTIMIZER_RTOL_F64, f"SWA average: max relative error {error:.3e}"
    assert int(state[1].n_averaged) == int(swa_models[0].n_averaged) == epochs - swa_start


@pytest.mark.parametrize(
    "avg_fn, start_step, every_n_steps", [("ema", 0, 1), ("ema", 4, 3), ("swa", 5, 2)]
)
def test_average_params_matches_averaged_model_step_by_step(avg_fn, start_step, every_n_steps, x64):
    steps, decay = 30, 0.9
    problem = make_problem(steps)
    holder = {}
    averages = []

    def make_optimizer(params):
        return torch.optim.Adam(params, lr=0.05)

    def before_training(model):
        ema = {"multi_avg_fn": swa_utils.get_ema_multi_avg_fn(decay)} if avg_fn == "ema" else {}
        holder["swa"] = swa_utils.AveragedModel(model, **ema)

    def after_update(n, model):
        if n > start_step and (n - start_step) % every_n_steps == 0:
            holder["swa"].update_parameters(model)
        averages.append(_averaged(holder["swa"]))

    _torch_run(problem, steps, make_optimizer, after_update, before_training)

    tx = optax.chain(
        optlib.adam(0.05),
        optlib.average_params(
            avg_fn, decay=decay, start_step=start_step, every_n_steps=every_n_steps
        ),
    )
    init_state = tx.init({k: jnp.asarray(v) for k, v in problem.params.items()})
    _, state = optlib_trajectory(tx, problem, jnp.float64)
    error = _average_error(optlib.averaged_params(state), averages[-1])
    assert error <= OPTIMIZER_RTOL_F64, f"{avg_fn}: max relative error {error:.3e}"
    assert int(state[1].n_averaged) == int(holder["swa"].n_averaged)
    # Before any averaged step the average is the initial parameters (torch's deep copy).
    np.testing.assert_array_equal(
        np.asarray(optlib.averaged_params(init_state)["matrix"]), problem.params["matrix"]
    )


def test_average_params_passes_updates_through_and_keeps_int32_counters():
    tx = optlib.average_params()
    params = {"w": jnp.ones(3, jnp.bfloat16)}
    state = tx.init(params)
    updates = {"w": jnp.full(3, 0.5, jnp.bfloat16)}
    out, state = jax.jit(tx.update)(updates, state, params)
    assert out["w"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(out["w"], updates["w"])
    assert state.count.dtype == state.n_averaged.dtype == jnp.int32
    assert optlib.averaged_params(state)["w"].dtype == jnp.float32  # statistics dtype
    np.testing.assert_array_equal(optlib.averaged_params(state)["w"], np.full(3, 1.5))


@pytest.mark.parametrize(
    "kwargs, parameter, error",
    [
        (dict(avg_fn="mean"), "avg_fn", ValueError),
        (dict(avg_fn="ema", decay=1.5), "decay", ValueError),
        (dict(avg_fn="ema", decay=-0.1), "decay", ValueError),
        (dict(decay="high"), "decay", TypeError),
        (dict(start_step=-1), "start_step", ValueError),
        (dict(every_n_steps=0), "every_n_steps", ValueError),
        (dict(every_n_steps=1.5), "every_n_steps", TypeError),
    ],
)
def test_average_params_rejects_bad_arguments_at_construction(kwargs, parameter, error):
    if "decay" in kwargs and isinstance(kwargs["decay"], float):
        with pytest.raises(ValueError, match="Invalid decay value"):
            swa_utils.get_ema_multi_avg_fn(kwargs["decay"])
    with pytest.raises(error, match=parameter):
        optlib.average_params(**kwargs)


def test_averaged_params_needs_exactly_one_average():
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="found 0"):
        optlib.averaged_params(optlib.sgd(0.1).init(params))
    both = optax.chain(optlib.asgd(), optlib.average_params())
    with pytest.raises(ValueError, match="found 2"):
        optlib.averaged_params(both.init(params))
