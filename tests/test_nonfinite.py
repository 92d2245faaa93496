"""NaN and Inf never corrupt optlib's state (issue 9.2).

* **Metrics.** A NaN is never an improvement (torch's ``ReduceLROnPlateau`` and HF's
  ``GreedyLR`` compare with ``<``/``>``, false for NaN); ``+-inf`` are ordinary extreme
  values. Hypothesis draws metric sequences mixing finite values with NaN, ``+inf`` and
  ``-inf``, for every ``mode``/``threshold_mode`` (and GreedyLR's smoothing window), and the
  learning rates must equal the reference's fed the same sequence, stay finite and within
  ``[min_lr, max_lr]``, and a NaN metric must leave ``best`` unchanged.
* **Gradients.** Every optimizer wrapped in ``optax.apply_if_finite``: a batch whose
  gradients hold NaN (or Inf) leaves the parameters and the inner optimizer state bit for
  bit unchanged, and the run then continues exactly as an uninterrupted run that skipped the
  bad batch (same jitted step, bitwise-equal parameters and states).
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from parity import make_torch_optimizer, torch
from reliability_cases import (
    OPTIMIZER_CASES,
    init_params,
    make_batches,
    split_batches,
    train_step,
)

import optlib

transformers_optimization = pytest.importorskip(
    "transformers.optimization", reason="GreedyLR parity needs transformers"
)

LEARNING_RATE = 0.1
STEPS = 24  # one length, one compile per scheduler type
HYPOTHESIS = settings(max_examples=30, deadline=None, derandomize=True, database=None)

finite_metrics = st.floats(-4.0, 4.0, width=32).filter(lambda x: x != 0.0)
metric_values = st.one_of(
    finite_metrics, finite_metrics, st.sampled_from([math.nan, math.inf, -math.inf])
)
metric_sequences = st.lists(metric_values, min_size=STEPS, max_size=STEPS).map(
    lambda values: np.asarray(values, np.float32)
)


# --------------------------------------------------------------------------------- metrics


def reference_rates(scheduler, optimizer, metrics) -> np.ndarray:
    """The lr after each ``scheduler.step(metric)`` of a real torch loop."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rates = []
        for metric in metrics:
            optimizer.step()
            scheduler.step(float(metric))
            rates.append(optimizer.param_groups[0]["lr"])
    return np.asarray(rates)


@jax.jit
def _report_all(state, metrics):
    """``report_metric`` over ``metrics``: (lr after each step, best after each step)."""

    def body(state, metric):
        state = optlib.report_metric(state, metric)
        return state, (state.learning_rate, state.best)

    return jax.lax.scan(body, state, metrics)[1]


def optlib_rates(tx, metrics):
    rates, best = _report_all(tx.init(jnp.zeros([])), jnp.asarray(metrics))
    return np.asarray(rates, np.float64), np.asarray(best, np.float64)


plateau_options = st.fixed_dictionaries(
    dict(
        mode=st.sampled_from(["min", "max"]),
        threshold_mode=st.sampled_from(["rel", "abs"]),
        threshold=st.sampled_from([0.0, 1e-4, 0.05]),
        patience=st.integers(0, 3),
        cooldown=st.integers(0, 2),
        factor=st.sampled_from([0.5, 0.1]),
        min_lr=st.sampled_from([0.0, 1e-3]),
    )
)


@HYPOTHESIS
@given(options=plateau_options, metrics=metric_sequences)
def test_nonfinite_metrics_match_torch_reduce_lr_on_plateau(options, metrics):
    optimizer = make_torch_optimizer(LEARNING_RATE)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **options)
    expected = reference_rates(scheduler, optimizer, metrics)
    rates, best = optlib_rates(optlib.reduce_lr_on_plateau(LEARNING_RATE, **options), metrics)
    np.testing.assert_allclose(rates, expected, rtol=1e-6)
    assert np.all(np.isfinite(rates)) and np.all(rates >= options["min_lr"] - 1e-12)
    assert np.all(np.diff(rates) <= 0)  # ReduceLROnPlateau never raises the rate
    assert not np.any(np.isnan(best)), "best became NaN"
    nan_steps = np.flatnonzero(np.isnan(metrics))
    for step in nan_steps[nan_steps > 0]:
        assert best[step] == best[step - 1], f"NaN metric at step {step} changed best"


greedy_options = st.fixed_dictionaries(
    dict(
        mode=st.sampled_from(["min", "max"]),
        threshold_mode=st.sampled_from(["rel", "abs"]),
        patience=st.integers(0, 3),
        cooldown=st.integers(0, 2),
        warmup=st.integers(0, 2),
        factor=st.sampled_from([0.5, 0.9]),
        min_lr=st.sampled_from([1e-3, 0.05]),
        max_lr=st.sampled_from([0.2, 1.0]),
        smooth=st.booleans(),
        reset_start=st.integers(0, 4),
    )
)


@HYPOTHESIS
@given(options=greedy_options, metrics=metric_sequences)
def test_nonfinite_metrics_match_hf_greedy_lr(options, metrics):
    options = dict(options, window_size=4)
    optimizer = make_torch_optimizer(LEARNING_RATE)
    scheduler = transformers_optimization.GreedyLR(optimizer, **options)
    expected = reference_rates(scheduler, optimizer, metrics)
    rates, best = optlib_rates(optlib.greedy_lr(LEARNING_RATE, **options), metrics)
    np.testing.assert_allclose(rates, expected, rtol=1e-6)
    assert np.all(np.isfinite(rates))
    assert np.all(rates >= options["min_lr"] * (1 - 1e-6))
    assert np.all(rates <= options["max_lr"] * (1 + 1e-6))
    nan_steps = np.flatnonzero(np.isnan(metrics))
    for step in nan_steps[nan_steps > 0]:  # a reset may restore the initial best instead
        assert best[step] == best[step - 1] or np.isinf(best[step])


@pytest.mark.parametrize("scheduler", ["reduce_lr_on_plateau", "greedy_lr"])
def test_update_with_nonfinite_value_scales_by_the_current_rate(scheduler):
    tx = optlib.adam(getattr(optlib, scheduler)(LEARNING_RATE, patience=0))
    params = init_params(jax.random.key(0))
    initial = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    update = jax.jit(tx.update)
    expected_updates, _ = update(grads, initial, params, value=jnp.float32(1.0))
    for metric in (math.nan, math.inf, -math.inf):
        updates, state = update(grads, initial, params, value=jnp.float32(metric))
        for ours, expected in zip(jax.tree.leaves(updates), jax.tree.leaves(expected_updates)):
            np.testing.assert_array_equal(ours, expected)  # the rate before the metric is seen
        rate = float(optlib.current_learning_rate(state))
        assert math.isfinite(rate) and rate > 0, (metric, rate)


# ------------------------------------------------------------------------------- gradients

BATCHES = split_batches(make_batches(jax.random.key(3), 4))


def bad_batch(kind: str):
    """A batch whose loss and gradients are not finite."""
    x, y = BATCHES[0]
    if kind == "nan_input":
        return x.at[2, 1].set(jnp.nan), y
    return x, y.at[0, 0].set(jnp.inf)  # "inf_target": loss inf, gradients inf/nan


def assert_trees_identical(a, b, what: str) -> None:
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b), what
    for left, right in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(left), np.asarray(right), err_msg=what)


def check_skips_and_recovers(state_trace, p, s, p_ref, s_ref) -> None:
    """The checks of one optimizer: ``state_trace`` is ``[(loss, p, s, p_next, s_next)]``
    over the schedule, ``(p, s)`` its end, ``(p_ref, s_ref)`` the good batches' end."""
    skipped = 0
    for loss, p_prev, s_prev, p_next, s_next in state_trace:
        if not np.isfinite(float(loss)):
            skipped += 1
            assert_trees_identical(p_next, p_prev, "parameters changed on a non-finite gradient")
            assert_trees_identical(s_next.inner_state, s_prev.inner_state, "inner state changed")
            assert int(s_next.notfinite_count) == 1
        else:
            assert int(s_next.notfinite_count) == 0
        assert int(s_next.total_notfinite) == skipped
    assert skipped == 2
    assert_trees_identical(p, p_ref, "parameters differ from the run without the bad batches")
    assert_trees_identical(s.inner_state, s_ref.inner_state, "inner states differ")
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(p))


def test_apply_if_finite_skips_bad_batches_and_the_run_recovers_with_every_optimizer():
    """Good, good, NaN batch, good, Inf batch, good, against the four good batches alone.

    Every optimizer in one jitted step (one compile for all; each optimizer's part sees only
    its own parameters and state); every one is checked and every failing one reported."""
    optimizers = {
        case.name: optax.apply_if_finite(case.make(), max_consecutive_errors=3)
        for case in OPTIMIZER_CASES
    }

    @jax.jit
    def step(params, states, batch):
        out = {
            name: train_step(tx, params[name], states[name], batch)
            for name, tx in optimizers.items()
        }
        return (
            {name: o[0] for name, o in out.items()},
            {name: o[1] for name, o in out.items()},
            {name: o[2] for name, o in out.items()},
        )

    params = init_params(jax.random.key(0))
    initial_params = {name: params for name in optimizers}
    initial_states = {name: tx.init(params) for name, tx in optimizers.items()}
    good = [BATCHES[1], BATCHES[2], BATCHES[3], BATCHES[0]]
    schedule = [good[0], good[1], bad_batch("nan_input"), good[2], bad_batch("inf_target"), good[3]]

    p, s = initial_params, initial_states
    trace = []
    for batch in schedule:
        p_next, s_next, loss = step(p, s, batch)
        trace.append((loss, p, s, p_next, s_next))
        p, s = p_next, s_next

    p_ref, s_ref = initial_params, initial_states
    for batch in good:
        p_ref, s_ref, _ = step(p_ref, s_ref, batch)

    failures = []
    for name in optimizers:
        try:
            check_skips_and_recovers(
                [tuple(part[name] for part in entry) for entry in trace],
                p[name],
                s[name],
                p_ref[name],
                s_ref[name],
            )
        except AssertionError as error:
            failures.append(f"{name}: {error}")
    assert not failures, "\n".join(failures)
