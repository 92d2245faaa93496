"""Updates are differentiable: meta-gradients through ``tx.update`` (issue 9.7).

torch needs ``differentiable=True`` to let autograd through ``optimizer.step()``; in JAX every
optlib update is a pure function, so ``jax.grad`` goes through a few updates. For every
optimizer, the meta-objective is the loss on a held-out batch after three updates on three
training batches, as a function of the learning rate (meta-learning of the learning rate),
built two ways:

* **closure**: the optimizer is constructed inside the differentiated function, with the
  traced learning rate as its ``learning_rate`` (metric-driven rates: the initial rate);
* **inject_hyperparams**: ``optax.inject_hyperparams(optlib.<opt>)(...)``, the traced rate
  written into ``state.hyperparams["learning_rate"]``.

``jax.grad`` must equal central finite differences of the same jitted function, in float64.
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
    split_batches,
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
    batches = split_batches(make_batches(jax.random.key(5), UPDATES + 1, jnp.float64))
    return init_params(jax.random.key(0), jnp.float64), batches[:UPDATES], batches[UPDATES]


def unrolled(tx, params, state, train_batches, held_out):
    """The held-out loss after one update per training batch."""
    for batch in train_batches:
        params, state, _ = train_step(tx, params, state, batch)
    return objective(params, held_out)


def assert_matches_finite_differences(meta_loss, theta: float) -> None:
    """``jax.grad`` vs central differences with Richardson extrapolation (error O(h**4))."""
    value_and_grad = jax.jit(jax.value_and_grad(meta_loss))
    value, grad = value_and_grad(jnp.float64(theta))

    def central(h):
        plus, _ = value_and_grad(jnp.float64(theta + h))
        minus, _ = value_and_grad(jnp.float64(theta - h))
        return (float(plus) - float(minus)) / (2 * h)

    h = RELATIVE_STEP * theta
    finite_difference = (4 * central(h / 2) - central(h)) / 3
    assert np.isfinite(float(value)) and np.isfinite(float(grad))
    assert abs(float(grad)) > 1e-8, "the meta-gradient should not vanish here"
    np.testing.assert_allclose(float(grad), finite_difference, rtol=RTOL, atol=1e-12)


@pytest.mark.parametrize("case", WITH_RATE, ids=case_ids(WITH_RATE))
def test_meta_gradient_of_the_learning_rate_through_the_constructor(case, x64):
    params, train_batches, held_out = data()

    def meta_loss(learning_rate):
        tx = case.make(learning_rate)
        return unrolled(tx, params, tx.init(params), train_batches, held_out)

    assert_matches_finite_differences(meta_loss, case.learning_rate)


INJECTABLE = [case for case in WITH_RATE if not case.metric_driven]


@pytest.mark.parametrize("case", INJECTABLE, ids=case_ids(INJECTABLE))
def test_meta_gradient_of_the_learning_rate_through_inject_hyperparams(case, x64):
    params, train_batches, held_out = data()
    tx = optax.inject_hyperparams(case.factory, static_args=case.static_args)(
        learning_rate=case.learning_rate, **case.kwargs
    )

    def meta_loss(learning_rate):
        state = tx.init(params)
        state.hyperparams["learning_rate"] = learning_rate
        return unrolled(tx, params, state, train_batches, held_out)

    assert_matches_finite_differences(meta_loss, case.learning_rate)


OWN_RATE = [case for case in CASES if case.learning_rate is None]


@pytest.mark.parametrize("case", OWN_RATE, ids=case_ids(OWN_RATE))
def test_gradient_with_respect_to_the_initial_parameters(case, x64):
    params, train_batches, held_out = data()
    tx = case.make()

    def meta_loss(scale):
        start = jax.tree.map(lambda p: scale * p, params)
        return unrolled(tx, start, tx.init(start), train_batches, held_out)

    assert_matches_finite_differences(meta_loss, 1.0)
