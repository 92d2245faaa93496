"""Metric-driven schedulers in Flax training loops, against a torch loop on the same numbers.

The model is one parameter vector with unit gradients, so every update is ``-lr`` and the
parameters after ``k`` updates are ``-sum(lr_0..lr_{k-1})``: the torch loop (SGD +
scheduler) and the Flax loop must agree on the parameters, not only on the reported rate.

* Linen ``TrainState``: ``apply_gradients`` forwards no extra arguments, so the epoch loop
  steps the scheduler with ``state.replace(opt_state=optlib.report_metric(...))``.
* NNX: ``nnx.Optimizer.update(model, grads, value=metric)`` forwards ``value`` to ``tx``;
  an epoch-level ``report_metric`` works on ``optimizer.opt_state`` too.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from parity import assert_trace_close, torch

import optlib

nnx = pytest.importorskip("flax.nnx", reason="the Flax integration needs flax")
train_state = pytest.importorskip("flax.training.train_state")
transformers_optimization = pytest.importorskip("transformers.optimization")

RTOL = 2e-5
LEARNING_RATE = 0.1
STEPS = 60
SIZE = 3

SCHEDULERS = {
    "reduce_lr_on_plateau": (
        lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, patience=2, factor=0.5, cooldown=1
        ),
        lambda: optlib.reduce_lr_on_plateau(LEARNING_RATE, patience=2, factor=0.5, cooldown=1),
    ),
    "greedy_lr": (
        lambda opt: transformers_optimization.GreedyLR(
            opt, patience=1, factor=0.7, min_lr=0.01, smooth=True, window_size=4
        ),
        lambda: optlib.greedy_lr(
            LEARNING_RATE, patience=1, factor=0.7, min_lr=0.01, smooth=True, window_size=4
        ),
    ),
}


def metrics_with_a_plateau(seed: int) -> np.ndarray:
    """Improves for a while, then hovers: the rate must go down (and up, for GreedyLR)."""
    rng = np.random.default_rng(seed)
    improving = np.geomspace(2.0, 0.5, STEPS // 3)
    plateau = 0.5 * (1.0 + 0.05 * rng.random(STEPS - STEPS // 3))
    return np.concatenate([improving, plateau]).astype(np.float32)


def torch_run(make_scheduler, metrics):
    """``(lr after each scheduler step, parameter after each update)`` of an SGD loop."""
    param = torch.nn.Parameter(torch.zeros(SIZE, dtype=torch.float64))
    optimizer = torch.optim.SGD([param], lr=LEARNING_RATE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduler = make_scheduler(optimizer)
    rates, params = [], []
    for metric in metrics:
        param.grad = torch.ones(SIZE, dtype=torch.float64)
        optimizer.step()
        scheduler.step(float(metric))
        rates.append(optimizer.param_groups[0]["lr"])
        params.append(param.detach().numpy()[0])
    return np.asarray(rates), np.asarray(params)


def assert_matches_torch(scheduler, rates, params, metrics):
    ref_rates, ref_params = torch_run(SCHEDULERS[scheduler][0], metrics)
    assert len(np.unique(ref_rates)) > 2, "the scheduler should have acted"
    assert_trace_close(np.asarray(rates), ref_rates, rtol=RTOL, atol_peak=0.0, label="lr")
    assert_trace_close(np.asarray(params), ref_params, rtol=RTOL, atol_peak=0.0, label="params")


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_trainstate_epoch_loop_with_report_metric_matches_torch(scheduler):
    metrics = metrics_with_a_plateau(0)
    state = train_state.TrainState.create(
        apply_fn=lambda params, x: x, params={"w": jnp.zeros(SIZE)}, tx=SCHEDULERS[scheduler][1]()
    )

    @jax.jit
    def run(state, metrics):
        def epoch(state, val_loss):
            state = state.apply_gradients(grads={"w": jnp.ones(SIZE)})
            state = state.replace(opt_state=optlib.report_metric(state.opt_state, val_loss))
            return state, (optlib.current_learning_rate(state.opt_state), state.params["w"][0])

        return jax.lax.scan(epoch, state, metrics)[1]

    rates, params = run(state, jnp.asarray(metrics))
    assert_matches_torch(scheduler, rates, params, metrics)


class Vector(nnx.Module):
    def __init__(self):
        self.w = nnx.Param(jnp.zeros(SIZE))


def _nnx_setup(scheduler):
    model = Vector()
    optimizer = nnx.Optimizer(model, SCHEDULERS[scheduler][1](), wrt=nnx.Param)
    grads = nnx.state(Vector(), nnx.Param)
    grads = jax.tree.map(jnp.ones_like, grads)
    return model, optimizer, grads


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_nnx_optimizer_forwards_value_to_the_scheduler(scheduler):
    metrics = metrics_with_a_plateau(1)
    model, optimizer, grads = _nnx_setup(scheduler)

    @nnx.jit
    def train_step(model, optimizer, grads, metric):
        optimizer.update(model, grads, value=metric)
        return optlib.current_learning_rate(optimizer.opt_state), model.w[...][0]

    step = nnx.cached_partial(train_step, model, optimizer, grads)
    rates, params = zip(*(step(jnp.asarray(metric)) for metric in metrics))
    assert_matches_torch(scheduler, rates, params, metrics)


def report_metric_nnx(optimizer, metric):
    """Epoch-level ``scheduler.step(metric)`` on an ``nnx.Optimizer`` (in place)."""
    stepped = optlib.report_metric(nnx.as_pure(optimizer.opt_state), metric)
    nnx.update(optimizer.opt_state, nnx.state(stepped))


def test_nnx_epoch_loop_with_report_metric_matches_torch():
    scheduler = "reduce_lr_on_plateau"
    metrics = metrics_with_a_plateau(2)
    model, optimizer, grads = _nnx_setup(scheduler)

    @nnx.jit
    def epoch(model, optimizer, grads, val_loss):
        optimizer.update(model, grads)  # no value: the scheduler does not step here
        report_metric_nnx(optimizer, val_loss)
        return optlib.current_learning_rate(optimizer.opt_state), model.w[...][0]

    step = nnx.cached_partial(epoch, model, optimizer, grads)
    rates, params = zip(*(step(jnp.asarray(metric)) for metric in metrics))
    assert_matches_torch(scheduler, rates, params, metrics)
