"""``statistics_dtype``: float32 statistics by default, the parameters' dtype with ``None``.

* Every optimizer (``reliability_cases.OPTIMIZER_CASES``; the line searches of newton/bfgs
  keep their own state) keeps its per-parameter statistics in bf16/fp16 with
  ``statistics_dtype=None`` and in float32 by default; a non-float value is a TypeError.
* Against torch with bf16 and fp16 parameters, 100 steps, the same gradients fed to both
  (they do not depend on the parameters, so no difference feeds back): Rprop equals torch
  bit for bit (parameters and state), Adagrad's sum and Adamax's infinity norm equal
  torch's bit for bit. The other optimizers are not bit-identical; why, and by how much, is
  measured in ``test_low_precision_distance_to_torch_is_measured`` (torch.optim, and
  schedulefree's optimizers for the schedule-free ones) and written in the README's
  deviations section.
* L-BFGS's flat state and the parameter averages (``average_params``, ``asgd_average``)
  follow the option too.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from reliability_cases import OPTIMIZER_CASES, case_ids, init_params

import optlib

CASES = [case for case in OPTIMIZER_CASES if not case.line_search]
STEPS = 100
DTYPES = {"bfloat16": (jnp.bfloat16, torch.bfloat16), "float16": (jnp.float16, torch.float16)}


def parameter_shaped(state, params) -> list[tuple[str, jnp.dtype]]:
    """``(path, dtype)`` of the floating state leaves shaped like a parameter of rank >= 1,
    or like a factored statistic of one (Adafactor's row/column means)."""
    shapes = {leaf.shape for leaf in jax.tree.leaves(params) if leaf.ndim}
    shapes |= {leaf.shape[:-1] for leaf in jax.tree.leaves(params) if leaf.ndim >= 2}
    shapes |= {
        leaf.shape[:-2] + leaf.shape[-1:] for leaf in jax.tree.leaves(params) if leaf.ndim >= 2
    }
    return [
        (jax.tree_util.keystr(path), leaf.dtype)
        for path, leaf in jax.tree_util.tree_leaves_with_path(state)
        if leaf.ndim and leaf.shape in shapes and jnp.issubdtype(leaf.dtype, jnp.floating)
    ]


# Optimizers whose updates stay in the parameters' dtype with statistics_dtype=None: Rprop's
# step, +-step_size, is exact in it (torch's addcmul_ of a sign rounds nothing more); HF
# Adafactor's reference keeps float32 state itself and copies a float32 result into the
# parameter, so it has no torch rounding to follow.
LOW_PRECISION_STEPS = {
    "rprop",
    "rprop_reduce_lr_on_plateau",
    "adafactor",
    "adafactor_relative_step",
}


@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_none_keeps_the_statistics_in_the_parameters_dtype(case, dtype):
    params = init_params(jax.random.key(0), DTYPES[dtype][0])
    narrow = case.make(statistics_dtype=None)
    default = case.make()
    narrow_leaves = parameter_shaped(jax.eval_shape(narrow.init, params), params)
    default_leaves = parameter_shaped(jax.eval_shape(default.init, params), params)
    assert narrow_leaves, f"{case.name}: no statistic found"
    assert all(leaf_dtype == DTYPES[dtype][0] for _, leaf_dtype in narrow_leaves), narrow_leaves
    assert all(leaf_dtype == jnp.float32 for _, leaf_dtype in default_leaves), default_leaves

    # And a jitted step keeps them there. The updates are float32 (torch's step computes in
    # float32 and rounds the parameter once, which optax.apply_updates then does); with the
    # default statistics they are in the parameters' dtype.
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    extra = {"value": jnp.asarray(1.0, DTYPES[dtype][0])} if case.metric_driven else {}
    narrow_updates = jnp.float32 if case.name not in LOW_PRECISION_STEPS else DTYPES[dtype][0]
    for tx, expected in ((narrow, narrow_updates), (default, DTYPES[dtype][0])):
        state = tx.init(params)
        updates, new_state = jax.jit(lambda g, s, p, tx=tx: tx.update(g, s, p, **extra))(
            grads, state, params
        )
        dtypes = {u.dtype for u in jax.tree.leaves(updates)}
        assert dtypes == {jnp.dtype(expected)}, (case.name, dtypes)
        assert jax.tree.map(lambda x: x.dtype, new_state) == jax.tree.map(
            lambda x: x.dtype, state
        )


@pytest.mark.parametrize("value", ["int32", jnp.int8, "not a dtype", 3])
def test_a_statistics_dtype_that_is_not_a_float_is_rejected(value):
    with pytest.raises(TypeError, match="statistics_dtype must be None"):
        optlib.adam(statistics_dtype=value)


def test_a_wider_statistics_dtype_is_a_minimum(x64):
    params = {"w": jnp.zeros(3, jnp.bfloat16)}
    state = optlib.adam(statistics_dtype=jnp.float64).init(params)
    assert state["adam"].exp_avg["w"].dtype == jnp.float64


# ------------------------------------------------------------------------------ against torch

SHAPES = {"w": (64, 32), "b": (32,)}


def problem():
    rng = np.random.default_rng(0)
    params = {k: rng.uniform(-1.5, 1.5, s).astype(np.float32) for k, s in SHAPES.items()}
    scale = {k: rng.uniform(0.5, 1.5, s).astype(np.float32) for k, s in SHAPES.items()}
    noise = {k: rng.normal(0, 0.5, (STEPS, *s)).astype(np.float32) for k, s in SHAPES.items()}
    # float32 gradients rounded once to the parameters' dtype, the same on both sides.
    grads = {k: scale[k] * noise[k] for k in SHAPES}
    return params, grads


def torch_run(make, dtype):
    params, grads = problem()
    tensors = {k: torch.nn.Parameter(torch.tensor(v).to(dtype)) for k, v in params.items()}
    optimizer = make(list(tensors.values()))
    for step in range(STEPS):
        for k, p in tensors.items():
            p.grad = torch.tensor(grads[k][step]).to(dtype)
        optimizer.step()
    state = {
        k: {
            name: value.float().numpy()
            for name, value in optimizer.state[p].items()
            if torch.is_tensor(value) and value.shape == p.shape
        }
        for k, p in tensors.items()
    }
    return {k: p.detach().float().numpy() for k, p in tensors.items()}, state


def optlib_run(tx, dtype):
    params, grads = problem()

    @jax.jit
    def run(params, grads):
        def step(carry, g):
            params, state = carry
            updates, state = tx.update(jax.tree.map(lambda x: x.astype(dtype), g), state, params)
            return (optax.apply_updates(params, updates), state), None

        (params, state), _ = jax.lax.scan(step, (params, tx.init(params)), grads)
        return params, state

    out, state = run(jax.tree.map(lambda x: jnp.asarray(x).astype(dtype), params), grads)
    return {k: np.asarray(v.astype(jnp.float32)) for k, v in out.items()}, state


# (torch optimizer, optlib optimizer with statistics_dtype=None, torch-state -> optlib leaf)
EXACT = {
    "rprop": (
        lambda p: torch.optim.Rprop(p, lr=1e-2),
        lambda: optlib.rprop(1e-2, statistics_dtype=None),
        {
            "prev": lambda s, k: s["rprop"].prev[k],
            "step_size": lambda s, k: s["rprop"].step_size[k],
        },
        True,
    ),
    "adagrad": (
        lambda p: torch.optim.Adagrad(p, lr=1e-2),
        lambda: optlib.adagrad(1e-2, statistics_dtype=None),
        {"sum": lambda s, k: s["adagrad"].sum[k]},
        False,
    ),
    "adamax": (
        lambda p: torch.optim.Adamax(p, lr=1e-2),
        lambda: optlib.adamax(1e-2, statistics_dtype=None),
        {"exp_inf": lambda s, k: s["adamax"].exp_inf[k]},
        False,
    ),
}


@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
@pytest.mark.parametrize("name", list(EXACT))
def test_statistics_equal_torch_bit_for_bit_in_low_precision(name, dtype):
    make_torch, make_optlib, fields, params_exact = EXACT[name]
    jax_dtype, torch_dtype = DTYPES[dtype]
    reference, reference_state = torch_run(make_torch, torch_dtype)
    ours, state = optlib_run(make_optlib(), jax_dtype)
    for k in SHAPES:
        for field, leaf in fields.items():
            np.testing.assert_array_equal(
                np.asarray(leaf(state, k).astype(jnp.float32)),
                reference_state[k][field],
                err_msg=f"{name} {dtype} {field}[{k}] after {STEPS} steps",
            )
        if params_exact:
            np.testing.assert_array_equal(ours[k], reference[k], err_msg=f"{name} {dtype} {k}")


MEASURED = {
    "sgd": (
        lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9),
        lambda d: optlib.sgd(1e-2, momentum=0.9, statistics_dtype=d),
    ),
    "adam": (
        lambda p: torch.optim.Adam(p, lr=1e-2),
        lambda d: optlib.adam(1e-2, statistics_dtype=d),
    ),
    "adamw": (
        lambda p: torch.optim.AdamW(p, lr=1e-2),
        lambda d: optlib.adamw(1e-2, statistics_dtype=d),
    ),
    "rmsprop": (
        lambda p: torch.optim.RMSprop(p, lr=1e-3),
        lambda d: optlib.rmsprop(1e-3, statistics_dtype=d),
    ),
    "adadelta": (
        lambda p: torch.optim.Adadelta(p, lr=1.0),
        lambda d: optlib.adadelta(1.0, statistics_dtype=d),
    ),
    "nadam": (
        lambda p: torch.optim.NAdam(p, lr=1e-2),
        lambda d: optlib.nadam(1e-2, statistics_dtype=d),
    ),
    "radam": (
        lambda p: torch.optim.RAdam(p, lr=1e-2),
        lambda d: optlib.radam(1e-2, statistics_dtype=d),
    ),
    "asgd": (  # averaging from step 21 on; ax does not feed back into the parameters
        lambda p: torch.optim.ASGD(p, lr=1e-2, t0=20),
        lambda d: optlib.asgd(1e-2, t0=20, statistics_dtype=d),
    ),
    "torch_adafactor": (
        lambda p: torch.optim.Adafactor(p, lr=1e-2),
        lambda d: optlib.torch_adafactor(1e-2, statistics_dtype=d),
    ),
    "schedule_free_adamw": (
        lambda p: schedule_free_reference("AdamWScheduleFree", p),
        lambda d: optlib.schedule_free_adamw(1e-2, statistics_dtype=d),
    ),
    "schedule_free_sgd": (
        lambda p: schedule_free_reference("SGDScheduleFree", p),
        lambda d: optlib.schedule_free_sgd(1e-2, statistics_dtype=d),
    ),
    "schedule_free_radam": (
        lambda p: schedule_free_reference("RAdamScheduleFree", p),
        lambda d: optlib.schedule_free_radam(1e-2, statistics_dtype=d),
    ),
    "muon": (  # the matrix only (torch's Muon takes 2-D parameters); the bias stays put
        lambda p: torch.optim.Muon(p[:1], lr=2e-2),
        lambda d: optlib.param_groups(
            {"muon": optlib.muon(2e-2, statistics_dtype=d), "frozen": optax.set_to_zero()},
            lambda params: {"w": "muon", "b": "frozen"},
        ),
    ),
}


def schedule_free_reference(name, params):
    """schedulefree's optimizer in train mode (the parameters are ``y``, as optlib's)."""
    schedulefree = pytest.importorskip("schedulefree")
    optimizer = getattr(schedulefree, name)(params, lr=1e-2, foreach=False)
    optimizer.train()
    return optimizer


@pytest.mark.parametrize("name", list(MEASURED))
def test_low_precision_distance_to_torch_is_measured(name):
    """Not bit-identical (see the README's deviations): optlib rounds a statistic once per
    step where torch rounds after each of its in-place ops, and the chain rounds ``-lr * u``
    to bf16 before ``optax.apply_updates`` adds it, where torch's ``p.add_(u, alpha=-lr)``
    rounds once. Measured here (printed with ``-s``): the fraction of bf16 parameter entries
    that differ from torch after 100 steps, and the largest difference relative to how far
    the parameters moved; asserted: with ``None`` that distance is at most twice the one with
    float32 statistics (or half the movement)."""
    make_torch, make_optlib = MEASURED[name]
    reference, _ = torch_run(make_torch, torch.bfloat16)
    start, _ = problem()
    movement = max(np.max(np.abs(reference[k] - start[k])) for k in SHAPES)
    distances = {}
    for label, option in (("None", None), ("float32", jnp.float32)):
        ours, _ = optlib_run(make_optlib(option), jnp.bfloat16)
        differ = np.mean(np.concatenate([(ours[k] != reference[k]).ravel() for k in SHAPES]))
        error = max(np.max(np.abs(ours[k] - reference[k])) for k in SHAPES)
        distances[label] = (differ, error / movement)
    print(
        f"\n{name} bf16 vs torch, 100 steps: "
        + ", ".join(
            f"statistics_dtype={label}: {differ:.1%} of entries differ, max error "
            f"{relative:.3f} of the movement"
            for label, (differ, relative) in distances.items()
        )
    )
    assert distances["None"][1] <= max(0.5, 2 * distances["float32"][1])


@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
def test_lbfgs_keeps_its_flat_history_in_the_parameters_dtype_with_none(dtype):
    """L-BFGS's state is flat (torch concatenates the parameters), so the table above, which
    looks for parameter-shaped leaves, does not see it: the (m, n) history, direction and
    previous gradient are float32 by default and the parameters' dtype with ``None``; a
    jitted update keeps them there and returns the step in the parameters' dtype."""
    jax_dtype = DTYPES[dtype][0]
    params = {"w": jnp.linspace(-1, 1, 6, dtype=jax_dtype), "b": jnp.ones(2, jax_dtype)}

    def objective(p):
        return sum(jnp.sum(jnp.square(x.astype(jnp.float32) - 0.3)) for x in p.values())

    for option, expected in ((None, jax_dtype), (jnp.float32, jnp.float32)):
        tx = optlib.lbfgs(0.5, max_iter=3, history_size=2, statistics_dtype=option)
        state = tx.init(params)
        lbfgs_state = state["lbfgs"]
        for field in ("d", "old_dirs", "old_stps", "prev_flat_grad", "ro", "H_diag"):
            assert getattr(lbfgs_state, field).dtype == expected, (option, field)
        assert lbfgs_state.old_dirs.shape == (2, 8)

        @jax.jit
        def step(params, state, tx=tx):
            value, grads = jax.value_and_grad(objective)(params)
            return tx.update(grads, state, params, value=value, grad=grads, value_fn=objective)

        updates, new_state = step(params, state)
        assert jax.tree.map(lambda x: x.dtype, new_state) == jax.tree.map(lambda x: x.dtype, state)
        assert all(u.dtype == jax_dtype for u in jax.tree.leaves(updates))
        assert objective(optax.apply_updates(params, updates)) < objective(params)


@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
def test_averages_follow_statistics_dtype(dtype):
    """``average_params`` (a copy of the params at init) and ``asgd_average`` (zeros): the
    average in float32 by default, in the parameters' dtype with ``None``; an update keeps it
    there."""
    jax_dtype = DTYPES[dtype][0]
    params = {"w": jnp.linspace(-1, 1, 6, dtype=jax_dtype)}
    updates = {"w": jnp.full(6, 0.25, jax_dtype)}
    for make in (
        lambda d: optlib.average_params("ema", decay=0.9, statistics_dtype=d),
        lambda d: optlib.average_params("swa", statistics_dtype=d),
        lambda d: optlib.asgd_average(0.0, statistics_dtype=d),
    ):
        for option, expected in ((None, jax_dtype), (jnp.float32, jnp.float32)):
            tx = make(option)
            state = tx.init(params)
            assert state.average["w"].dtype == expected
            _, new_state = jax.jit(tx.update)(updates, state, params)
            assert new_state.average["w"].dtype == expected
            model = optax.apply_updates(params, updates)["w"]  # the first step copies it
            np.testing.assert_array_equal(
                np.asarray(new_state.average["w"], np.float32), np.asarray(model, np.float32)
            )


def test_the_default_statistics_dtype_is_not_taken_for_a_schedule_by_inject_hyperparams():
    params = {"w": jnp.ones(3)}
    injected = optax.inject_hyperparams(optlib.adam)(learning_rate=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # jnp.dtype(array) is deprecated: none may happen
        state = injected.init(params)
        _, state = injected.update(params, state, params)
    assert "statistics_dtype" not in state.hyperparams
    assert state.inner_state["adam"].exp_avg["w"].dtype == jnp.float32


def test_a_callable_dtype_under_inject_hyperparams_is_explained():
    injected = optax.inject_hyperparams(optlib.adam)(
        learning_rate=0.1, statistics_dtype=jnp.bfloat16
    )
    with pytest.raises(TypeError, match=r"static_args=\('statistics_dtype',\)"):
        injected.init({"w": jnp.ones(3)})


@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
def test_inject_hyperparams_on_low_precision_params_takes_its_low_precision_scalars(dtype):
    # optax.inject_hyperparams hands numeric hyperparameters over as scalars of the
    # parameters' dtype: a bf16 / fp16 weight_decay is a real number like any other.
    low = DTYPES[dtype][0]
    params = {"w": jnp.linspace(-1.0, 1.0, 8).astype(low)}
    grads = {"w": jnp.linspace(0.5, -0.25, 8).astype(low)}
    injected = optax.inject_hyperparams(optlib.adamw)(learning_rate=1e-2, weight_decay=0.3)
    state = injected.init(params)
    assert state.hyperparams["weight_decay"].dtype == low
    updates, _ = injected.update(grads, state, params)
    # the same numbers as the optimizer built with those (rounded) values
    rounded = {name: float(jnp.asarray(value, low)) for name, value in [("lr", 1e-2), ("wd", 0.3)]}
    direct = optlib.adamw(rounded["lr"], weight_decay=rounded["wd"])
    expected, _ = direct.update(grads, direct.init(params), params)
    assert updates["w"].dtype == low
    np.testing.assert_array_equal(
        np.asarray(updates["w"], np.float32), np.asarray(expected["w"], np.float32)
    )
