"""A jitted training step compiles once, for every optimizer and every scheduler (issue 9.5).

What makes a step recompile is a state whose *type* drifts between calls: a leaf that
``init`` makes weakly typed and ``update`` strongly typed, a dtype that changes, a Python
scalar that changes per step, a tree that grows. None of that shows inside one ``lax.scan``
(scan promotes weak types in its carry), so every test here runs the jitted step from a
**Python loop**, feeding the returned state back as a training loop does, and counts traces
twice: a Python side effect in the traced function, and ``jitted._cache_size()``.

* every optimizer (metric-driven rates included, ``value=`` passed at every step):
  1000 steps from a Python loop; then its counters are set near ``2**31 - 1`` and four
  more steps check that they saturate (issue 9.3) without a recompile;
* every registered step-based schedule, each the learning rate of an ``optlib.sgd`` (its
  momentum driven by the schedule where torch cycles momentum), all updated in one jitted
  step (one compile instead of thirty): 1000 steps from a Python loop, then the update
  count jumped near ``2**31 - 1`` (where it saturates) and a few more steps, still one
  compile (MultiplicativeLR is O(step) per call, so its count is not jumped);
* ``report_metric`` in an epoch loop (the other metric-driven path);
* ``optax.inject_hyperparams(optlib.<opt>)(learning_rate=..., <all its keywords>)``:
  30 steps, each with a new learning rate written into ``state.hyperparams``: one compile,
  the first steps equal the optimizer built plainly (for the optimizers whose state layout
  depends on a hyperparameter's value), and the new rate takes effect (a zero
  rate leaves the parameters unchanged; Adafactor's ``beta1`` averages rate-scaled updates,
  as HF's does, so there only a non-zero rate is checked).

On a failure the message lists the state fields whose type drifted.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from reliability_cases import (
    INT32_MAX,
    OPTIMIZER_CASES,
    build_schedule,
    case_ids,
    counters,
    init_params,
    make_batches,
    set_counters,
    split_batches,
    step_based_names,
    train_step,
)

import optlib

STEPS = 1000
BATCHES = split_batches(make_batches(jax.random.key(1), 8))


def counted_step(tx):
    """``train_step`` of ``tx``, jitted, with a list that grows once per trace."""
    traces = []

    @jax.jit
    def step(params, state, batch):
        traces.append(None)
        return train_step(tx, params, state, batch)

    return step, traces


def run_python_loop(tx, steps: int, params=None, state=None):
    step, traces = counted_step(tx)
    params = init_params(jax.random.key(0)) if params is None else params
    state = tx.init(params) if state is None else state
    loss = None
    for index in range(steps):
        params, state, loss = step(params, state, BATCHES[index % len(BATCHES)])
    return step, traces, params, state, loss


def drifted_fields(before, after) -> list[str]:
    """Paths of the leaves whose type (shape, dtype, weak type) differs between two states."""
    if jax.tree.structure(before) != jax.tree.structure(after):
        return ["<tree structure>"]
    return [
        jax.tree_util.keystr(path)
        for (path, old), new in zip(
            jax.tree_util.tree_leaves_with_path(before), jax.tree.leaves(after)
        )
        if jax.typeof(old) != jax.typeof(new)
    ]


def assert_compiled_once(step, traces, initial_state=None, final_state=None) -> None:
    drift = [] if initial_state is None else drifted_fields(initial_state, final_state)
    assert len(traces) == 1, f"traced {len(traces)} times; drifted state fields: {drift}"
    assert step._cache_size() == 1


@pytest.mark.parametrize("case", OPTIMIZER_CASES, ids=case_ids(OPTIMIZER_CASES))
def test_training_step_compiles_once_over_1000_steps_and_counters_saturate(case):
    """1000 steps, then every counter set to ``2**31 - 3`` and four more steps (issue 9.3):
    the counters end at ``2**31 - 1``, never wrap negative, and nothing recompiles."""
    tx = case.make()
    initial = tx.init(init_params(jax.random.key(0)))
    step, traces, params, state, loss = run_python_loop(tx, STEPS, state=initial)
    assert np.isfinite(float(loss))
    state = set_counters(state, INT32_MAX - 3)
    assert counters(state), "no counter found"
    for index in range(4):
        params, state, _ = step(params, state, BATCHES[index])
        assert all(value >= 0 for value in counters(state).values()), counters(state)
    steps_taken = {
        path: value for path, value in counters(state).items() if path.endswith(".count")
    }
    assert steps_taken and set(steps_taken.values()) == {INT32_MAX}, counters(state)
    assert_compiled_once(step, traces, initial, state)
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(params))


def test_every_schedule_drives_a_step_that_compiles_once():
    """All schedules in one jitted step on a quadratic ``|w - 1|**2 / 2`` (gradient ``w - 1``):
    the schedules are under test here, not the model."""
    names = step_based_names()
    optimizers = {name: optlib.sgd(build_schedule(name), momentum=0.5) for name in names}
    initial_params = {"w": jnp.zeros(3)}
    initial = {name: tx.init(initial_params) for name, tx in optimizers.items()}
    traces = []

    @jax.jit
    def step(params, states):
        traces.append(None)
        new_params, new_states = {}, {}
        for name, tx in optimizers.items():
            grads = jax.tree.map(lambda w: w - 1.0, params[name])
            updates, new_states[name] = tx.update(grads, states[name], params[name])
            new_params[name] = optax.apply_updates(params[name], updates)
        return new_params, new_states

    params = {name: initial_params for name in names}
    states = initial
    for _ in range(STEPS):
        params, states = step(params, states)
    jumped = [name for name in names if "Multiplicative" not in name]
    states = {
        name: set_counters(state, INT32_MAX - 3) if name in jumped else state
        for name, state in states.items()
    }
    for _ in range(6):  # through the saturation of the count
        params, states = step(params, states)
    drift = {name: drifted_fields(initial[name], states[name]) for name in names}
    assert len(traces) == 1, f"traced {len(traces)} times; drifted: {drift}"
    assert step._cache_size() == 1
    for name in jumped:
        assert set(counters(states[name]).values()) == {INT32_MAX}, name
    for name in names:
        assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(params[name]))


@pytest.mark.parametrize("scheduler", ["reduce_lr_on_plateau", "greedy_lr"])
def test_report_metric_epoch_loop_compiles_once(scheduler):
    rate = getattr(optlib, scheduler)(0.1, patience=1)
    tx = optlib.adam(rate)
    state = tx.init(init_params(jax.random.key(0)))
    traces = []

    @jax.jit
    def end_of_epoch(state, metric):
        traces.append(None)
        return optlib.report_metric(state, metric)

    rates = []
    for epoch in range(200):
        state = end_of_epoch(state, jnp.float32(1.0 + 0.5 * np.sin(epoch)))
        rates.append(float(optlib.current_learning_rate(state)))
    assert len(traces) == 1 and end_of_epoch._cache_size() == 1
    assert len(set(rates)) > 1  # the scheduler did step


INJECTABLE = [
    case for case in OPTIMIZER_CASES if case.learning_rate is not None and not case.metric_driven
]


@pytest.mark.parametrize("case", INJECTABLE, ids=case_ids(INJECTABLE))
def test_inject_hyperparams_learning_rate_change_does_not_recompile(case):
    tx = optax.inject_hyperparams(case.factory, static_args=case.static_args)(
        learning_rate=case.learning_rate, **case.kwargs
    )
    step, traces = counted_step(tx)
    # the optimizers whose state layout depends on a hyperparameter's value (a momentum
    # buffer, Adafactor's decay transform) against the plainly built one; each costs a compile
    compare_plainly = case.factory in (optlib.sgd, optlib.rmsprop, optlib.adafactor)
    plain_step, _ = counted_step(case.make())
    params = plain_params = init_params(jax.random.key(0))
    state, plain_state = tx.init(params), case.make().init(params)
    initial = state
    # torch's Rprop reads lr only for its initial step sizes: a later lr of 0 still moves
    rate_scales_last = case.kwargs.get("beta1") is None and case.factory is not optlib.rprop
    lag = 1 if case.factory is optlib.asgd else 0  # ASGD's eta follows the lr a step late
    # the schedule-free step averages y towards x even at lr 0 (as schedulefree does)
    rate_scales_last &= not case.name.startswith("schedule_free")
    rates = case.learning_rate * np.linspace(1.5, 0.1, 30)
    rates[:3] = case.learning_rate  # first steps: the same as the optimizer built plainly
    rates[3::7] = 0.0
    for index, rate in enumerate(rates):
        batch = BATCHES[index % len(BATCHES)]
        dtype = state.hyperparams["learning_rate"].dtype
        hyperparams = {**state.hyperparams, "learning_rate": jnp.asarray(rate, dtype)}
        state = state._replace(hyperparams=hyperparams)
        new_params, state, _ = step(params, state, batch)
        if index < 3 and compare_plainly:
            plain_params, plain_state, _ = plain_step(plain_params, plain_state, batch)
            for ours, plain in zip(jax.tree.leaves(new_params), jax.tree.leaves(plain_params)):
                np.testing.assert_allclose(ours, plain, rtol=1e-5, atol=1e-7)
        moved = any(
            bool(jnp.any(new != old))
            for new, old in zip(jax.tree.leaves(new_params), jax.tree.leaves(params))
        )
        applied = rates[max(index - lag, 0)]
        if rate_scales_last or applied != 0.0:
            assert moved == (applied != 0.0), f"step {index}: lr={applied} but moved={moved}"
        params = new_params
    assert_compiled_once(step, traces, initial, state)
