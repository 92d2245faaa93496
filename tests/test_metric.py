"""Metric-driven schedulers against torch's ReduceLROnPlateau and HF's GreedyLR.

Every learning rate asserted here is produced by the reference in the same run: a real torch
loop ``optimizer.step(); scheduler.step(metric)`` over seeded random metric sequences with
improvements, plateaus, setbacks and (for torch) NaNs. optlib runs the same sequence through
both entry points, each one jitted ``lax.scan`` (one compile):

* ``value=`` path: ``tx.update(unit_grads, state, value=m)``; the update is ``-lr_k``;
* ``report_metric`` path: ``optlib.report_metric(state, m)``.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from parity import assert_trace_close, make_torch_optimizer, torch

import optlib

transformers_optimization = pytest.importorskip(
    "transformers.optimization", reason="GreedyLR parity needs transformers"
)
import transformers  # noqa: E402

RTOL = 2e-5  # the bound on the relative error of every learning rate
LEARNING_RATE = 0.1
STEPS = 200
MEASURED: dict[str, float] = {}  # worst relative error per case (printed with -s)


# ------------------------------------------------------------------------ metric data


def metric_sequence(seed: int, steps: int = STEPS, *, nans: int = 0, maximize: bool = False):
    """Seeded metrics: runs of improvements, exact and noisy plateaus, setbacks, NaNs.

    float32 values, so torch (float64) and optlib (float32) see the same numbers.
    """
    rng = np.random.default_rng(seed)
    level = 1.0 + rng.random()
    values: list[float] = []
    while len(values) < steps:
        kind = rng.choice(["improve", "plateau", "noisy", "worse"], p=[0.35, 0.25, 0.25, 0.15])
        for _ in range(int(rng.integers(2, 18))):
            if kind == "improve":
                level *= 1.0 - rng.uniform(0.005, 0.06)
                values.append(level)
            elif kind == "plateau":
                values.append(level)
            elif kind == "noisy":
                values.append(level * (1.0 + rng.normal(0.0, 0.02)))
            else:
                values.append(level * (1.0 + rng.uniform(0.01, 0.2)))
    metrics = np.asarray(values[:steps], np.float32)
    metrics[rng.choice(np.arange(10, steps), size=nans, replace=False)] = np.nan
    return -metrics if maximize else metrics


# ------------------------------------------------------------------------ the two loops


def reference_trace(make_scheduler: Callable[[Any], Any], metrics: np.ndarray):
    """torch loop: ``(lr used by update k, lr after scheduler step k)`` for every k."""
    optimizer = make_torch_optimizer(LEARNING_RATE)
    group = optimizer.param_groups[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduler = make_scheduler(optimizer)
        used, after = [], []
        for metric in metrics:
            used.append(group["lr"])
            optimizer.step()
            scheduler.step(float(metric))
            after.append(group["lr"])
    return np.asarray(used), np.asarray(after)


@functools.partial(jax.jit, static_argnums=0)
def _both_paths(update, state, metrics):
    """One jitted scan running the ``value=`` path and the ``report_metric`` path side by side."""

    def body(states, metric):
        by_value, by_report = states
        updates, by_value = update(jnp.ones([]), by_value, value=metric)
        report_used = optlib.current_learning_rate(by_report)
        by_report = optlib.report_metric(by_report, metric)
        return (by_value, by_report), (
            -updates,
            optlib.current_learning_rate(by_value),
            report_used,
            optlib.current_learning_rate(by_report),
        )

    return jax.lax.scan(body, (state, state), metrics)[1]


def optlib_traces(tx: optax.GradientTransformationExtraArgs, metrics: np.ndarray):
    """``{path: (lr used by update k, lr after step k)}`` for the ``value`` and ``report_metric``
    paths. ``update`` is the compile key: every scheduler of one type and window size shares
    one compile (its hyperparameters are state, not constants)."""
    trace = _both_paths(tx.update, tx.init(jnp.zeros([])), jnp.asarray(metrics))
    trace = [np.asarray(x, np.float64) for x in trace]
    return {"value": (trace[0], trace[1]), "report_metric": (trace[2], trace[3])}


# ------------------------------------------------------------------------ parity table


class Case(NamedTuple):
    name: str
    reference: Callable[[Any], Any]  # optimizer -> scheduler
    ours: Callable[[], optax.GradientTransformationExtraArgs]
    metrics: np.ndarray


def torch_case(name: str, seed: int, **kwargs: Any) -> Case:
    metrics = metric_sequence(seed, nans=4, maximize=kwargs.get("mode") == "max")
    return Case(
        name,
        lambda optimizer: torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **kwargs),
        lambda: optlib.reduce_lr_on_plateau(LEARNING_RATE, **kwargs),
        metrics,
    )


def greedy_case(name: str, seed: int, *, nans: int = 0, **kwargs: Any) -> Case:
    metrics = metric_sequence(seed, nans=nans, maximize=kwargs.get("mode") == "max")
    return Case(
        name,
        lambda optimizer: transformers_optimization.GreedyLR(optimizer, **kwargs),
        lambda: optlib.greedy_lr(LEARNING_RATE, **kwargs),
        metrics,
    )


def registry_case(name: str, seed: int, scheduler: str, **kwargs: Any) -> Case:
    """``transformers.get_scheduler`` vs ``optlib.get_scheduler`` with scheduler_specific_kwargs."""
    metrics = metric_sequence(seed, nans=2 if scheduler == "reduce_lr_on_plateau" else 0)
    return Case(
        name,
        lambda optimizer: transformers.get_scheduler(
            scheduler, optimizer, num_warmup_steps=5, scheduler_specific_kwargs=kwargs
        ),
        lambda: optlib.get_scheduler(
            scheduler,
            learning_rate=LEARNING_RATE,
            num_warmup_steps=5,
            scheduler_specific_kwargs=kwargs,
        ),
        metrics,
    )


CASES = [
    torch_case("plateau_defaults", 0),
    torch_case("plateau_min_rel_patience3", 1, patience=3),
    torch_case(
        "plateau_min_abs_cooldown", 2, threshold_mode="abs", threshold=0.02, patience=2, cooldown=3
    ),
    torch_case(
        "plateau_max_rel_min_lr",
        3,
        mode="max",
        threshold=1e-3,
        patience=2,
        cooldown=1,
        factor=0.5,
        min_lr=0.003,
    ),
    torch_case(
        "plateau_max_abs_patience0",
        4,
        mode="max",
        threshold_mode="abs",
        threshold=1e-3,
        patience=0,
        factor=0.7,
    ),
    torch_case("plateau_eps_skips_small_reductions", 5, factor=0.5, patience=1, eps=0.02),
    torch_case("plateau_factor0_drops_to_min_lr", 6, factor=0.0, patience=4, min_lr=0.01),
    greedy_case("greedy_defaults", 10),
    greedy_case(
        "greedy_cooldown_warmup_rel",
        11,
        patience=2,
        cooldown=3,
        warmup=2,
        threshold_mode="rel",
        threshold=1e-3,
        min_lr=0.01,
    ),
    greedy_case(
        "greedy_max_bounds",
        12,
        mode="max",
        patience=1,
        warmup=3,
        factor=0.8,
        min_lr=0.02,
        max_lr=0.2,
    ),
    greedy_case(
        "greedy_smooth_window5", 13, smooth=True, window_size=5, patience=2, factor=0.9, min_lr=0.01
    ),
    greedy_case(
        "greedy_smooth_window20_max_rel",
        14,
        smooth=True,
        window_size=20,
        mode="max",
        threshold_mode="rel",
        threshold=1e-4,
        patience=1,
        cooldown=2,
        min_lr=0.01,
    ),
    greedy_case(
        "greedy_reset_at_min", 15, patience=1, factor=0.5, min_lr=0.03, reset_start=3, cooldown=1
    ),
    greedy_case(
        "greedy_smooth_nan_then_reset",
        16,
        nans=1,
        smooth=True,
        window_size=5,
        patience=2,
        factor=0.5,
        min_lr=0.02,
        reset_start=2,
    ),
    greedy_case(
        "greedy_nan_eps", 17, nans=5, patience=0, factor=0.9, eps=5e-3, min_lr=0.01, max_lr=0.5
    ),
    registry_case(
        "hf_get_scheduler_reduce_lr_on_plateau",
        20,
        "reduce_lr_on_plateau",
        patience=2,
        factor=0.5,
        cooldown=1,
    ),
    registry_case(
        "hf_get_scheduler_greedy",
        21,
        "greedy",
        patience=1,
        smooth=True,
        window_size=20,
        min_lr=0.01,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_learning_rates_match_reference_through_value_and_report_metric(case):
    used, after = reference_trace(case.reference, case.metrics)
    assert len(np.unique(after)) > 1, "the sequence must make the reference change its rate"
    errors = []
    for path, (ours_used, ours_after) in optlib_traces(case.ours(), case.metrics).items():
        for label, ours, reference in (("used", ours_used, used), ("after", ours_after, after)):
            errors.append(
                assert_trace_close(
                    ours, reference, rtol=RTOL, atol_peak=0.0, label=f"{case.name} {path} {label}"
                )
            )
    MEASURED[case.name] = max(errors)
    print(f"{case.name}: max rel. error {MEASURED[case.name]:.2e} over {len(case.metrics)} steps")


X64_CASES = [CASES[3], CASES[13]]


@pytest.mark.parametrize("case", X64_CASES, ids=lambda case: case.name)
def test_learning_rates_match_reference_to_float64_under_x64(case, x64):
    used, after = reference_trace(case.reference, case.metrics)
    assert optlib.current_learning_rate(case.ours().init(None)).dtype == jnp.float64
    traces = optlib_traces(case.ours(), case.metrics.astype(np.float64))
    for path, (ours_used, ours_after) in traces.items():
        assert_trace_close(ours_used, used, rtol=1e-12, atol_peak=0.0, label=f"{case.name} {path}")
        assert_trace_close(
            ours_after, after, rtol=1e-12, atol_peak=0.0, label=f"{case.name} {path}"
        )


def test_registry_maps_torch_names_to_the_same_scheduler():
    metrics = metric_sequence(30, nans=2)
    kwargs = dict(patience=2, factor=0.5, cooldown=1)
    for name, reference in (
        ("ReduceLROnPlateau", torch.optim.lr_scheduler.ReduceLROnPlateau),
        ("GreedyLR", transformers_optimization.GreedyLR),
    ):
        _, after = reference_trace(lambda opt, cls=reference: cls(opt, **kwargs), metrics)
        tx = optlib.get_scheduler(name, learning_rate=LEARNING_RATE, **kwargs)
        assert isinstance(tx, optax.GradientTransformationExtraArgs)
        assert_trace_close(
            optlib_traces(tx, metrics)["report_metric"][1],
            after,
            rtol=RTOL,
            atol_peak=0.0,
            label=name,
        )


def test_registry_rejects_what_the_references_reject():
    with pytest.raises(TypeError, match="num_warmup_steps"):
        optlib.get_scheduler("ReduceLROnPlateau", learning_rate=0.1, num_warmup_steps=3)
    with pytest.raises(TypeError, match="warmup"):  # GreedyLR's own warmup, not ReduceLROnPlateau's
        optlib.get_scheduler(
            "reduce_lr_on_plateau", learning_rate=0.1, scheduler_specific_kwargs={"warmup": 2}
        )
    optimizer = make_torch_optimizer(LEARNING_RATE)
    with pytest.raises(TypeError):
        transformers.get_scheduler(
            "reduce_lr_on_plateau", optimizer, scheduler_specific_kwargs={"warmup": 2}
        )


def _report_only(state, metrics):
    return jax.lax.scan(lambda state, m: (optlib.report_metric(state, m), None), state, metrics)[0]


def test_verbose_prints_hf_messages_through_the_host_callback(capsys, x64):
    kwargs = dict(verbose=True, patience=1, factor=0.5, min_lr=0.03, reset_start=2, warmup=1)
    metrics = metric_sequence(40, steps=120)
    reference_trace(lambda opt: transformers_optimization.GreedyLR(opt, **kwargs), metrics)
    expected = capsys.readouterr().out
    assert "increasing" in expected and "reducing" in expected and "reset" in expected
    tx = optlib.greedy_lr(LEARNING_RATE, **kwargs)
    jax.jit(_report_only)(tx.init(None), jnp.asarray(metrics))
    jax.effects_barrier()
    assert capsys.readouterr().out == expected


def test_quiet_scheduler_prints_nothing(capsys):
    optlib_traces(optlib.greedy_lr(LEARNING_RATE, patience=1, min_lr=0.03), metric_sequence(41))
    jax.effects_barrier()
    assert capsys.readouterr().out == ""


def test_update_without_value_does_not_step_the_scheduler():
    tx = optlib.reduce_lr_on_plateau(LEARNING_RATE, patience=0)
    state = tx.init(jnp.zeros([]))
    for _ in range(3):
        updates, state = jax.jit(tx.update)(jnp.ones([]), state)
    assert float(updates) == pytest.approx(-LEARNING_RATE)
    assert int(state.count) == 0 and int(state.num_bad_epochs) == 0


def test_update_applies_the_rate_from_before_the_metric():
    """``optimizer.step(); scheduler.step(m)``: the metric that triggers a reduction does not
    change the update it arrives with."""
    _, after = reference_trace(
        lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0),
        np.asarray([1.0, 2.0], np.float32),
    )
    tx = optlib.reduce_lr_on_plateau(LEARNING_RATE, patience=0)
    state = tx.init(jnp.zeros([]))
    _, state = tx.update(jnp.ones([]), state, value=1.0)
    updates, state = tx.update(jnp.ones([]), state, value=2.0)
    assert float(-updates) == pytest.approx(after[0], rel=RTOL)
    assert float(optlib.current_learning_rate(state)) == pytest.approx(after[1], rel=RTOL)
    assert after[1] < after[0]


def test_updates_keep_their_dtype():
    tx = optax.chain(optax.scale_by_adam(), optlib.greedy_lr(LEARNING_RATE))
    params = {"w": jnp.ones(3, jnp.bfloat16)}
    updates, _ = jax.jit(tx.update)(params, tx.init(params), params, value=jnp.float32(1.0))
    assert updates["w"].dtype == jnp.bfloat16


# ------------------------------------------------------------------ nested optax states


def _plateau(learning_rate=LEARNING_RATE):
    return optlib.reduce_lr_on_plateau(learning_rate, patience=1, factor=0.5, cooldown=1)


CONTAINERS = {
    "chain": lambda: optax.chain(optax.scale_by_adam(), _plateau()),
    "named_chain": lambda: optax.named_chain(
        ("adam", optax.scale_by_adam()), ("plateau", _plateau())
    ),
    "partition": lambda: optax.partition(
        {"scheduled": optax.chain(optax.scale_by_adam(), _plateau()), "fixed": optax.sgd(0.5)},
        {"a": "scheduled", "b": "fixed"},
    ),
    "inject_hyperparams": lambda: optax.inject_hyperparams(
        lambda learning_rate: optax.chain(optax.scale_by_adam(), _plateau(learning_rate))
    )(learning_rate=LEARNING_RATE),
    "multi_steps": lambda: optax.MultiSteps(
        optax.chain(optax.scale_by_adam(), _plateau()), every_k_schedule=2
    ),
}


def _scheduled_rate(opt_state):
    rate = optlib.current_learning_rate(opt_state)
    return rate["scheduled"] if isinstance(rate, dict) else rate


@pytest.mark.parametrize("container", list(CONTAINERS))
def test_report_metric_and_value_reach_the_scheduler_inside(container):
    metrics = metric_sequence(50, steps=60, nans=2)
    _, after = reference_trace(
        lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, patience=1, factor=0.5, cooldown=1
        ),
        metrics,
    )
    tx = CONTAINERS[container]()
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    # MultiSteps applies the inner update (and its ``value``) every 2nd call only.
    forwards_value = container != "multi_steps"

    @jax.jit
    def run(opt_state, metrics):
        def body(states, metric):
            by_report, by_value = states
            by_report = optlib.report_metric(by_report, metric)
            if forwards_value:
                _, by_value = tx.update(params, by_value, params, value=metric)
            return (by_report, by_value), (_scheduled_rate(by_report), _scheduled_rate(by_value))

        return jax.lax.scan(body, (opt_state, opt_state), metrics)

    (by_report, _), rates = run(tx.init(params), jnp.asarray(metrics))
    assert_trace_close(
        np.asarray(rates[0]), after, rtol=RTOL, atol_peak=0.0, label=f"{container} report_metric"
    )
    if forwards_value:
        assert_trace_close(
            np.asarray(rates[1]), after, rtol=RTOL, atol_peak=0.0, label=f"{container} value"
        )
    # the stepped state still drives an update (structure unchanged)
    jax.jit(tx.update)(params, by_report, params)


def test_report_metric_without_a_scheduler_raises():
    with pytest.raises(ValueError, match="no metric-driven scheduler"):
        optlib.report_metric(optax.adam(1e-3).init(jnp.zeros(2)), 1.0)


def test_report_metric_rejects_a_non_scalar_metric():
    state = _plateau().init(None)
    with pytest.raises(ValueError, match="scalar"):
        optlib.report_metric(state, jnp.ones(3))


def test_hyperparameters_live_in_the_state():
    """report_metric needs no transform: a state alone carries what its step needs."""
    state = optlib.greedy_lr(
        0.2, factor=0.5, patience=3, mode="max", smooth=True, window_size=7
    ).init(None)
    assert float(state.config.factor) == 0.5 and int(state.config.patience) == 3
    assert bool(state.config.maximize) and bool(state.config.smooth)
    assert state.window.shape == (7,)
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(state))


# ------------------------------------------------------------------ warm-up then plateau


def test_warmup_schedule_chained_before_plateau_multiplies_the_rates():
    """torch recipe: LinearLR warm-up and ReduceLROnPlateau stepping the same optimizer."""
    warmup_steps, start_factor = 10, 0.1
    metrics = metric_sequence(60, steps=150, nans=2)
    optimizer = make_torch_optimizer(LEARNING_RATE)
    warm = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor, total_iters=warmup_steps)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=2, factor=0.5, eps=0.0)
    used, after = [], []
    for metric in metrics:
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        warm.step()
        plateau.step(float(metric))
        after.append(optimizer.param_groups[0]["lr"])

    warmup = optax.linear_schedule(start_factor, 1.0, warmup_steps)
    tx = optax.chain(
        optlib.scale_by_learning_rate(warmup, flip_sign=False),
        optlib.reduce_lr_on_plateau(LEARNING_RATE, patience=2, factor=0.5, eps=0.0),
    )

    @jax.jit
    def run(metrics):
        def body(state, metric):
            updates, state = tx.update(jnp.ones([]), state, value=metric)
            return state, (-updates, optlib.current_learning_rate(state))

        return jax.lax.scan(body, tx.init(jnp.zeros([])), metrics)[1]

    ours_used, ours_after = run(jnp.asarray(metrics))
    assert_trace_close(ours_used, np.asarray(used), rtol=RTOL, atol_peak=0.0, label="used")
    assert_trace_close(ours_after, np.asarray(after), rtol=RTOL, atol_peak=0.0, label="after")


# ------------------------------------------------------------- jit, transfer guard, orbax

SCHEDULERS = {
    "reduce_lr_on_plateau": lambda: optlib.reduce_lr_on_plateau(0.5, patience=3, factor=0.5),
    "greedy_lr": lambda: optlib.greedy_lr(
        0.5, patience=2, smooth=True, window_size=6, min_lr=1e-3, reset_start=2
    ),
}


def _toy_problem():
    """A least-squares problem whose noisy loss improves, then plateaus."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x @ np.arange(1.0, 5.0) + 0.3 * rng.normal(size=64)).astype(np.float32)
    params = {"w": jnp.zeros(4), "b": jnp.zeros([])}
    return params, jnp.asarray(x), jnp.asarray(y)


def _loss(params, x, y):
    return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


@functools.cache
def _training(scheduler: str):
    """``(tx, jitted train step, its trace log)``, shared by the tests of one scheduler."""
    tx = optax.chain(optax.scale_by_adam(), SCHEDULERS[scheduler]())
    traces: list[int] = []

    @jax.jit
    def train_step(params, opt_state, x, y):
        traces.append(1)
        loss, grads = jax.value_and_grad(_loss)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params, value=loss)
        return optax.apply_updates(params, updates), opt_state, loss

    return tx, train_step, traces


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_training_step_stays_on_device_and_compiles_once(scheduler):
    tx, train_step, traces = _training(scheduler)
    params, x, y = _toy_problem()
    opt_state = tx.init(params)
    report = jax.jit(optlib.report_metric)
    rate = jax.jit(optlib.current_learning_rate)
    first_rate = rate(opt_state)
    with jax.transfer_guard("disallow"):
        for step in range(100):
            params, opt_state, loss = train_step(params, opt_state, x, y)
            if step % 10 == 9:  # an epoch-level metric too, still on device
                opt_state = report(opt_state, loss)
        last_rate = rate(opt_state)
    assert len(traces) == 1  # one compile for the whole run (and any other test using it)
    assert float(last_rate) != float(first_rate), "the scheduler should have acted"


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_state_survives_orbax_checkpoint_mid_run(scheduler, tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    tx, train_step, _ = _training(scheduler)
    params, x, y = _toy_problem()

    def run(params, opt_state, steps):
        rates = []
        for _ in range(steps):
            params, opt_state, _ = train_step(params, opt_state, x, y)
            rates.append(optlib.current_learning_rate(opt_state))
        return params, opt_state, np.asarray(rates)

    _, straight_state, straight_rates = run(params, tx.init(params), 60)
    half_params, half_state, first_rates = run(params, tx.init(params), 30)

    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "ckpt", {"params": half_params, "opt_state": half_state})
    checkpointer.wait_until_finished()
    target = {
        "params": jax.eval_shape(lambda: params),
        "opt_state": jax.eval_shape(tx.init, params),
    }
    restored = checkpointer.restore(tmp_path / "ckpt", target)
    checkpointer.close()

    assert jax.tree.structure(restored["opt_state"]) == jax.tree.structure(half_state)
    _, resumed_state, second_rates = run(restored["params"], restored["opt_state"], 30)
    np.testing.assert_array_equal(np.concatenate([first_rates, second_rates]), straight_rates)
    assert len(np.unique(straight_rates)) > 1, "the scheduler should have acted"
    for resumed, straight in zip(jax.tree.leaves(resumed_state), jax.tree.leaves(straight_state)):
        np.testing.assert_array_equal(resumed, straight)


# ---------------------------------------------------------------------- invalid input


class BadArgs(NamedTuple):
    name: str
    reference: Callable[..., Any] | None  # None: the reference accepts it (our deviation)
    ours: Callable[..., Any]
    kwargs: dict[str, Any]
    error: type[Exception]


def _plateau_reference(**kwargs):
    return torch.optim.lr_scheduler.ReduceLROnPlateau(make_torch_optimizer(0.1), **kwargs)


def _greedy_reference(**kwargs):
    return transformers_optimization.GreedyLR(make_torch_optimizer(0.1), **kwargs)


BAD_ARGS = [
    BadArgs(
        "plateau_factor_1",
        _plateau_reference,
        optlib.reduce_lr_on_plateau,
        {"factor": 1.0},
        ValueError,
    ),
    BadArgs(
        "plateau_factor_2",
        _plateau_reference,
        optlib.reduce_lr_on_plateau,
        {"factor": 2.0},
        ValueError,
    ),
    BadArgs(
        "plateau_mode", _plateau_reference, optlib.reduce_lr_on_plateau, {"mode": "avg"}, ValueError
    ),
    BadArgs(
        "plateau_threshold_mode",
        _plateau_reference,
        optlib.reduce_lr_on_plateau,
        {"threshold_mode": "pct"},
        ValueError,
    ),
    BadArgs(
        "plateau_min_lr_list",
        _plateau_reference,
        optlib.reduce_lr_on_plateau,
        {"min_lr": [0.1, 0.2]},
        (TypeError, ValueError),
    ),
    BadArgs(
        "plateau_negative_patience", None, optlib.reduce_lr_on_plateau, {"patience": -1}, ValueError
    ),
    BadArgs(
        "plateau_negative_cooldown", None, optlib.reduce_lr_on_plateau, {"cooldown": -2}, ValueError
    ),
    BadArgs(
        "plateau_negative_factor", None, optlib.reduce_lr_on_plateau, {"factor": -0.5}, ValueError
    ),
    BadArgs(
        "plateau_negative_min_lr", None, optlib.reduce_lr_on_plateau, {"min_lr": -1e-3}, ValueError
    ),
    BadArgs(
        "plateau_float_patience", None, optlib.reduce_lr_on_plateau, {"patience": 2.5}, TypeError
    ),
    BadArgs("greedy_factor_1", _greedy_reference, optlib.greedy_lr, {"factor": 1.0}, ValueError),
    BadArgs("greedy_mode", _greedy_reference, optlib.greedy_lr, {"mode": "avg"}, ValueError),
    BadArgs(
        "greedy_threshold_mode",
        _greedy_reference,
        optlib.greedy_lr,
        {"threshold_mode": "pct"},
        ValueError,
    ),
    BadArgs(
        "greedy_min_lr_above_max_lr",
        None,
        optlib.greedy_lr,
        {"min_lr": 0.5, "max_lr": 0.1},
        ValueError,
    ),
    BadArgs("greedy_factor_0", None, optlib.greedy_lr, {"factor": 0.0}, ValueError),
    BadArgs("greedy_negative_patience", None, optlib.greedy_lr, {"patience": -1}, ValueError),
    BadArgs("greedy_negative_cooldown", None, optlib.greedy_lr, {"cooldown": -1}, ValueError),
    BadArgs("greedy_negative_warmup", None, optlib.greedy_lr, {"warmup": -1}, ValueError),
    BadArgs(
        "greedy_window_size_0",
        None,
        optlib.greedy_lr,
        {"window_size": 0, "smooth": True},
        ValueError,
    ),
    BadArgs("greedy_negative_reset_start", None, optlib.greedy_lr, {"reset_start": -1}, ValueError),
    BadArgs("greedy_verbose_not_bool", None, optlib.greedy_lr, {"verbose": "yes"}, TypeError),
]


@pytest.mark.parametrize("case", BAD_ARGS, ids=lambda case: case.name)
def test_invalid_arguments_raise_like_the_reference(case):
    if case.reference is not None:
        with pytest.raises(case.error):
            case.reference(**case.kwargs)
    with pytest.raises(case.error) as raised:
        case.ours(LEARNING_RATE, **case.kwargs)
    assert any(key in str(raised.value) for key in case.kwargs), raised.value


def test_window_size_0_is_a_division_by_zero_in_the_reference():
    scheduler = _greedy_reference(smooth=True, window_size=0)
    with pytest.raises(ZeroDivisionError):
        scheduler.step(1.0)


@pytest.mark.parametrize("factory", [optlib.reduce_lr_on_plateau, optlib.greedy_lr])
def test_learning_rate_must_be_a_non_negative_number(factory):
    with pytest.raises(ValueError, match="Invalid learning rate"):
        make_torch_optimizer(-1.0)
    with pytest.raises(ValueError, match="learning_rate"):
        factory(-1.0)
    with pytest.raises(TypeError, match="chain"):
        factory(optax.linear_schedule(0.0, 1.0, 10))


def test_wrapping_a_scheduler_whole_in_inject_hyperparams_explains_the_alternative():
    with pytest.raises(TypeError, match=r"state\.config"):
        optax.inject_hyperparams(optlib.reduce_lr_on_plateau)(learning_rate=0.1).init(jnp.zeros(2))
