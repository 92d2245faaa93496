"""Updates are differentiable: meta-gradients through ``tx.update`` (issue 9.7).

torch needs ``differentiable=True`` to let autograd through ``optimizer.step()``; in JAX every
optlib update is a pure function, so ``jax.grad`` goes through a few updates. For every
optimizer, the meta-objective is the loss on a held-out batch after three updates on three
training batches, as a function of the learning rate (meta-learning of the learning rate):

* through ``optax.inject_hyperparams(optlib.<opt>)(...)``, the usual way to meta-learn
  optax hyperparameters: the traced rate is written into ``state.hyperparams`` and
  ``inject_hyperparams`` builds the optimizer with it at every update (so the constructors
  take traced arguments too);
* for the metric-driven rates, whose rate lives in the scheduler's state: the optimizer is
  built inside the differentiated function with the traced initial rate.

``jax.grad`` must equal central finite differences of the same jitted function, in float64
(one compile per optimizer; the three updates are a ``lax.scan``).
Adafactor with ``relative_step=True`` owns its rate: there the derivative is taken with
respect to a scale of the initial parameters instead. ``newton`` and ``bfgs`` run without a
line search (``linesearch=None``) and ``newton`` with its dense Hessian: optax's line searches
and the CG solver are ``lax.while_loop``s, which reverse-mode differentiation does not go
through (a JAX limitation, as torch's ``differentiable`` excludes LBFGS).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from reliability_cases import (
    OPTIMIZER_CASES,
    case_ids,
    init_params,
    make_batches,
    objective,
    train_step,
)

UPDATES = 3
RELATIVE_STEP = 3e-4  # central differences with h = 3e-4 * theta, in float64
RTOL = 1e-6


def differentiable_case(case):
    """Without line search (and Newton with its dense Hessian), at a rate that keeps three
    unguarded second-order steps on the tiny MLP well behaved."""
    if case.name == "newton":
        return dataclasses.replace(
            case, kwargs=dict(case.kwargs, linesearch=None, hessian="dense"), learning_rate=0.3
        )
    if case.name == "bfgs":
        return dataclasses.replace(case, kwargs=dict(case.kwargs, linesearch=None),
                                   learning_rate=0.3)
    return case


CASES = [differentiable_case(case) for case in OPTIMIZER_CASES]
WITH_RATE = [case for case in CASES if case.learning_rate is not None]


def data():
    """Float64 params, the training batches stacked (one per update), a held-out batch."""
    x, y = make_batches(jax.random.key(5), UPDATES + 1, jnp.float64)
    held_out = (x[UPDATES], y[UPDATES])
    return init_params(jax.random.key(0), jnp.float64), (x[:UPDATES], y[:UPDATES]), held_out


def unrolled(tx, params, state, train_batches, held_out):
    """The held-out loss after one update per training batch (a ``lax.scan``)."""

    def body(carry, batch):
        params, state, _ = train_step(tx, *carry, batch)
        return (params, state), None

    (params, _), _ = jax.lax.scan(body, (params, state), train_batches)
    return objective(params, held_out)


def assert_match_finite_differences(meta_losses: dict, theta: float) -> None:
    """For each ``theta -> loss``: ``jax.grad`` vs central differences with Richardson
    extrapolation (error O(h**4)). All variants in one compile."""
    value_and_grads = jax.jit(
        lambda t: {name: jax.value_and_grad(loss)(t) for name, loss in meta_losses.items()}
    )
    at_theta = value_and_grads(jnp.float64(theta))

    def central(h):
        plus, minus = value_and_grads(jnp.float64(theta + h)), value_and_grads(
            jnp.float64(theta - h))
        return {name: (float(plus[name][0]) - float(minus[name][0])) / (2 * h)
                for name in meta_losses}

    h = RELATIVE_STEP * theta
    coarse, fine = central(h), central(h / 2)
    for name, (value, grad) in at_theta.items():
        finite_difference = (4 * fine[name] - coarse[name]) / 3
        assert np.isfinite(float(value)) and np.isfinite(float(grad)), name
        assert abs(float(grad)) > 1e-8, f"{name}: the meta-gradient should not vanish here"
        np.testing.assert_allclose(float(grad), finite_difference, rtol=RTOL, atol=1e-12,
                                   err_msg=name)


@pytest.mark.parametrize("case", WITH_RATE, ids=case_ids(WITH_RATE))
def test_meta_gradient_of_the_learning_rate(case, x64):
    params, train_batches, held_out = data()
    if case.metric_driven:  # its rate lives in the scheduler's state: build it with the tracer

        def meta_loss(learning_rate):
            tx = case.make(learning_rate)
            return unrolled(tx, params, tx.init(params), train_batches, held_out)

    else:  # the usual way, which also builds the optimizer with the traced rate at each update
        injected = optax.inject_hyperparams(case.factory, static_args=case.static_args)(
            learning_rate=case.learning_rate, **case.kwargs
        )

        def meta_loss(learning_rate):
            state = injected.init(params)
            state.hyperparams["learning_rate"] = learning_rate
            return unrolled(injected, params, state, train_batches, held_out)

    assert_match_finite_differences({case.name: meta_loss}, case.learning_rate)


OWN_RATE = [case for case in CASES if case.learning_rate is None]


@pytest.mark.parametrize("case", OWN_RATE, ids=case_ids(OWN_RATE))
def test_gradient_with_respect_to_the_initial_parameters(case, x64):
    params, train_batches, held_out = data()
    tx = case.make()

    def meta_loss(scale):
        start = jax.tree.map(lambda p: scale * p, params)
        return unrolled(tx, start, tx.init(start), train_batches, held_out)

    assert_match_finite_differences({"initial parameters": meta_loss}, 1.0)
