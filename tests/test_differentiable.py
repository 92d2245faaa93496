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
(one compile for all optimizers; the three updates are a ``lax.scan``).
Adafactor with ``relative_step=True`` owns its rate: there the derivative is taken with
respect to a scale of the initial parameters instead. ``newton`` and ``bfgs`` run without a
line search (``linesearch=None``) and ``newton`` with its dense Hessian: optax's line searches
and the CG solver are ``lax.while_loop``s, which reverse-mode differentiation does not go
through (a JAX limitation, as torch's ``differentiable`` excludes LBFGS). ``muon`` runs its
Newton–Schulz iteration in the parameters' float64 (``ns_dtype=None``): its default bfloat16
rounding is piecewise constant, which finite differences see and ``jax.grad`` (a cast's
derivative is the identity) does not. ``lbfgs`` is one
``lax.while_loop`` per update (torch's inner iterations): its meta-gradient is taken in
forward mode (``jax.jvp``, which does go through while loops; the same derivative for a
scalar ``theta``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from reliability_cases import (
    OPTIMIZER_CASES,
    init_params,
    make_batches,
    objective,
    train_step,
)

import optlib

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
        return dataclasses.replace(
            case, kwargs=dict(case.kwargs, linesearch=None), learning_rate=0.3
        )
    if case.name.startswith("muon"):
        return dataclasses.replace(case, kwargs=dict(case.kwargs, ns_dtype=None))
    return case


CASES = [differentiable_case(case) for case in OPTIMIZER_CASES]


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


def forward_mode(case) -> bool:
    """Updates that are ``lax.while_loop``s: differentiated with ``jax.jvp``."""
    return case.factory is optlib.lbfgs


def value_and_derivative(loss, theta, forward: bool):
    if forward:
        return jax.jvp(loss, (theta,), (jnp.ones_like(theta),))
    return jax.value_and_grad(loss)(theta)


def finite_difference_check(meta_losses: dict, thetas: dict, forward=frozenset()) -> dict:
    """For each ``name: theta -> loss``, at ``thetas[name]``: ``(value, jax.grad, central
    differences with Richardson extrapolation (error O(h**4)))``. All variants in one compile
    (every theta is an argument of the same jitted function). Names in ``forward`` are
    differentiated in forward mode."""
    value_and_grads = jax.jit(
        lambda ts: {
            name: value_and_derivative(loss, ts[name], name in forward)
            for name, loss in meta_losses.items()
        }
    )

    def at(shift):
        return value_and_grads(
            {
                name: jnp.float64(theta + shift * RELATIVE_STEP * theta)
                for name, theta in thetas.items()
            }
        )

    at_theta = at(0.0)
    plus, minus, plus_half, minus_half = at(1.0), at(-1.0), at(0.5), at(-0.5)
    results = {}
    for name, theta in thetas.items():
        h = RELATIVE_STEP * theta
        coarse = (float(plus[name][0]) - float(minus[name][0])) / (2 * h)
        fine = (float(plus_half[name][0]) - float(minus_half[name][0])) / h
        value, grad = at_theta[name]
        results[name] = (float(value), float(grad), (4 * fine - coarse) / 3)
    return results


def assert_matches_finite_differences(name: str, result) -> None:
    """``jax.grad`` vs the extrapolated central differences of ``finite_difference_check``."""
    value, grad, finite_difference = result
    assert np.isfinite(value) and np.isfinite(grad), name
    assert abs(grad) > 1e-8, f"{name}: the meta-gradient should not vanish here"
    np.testing.assert_allclose(grad, finite_difference, rtol=RTOL, atol=1e-12, err_msg=name)


def learning_rate_meta_loss(case, params, train_batches, held_out):
    """The held-out loss as a function of ``case``'s learning rate."""
    if case.metric_driven:  # its rate lives in the scheduler's state: build it with the tracer

        def meta_loss(learning_rate):
            tx = case.make(learning_rate)
            return unrolled(tx, params, tx.init(params), train_batches, held_out)

        return meta_loss
    # the usual way, which also builds the optimizer with the traced rate at each update
    injected = optax.inject_hyperparams(case.factory, static_args=case.static_args)(
        learning_rate=case.learning_rate, **case.kwargs
    )

    def meta_loss(learning_rate):
        state = injected.init(params)
        state.hyperparams["learning_rate"] = learning_rate
        return unrolled(injected, params, state, train_batches, held_out)

    return meta_loss


def initial_parameters_meta_loss(case, params, train_batches, held_out):
    """The held-out loss as a function of a scale of the initial parameters."""
    tx = case.make()

    def meta_loss(scale):
        start = jax.tree.map(lambda p: scale * p, params)
        return unrolled(tx, start, tx.init(start), train_batches, held_out)

    return meta_loss


WITH_RATE = [case for case in CASES if case.learning_rate is not None]
OWN_RATE = [case for case in CASES if case.learning_rate is None]


def all_meta_gradients():
    """Every case's ``(value, grad, finite difference)``: the learning-rate meta-gradient of
    each optimizer with a rate, the initial-parameter one of those owning their rate."""
    params, train_batches, held_out = data()
    losses, thetas, forward = {}, {}, set()
    for case in WITH_RATE:
        key = f"{case.name}: learning rate"
        losses[key] = learning_rate_meta_loss(case, params, train_batches, held_out)
        thetas[key] = case.learning_rate
        if forward_mode(case):
            forward.add(key)
    for case in OWN_RATE:
        key = f"{case.name}: initial parameters"
        losses[key] = initial_parameters_meta_loss(case, params, train_batches, held_out)
        thetas[key] = 1.0
    return finite_difference_check(losses, thetas, frozenset(forward))


def test_meta_gradients_of_every_optimizer_match_finite_differences(x64):
    """All optimizers in one compile (one program per optimizer costs more in all); every
    case is checked and every failing one is reported."""
    results = all_meta_gradients()
    assert len(results) == len(WITH_RATE) + len(OWN_RATE) == len(OPTIMIZER_CASES)
    failures = []
    for name, result in results.items():
        try:
            assert_matches_finite_differences(name, result)
        except AssertionError as error:
            failures.append(str(error))
    assert not failures, "\n\n".join(failures)
