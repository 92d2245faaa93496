"""Sharded training on a 2x4 CPU mesh: optimizer state laid out like the parameters.

For every optlib optimizer (``examples/sharded_train.py``'s table, metric-driven schedulers
included): ``optlib.state_shardings`` gives full-shape statistics the parameter's sharding,
Adafactor's factored row/column statistics the parameter's sharding minus the reduced axis,
and replicates scalars; ``jax.jit(tx.init, out_shardings=...)`` creates the state with that
layout; a jitted step with ``in_shardings``/``out_shardings`` trains exactly like one device.
The 8 CPU devices come from ``XLA_FLAGS`` set in ``conftest.py`` before jax is imported.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from sharding_layout import example, expected_spec, normalized

import optlib

STEPS = 5
TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def mesh():
    devices = jax.devices("cpu")
    assert len(devices) >= 8, (
        "needs 8 CPU devices: XLA_FLAGS=--xla_force_host_platform_device_count=8 must be set "
        "before jax is imported (tests/conftest.py does it)"
    )
    return example.make_mesh(devices[:8])


@pytest.fixture(scope="module")
def data():
    return example.init_params(), example.make_batches(STEPS)


# RMSprop's momentum buffer holds g / rms(g) element by element. A gradient element near 0
# (|g| ~ 1e-7 against a max of 4e-2 here) is a sum that cancels, and summed in another order
# on the mesh it differs by up to ~1e-3 relative; the normalisation turns that element into
# an O(1) value with the same relative error: the buffer differs by up to ~3e-6 of its size
# (measured: 4.5e-5 on a buffer of 17 after 4 steps, 1.9e-5 on 16 after 5). Every other
# statistic stays within TOLERANCE of its size.
NORMALISED_STATISTICS = {("rmsprop", "momentum"): 1e-5}


def statistic_tolerance(name: str, path) -> float:
    link = getattr(path[0], "key", None) if path else None
    return NORMALISED_STATISTICS.get((name, link), TOLERANCE)


@pytest.mark.parametrize("name", sorted(example.OPTIMIZERS))
def test_state_is_sharded_like_its_parameters_and_training_matches_one_device(name, mesh, data):
    host_params, batches = data
    tx = example.OPTIMIZERS[name]()
    shardings = optlib.state_shardings(tx, host_params, example.param_shardings(mesh))
    abstract = jax.eval_shape(tx.init, host_params)

    kinds = []
    for (path, leaf), sharding in zip(
        jax.tree_util.tree_leaves_with_path(abstract), jax.tree.leaves(shardings), strict=True
    ):
        kind, spec = expected_spec(path, leaf)
        kinds.append(kind)
        assert normalized(sharding.spec) == normalized(spec), (
            f"{jax.tree_util.keystr(path)} {leaf.shape}: {sharding.spec}, expected {spec} ({kind})"
        )
    assert "full" in kinds or {"row", "col"} <= set(kinds), "no statistic was checked"
    if name == "adafactor":
        assert {"row", "col"} <= set(kinds)

    params, opt_state, history = example.train_sharded(tx, mesh, host_params, batches)
    for leaf, sharding in zip(jax.tree.leaves(opt_state), jax.tree.leaves(shardings)):
        assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim)
    ref_params, ref_state, reference = example.train_single_device(tx, host_params, batches)
    # The loss is a mean over the sharded batch, summed in a different order: ~10 ulp.
    np.testing.assert_allclose(history["loss"], reference["loss"], rtol=TOLERANCE, atol=TOLERANCE)
    np.testing.assert_allclose(history["lr"], reference["lr"], rtol=TOLERANCE)
    assert example.max_abs_difference(params, ref_params) <= TOLERANCE
    for (path, leaf), ref in zip(
        jax.tree_util.tree_leaves_with_path(opt_state), jax.tree.leaves(ref_state)
    ):
        # Statistics such as RMSprop's momentum of normalised updates reach ~10: compare them
        # relative to their size (float32 reductions run in a different order when sharded).
        scale = max(1.0, float(np.max(np.abs(np.asarray(ref, np.float64)), initial=0.0)))
        assert example.max_abs_difference(leaf, ref) <= statistic_tolerance(name, path) * scale


def test_factored_statistics_are_split_over_the_mesh_not_replicated(mesh, data):
    host_params, _ = data
    params = jax.tree.map(example.put, host_params, example.param_shardings(mesh))
    tx = optlib.adafactor()
    state = jax.jit(
        tx.init,
        out_shardings=optlib.state_shardings(tx, host_params, example.param_shardings(mesh)),
    )(params)
    factored = state["factored_rms"]
    for field, shape in (("exp_avg_sq_row", (4, 16)), ("exp_avg_sq_col", (4, 12))):
        leaf = getattr(factored, field)["experts"]
        assert leaf.shape == shape
        assert not leaf.sharding.is_fully_replicated
        # Each device holds only its block: 1/2 (row, "data") or 1/4 (col, "model") of it.
        block = leaf.addressable_shards[0].data.shape
        assert np.prod(block) < np.prod(shape)


@pytest.mark.parametrize(
    "make", [optlib.bfgs, optlib.newton, optlib.lbfgs], ids=["bfgs", "newton", "lbfgs"]
)
def test_second_order_state_is_created_in_place(make, mesh, data):
    """BFGS / Newton / L-BFGS: param-shaped line-search leaves sharded, their flat vectors and
    matrices (L-BFGS's history) replicated."""
    host_params, _ = data
    tx = make()
    param_sh = example.param_shardings(mesh)
    shardings = optlib.state_shardings(tx, host_params, param_sh)
    params = jax.tree.map(example.put, host_params, param_sh)
    state = jax.jit(tx.init, out_shardings=shardings)(params)
    reference = tx.init(jax.tree.map(jnp.asarray, host_params))
    for (path, leaf), ref in zip(
        jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(reference)
    ):
        _, spec = expected_spec(path, leaf)
        if leaf.ndim and spec == P():  # BFGS's flat inverse Hessian and last params/gradient
            assert leaf.sharding.is_fully_replicated
        else:
            assert normalized(leaf.sharding.spec) == normalized(spec)
        np.testing.assert_array_equal(np.asarray(leaf), np.asarray(ref))


def test_one_sharding_for_all_parameters_is_accepted(mesh, data):
    host_params, _ = data
    replicated = NamedSharding(mesh, P())
    shardings = optlib.state_shardings(optlib.adam(), host_params, replicated)
    assert all(sharding.spec == P() for sharding in jax.tree.leaves(shardings))


def test_shardings_that_do_not_match_the_parameters_are_rejected(mesh, data):
    host_params, _ = data
    two = [NamedSharding(mesh, P()), NamedSharding(mesh, P())]
    with pytest.raises(ValueError, match="param_shardings has 2 shardings for 3 parameters"):
        optlib.state_shardings(optlib.adam(), host_params, two)
