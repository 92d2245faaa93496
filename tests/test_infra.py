"""The shared plumbing: argument checks, the learning-rate transform, state search, registry."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optlib
from optlib import _validation as v
from optlib._registry import get_scheduler


@pytest.mark.parametrize(
    "check, args, error, fragment",
    [
        (v.check_positive, ("step_size", 0), ValueError, "step_size must be > 0, got 0"),
        (v.check_positive, ("gamma", float("nan")), ValueError, "gamma must be finite"),
        (v.check_non_negative, ("eps", -1e-3), ValueError, "eps must be >= 0, got -0.001"),
        (v.check_real, ("factor", "0.1"), TypeError, "factor must be a real number"),
        (v.check_real, ("factor", True), TypeError, "factor must be a real number"),
        (v.check_int, ("T_0", 3.5), TypeError, "T_0 must be an integer, got 3.5"),
        (v.check_int, ("T_0", 3.0), None, None),
        (v.check_int, ("T_0", 0), None, None),
        (v.check_interval, ("beta1", 1.0, 0.0, 1.0), None, None),
        (
            v.check_choice,
            ("mode", "mean", ("min", "max")),
            ValueError,
            "mode must be one of 'min', 'max'",
        ),
        (v.check_callable, ("lr_lambda", 3), TypeError, "lr_lambda must be callable"),
        (v.check_learning_rate, (-0.1,), ValueError, "learning_rate must be >= 0"),
    ],
)
def test_checks_name_the_parameter_and_value(check, args, error, fragment):
    if error is None:
        check(*args)
        return
    with pytest.raises(error, match=fragment.replace("(", r"\(").replace("[", r"\[")):
        check(*args)


def test_check_int_minimum_and_interval_open_end():
    with pytest.raises(ValueError, match="T_0 must be an integer >= 1, got 0"):
        v.check_int("T_0", 0, minimum=1)
    with pytest.raises(ValueError, match=r"beta1 must be in \[0.0, 1.0\), got 1.0"):
        v.check_interval("beta1", 1.0, 0.0, 1.0, high_closed=False)


def test_checks_pass_traced_values_through():
    @jax.jit
    def f(x):
        return v.check_positive("learning_rate", x) * 2

    assert float(f(jnp.asarray(-1.0))) == -2.0  # cannot be checked under jit, must not crash


def _run(tx, params, steps):
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    out = []
    for _ in range(steps):
        updates, state = tx.update(grads, state, params)
        out.append(updates)
    return out, state


def test_scale_by_learning_rate_applies_schedule_of_count_and_records_next_rate():
    schedule = lambda count: 1.0 / (1.0 + count)
    tx = optlib.scale_by_learning_rate(schedule)
    updates, state = _run(tx, {"w": jnp.ones(2)}, 3)
    applied = [float(u["w"][0]) for u in updates]
    np.testing.assert_allclose(applied, [-1.0, -1 / 2, -1 / 3], rtol=1e-7)
    np.testing.assert_allclose(optlib.current_learning_rate(state), 1 / 4, rtol=1e-7)
    assert state.count.dtype == jnp.int32


def test_scale_by_learning_rate_keeps_update_dtype():
    tx = optlib.scale_by_learning_rate(0.5)
    updates, _ = _run(tx, {"w": jnp.ones(2, jnp.bfloat16)}, 1)
    assert updates[0]["w"].dtype == jnp.bfloat16


def test_learning_rate_counter_saturates_instead_of_wrapping():
    tx = optlib.scale_by_learning_rate(lambda count: count.astype(jnp.float32))
    state = tx.init({"w": jnp.ones(1)})
    state = state._replace(count=jnp.asarray(2**31 - 1, jnp.int32))
    _, state = tx.update({"w": jnp.ones(1)}, state)
    assert int(state.count) == 2**31 - 1


def test_current_learning_rate_multiplies_chained_rates():
    tx = optax.chain(
        optax.scale_by_adam(),
        optlib.scale_by_learning_rate(lambda c: 0.5 * jnp.ones([]), flip_sign=False),
        optlib.scale_by_learning_rate(0.1),
    )
    _, state = _run(tx, {"w": jnp.ones(2)}, 1)
    np.testing.assert_allclose(optlib.current_learning_rate(state), 0.05, rtol=1e-6)


def test_current_learning_rate_gives_one_rate_per_partition_group():
    tx = optax.partition(
        {"a": optlib.scale_by_learning_rate(0.1), "b": optlib.scale_by_learning_rate(0.2)},
        {"x": "a", "y": "b"},
    )
    _, state = _run(tx, {"x": jnp.ones(2), "y": jnp.ones(3)}, 1)
    rates = optlib.current_learning_rate(state)
    np.testing.assert_allclose([rates["a"], rates["b"]], [0.1, 0.2], rtol=1e-6)


def test_current_learning_rate_reads_inject_hyperparams_and_follows_injected_rate():
    tx = optax.inject_hyperparams(optlib.scale_by_learning_rate)(learning_rate=0.3)
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    state.hyperparams["learning_rate"] = jnp.asarray(0.7)
    updates, state = jax.jit(tx.update)({"w": jnp.ones(2)}, state, params)
    np.testing.assert_allclose(updates["w"], -0.7, rtol=1e-6)  # the injected rate, at once
    np.testing.assert_allclose(optlib.current_learning_rate(state), 0.7, rtol=1e-6)
    plain = optax.inject_hyperparams(optax.sgd)(learning_rate=0.3)
    np.testing.assert_allclose(optlib.current_learning_rate(plain.init(params)), 0.3)


def test_current_learning_rate_is_jittable_and_errors_without_a_rate():
    tx = optax.chain(optax.scale_by_adam(), optlib.scale_by_learning_rate(0.25))
    state = tx.init({"w": jnp.ones(2)})
    np.testing.assert_allclose(jax.jit(optlib.current_learning_rate)(state), 0.25)
    with pytest.raises(ValueError, match="no learning rate found"):
        optlib.current_learning_rate(optax.scale_by_adam().init({"w": jnp.ones(2)}))


def test_get_scheduler_rejects_unknown_name_listing_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown scheduler name 'nope'\. Valid names: "):
        get_scheduler("nope", learning_rate=0.1)


def test_get_scheduler_requires_learning_rate():
    with pytest.raises(ValueError, match="StepLR requires `learning_rate`"):
        get_scheduler("StepLR", step_size=3)


def test_every_registered_name_has_a_reference():
    for name in optlib.scheduler_names():
        entry = optlib._registry.scheduler_entry(name)
        assert entry.reference and callable(entry.factory), name
