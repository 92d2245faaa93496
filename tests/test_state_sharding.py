"""Optimizer state at scale, on 8 forced CPU devices (``tests/conftest.py`` sets XLA_FLAGS).

* A plain ``tx.init(params)`` on sharded parameters lays every state leaf out like
  ``optlib.state_shardings`` says (leaf by leaf, every optimizer of
  ``examples/sharded_train.py``): parameter-shaped statistics with the parameter's sharding,
  factored statistics with it minus the reduced axis, scalars replicated; and
  ``jax.jit(tx.init, out_shardings=state_shardings(...))`` creates the same arrays.
* ZeRO-1 (``shard_state_over="data"``) on a 1x8 mesh with replicated parameters keeps 1/8 of
  the state per device, and 20 steps equal the replicated-state run bit for bit (to round-off
  for four optimizers, see ``ROUND_OFF_ONLY``).
* ``param_shardings`` that leave parameters out are an error naming them.
* A checkpoint written on the 2x4 mesh restores (orbax) onto 1x8, 8x1 and one device with
  ``state_shardings`` for the new layout, bit for bit, and training continues identically.
"""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, SingleDeviceSharding
from jax.sharding import PartitionSpec as P
from sharding_layout import example, expected_spec, load_example, normalized

import optlib

ZERO1_STEPS = 20

# ZeRO-1 runs that equal the replicated-state run to round-off, not bit for bit:
# * Adafactor (update RMS, factored means), torch's Adafactor (the same, and the parameter
#   RMS) and StableAdamW (update RMS) reduce over a whole tensor; with the state split over
#   "data" XLA sums partial reductions across devices, in another order than one device does
#   (measured for torch_adafactor: one float32 ulp from the first step on, 6e-8 in the
#   parameters and 2.5e-7 relative in the state, not growing over 20 steps);
# * AdEMAMix: its fast and slow moments ``b * m + (1 - b) * g`` come out one ulp apart in
#   some entries from step 2 on (measured: the second moment, computed from the same
#   gradients, is identical), i.e. XLA:CPU compiles that expression differently for a 1/8
#   shard than for the whole array; the difference then grows through the trajectory (~1e-4
#   relative after 20 steps). Which programs XLA:CPU compiles this way depends on the whole
#   step: pinning the gradients' sharding in the step, for instance, moves the ulp
#   differences to Lion's and RMSprop's moments instead.
ROUND_OFF_ONLY = {"adafactor", "ademamix", "stable_adamw", "torch_adafactor"}


def devices8():
    devices = jax.devices("cpu")
    if len(devices) < 8:
        pytest.fail("needs 8 CPU devices (tests/conftest.py sets XLA_FLAGS)")
    return devices[:8]


@pytest.fixture(scope="module")
def mesh():
    return example.make_mesh(devices8())


@pytest.fixture(scope="module")
def host_params():
    return example.init_params()


def leaves_equal(a, b) -> bool:
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


# --------------------------------------------------------------------------- layout at init


@pytest.mark.parametrize("name", sorted(example.OPTIMIZERS))
def test_eager_and_jitted_init_lay_every_leaf_out_like_its_parameter(name, mesh, host_params):
    tx = example.OPTIMIZERS[name]()
    param_sh = example.param_shardings(mesh)
    params = jax.tree.map(example.put, host_params, param_sh)
    shardings = optlib.state_shardings(tx, host_params, param_sh)

    eager = tx.init(params)
    jitted = jax.jit(tx.init, out_shardings=shardings)(params)
    checked = set()
    for (path, leaf), in_place, sharding in zip(
        jax.tree_util.tree_leaves_with_path(eager),
        jax.tree.leaves(jitted),
        jax.tree.leaves(shardings),
        strict=True,
    ):
        where = f"{name} {jax.tree_util.keystr(path)} {leaf.shape}"
        kind, spec = expected_spec(path, leaf)
        checked.add(kind)
        if kind == "scalar":
            assert leaf.sharding.is_fully_replicated, where
        else:
            assert isinstance(leaf.sharding, NamedSharding), f"{where}: {leaf.sharding}"
            assert normalized(leaf.sharding.spec) == normalized(spec), f"{where}: eager"
            assert leaf.sharding.mesh == mesh, where
        assert in_place.sharding.is_equivalent_to(sharding, in_place.ndim), f"{where}: jit"
        np.testing.assert_array_equal(np.asarray(leaf), np.asarray(in_place), err_msg=where)
    assert checked - {"scalar"}, f"{name}: no statistic was checked"


def test_flax_train_state_create_keeps_the_moments_sharded(mesh, host_params):
    """``TrainState.create`` calls ``tx.init(params)`` eagerly: the moments come out sharded
    like the parameters (before, optlib's were on one device)."""
    train_state = pytest.importorskip("flax.training.train_state")
    param_sh = example.param_shardings(mesh)
    params = jax.tree.map(example.put, host_params, param_sh)
    for tx in (optlib.adamw(1e-3), optlib.adagrad(1e-2)):
        state = train_state.TrainState.create(apply_fn=None, params=params, tx=tx)
        statistics = [leaf for leaf in jax.tree.leaves(state.opt_state) if leaf.shape == (8, 16)]
        assert statistics
        for leaf in statistics:
            assert leaf.sharding.is_equivalent_to(param_sh["embed"], 2)


def test_lbfgs_eager_init_replicates_its_flat_history_on_the_parameters_mesh(mesh, host_params):
    """L-BFGS's history is flat (torch concatenates the parameters): eagerly created, it is
    replicated over the parameters' mesh, as ``state_shardings`` lays it out, not put on one
    device."""
    param_sh = example.param_shardings(mesh)
    params = jax.tree.map(example.put, host_params, param_sh)
    tx = optlib.lbfgs(history_size=4)
    state = tx.init(params)["lbfgs"]
    for field in ("d", "old_dirs", "old_stps", "ro", "prev_flat_grad"):
        leaf = getattr(state, field)
        assert isinstance(leaf.sharding, NamedSharding), (field, leaf.sharding)
        assert leaf.sharding.mesh == mesh and leaf.sharding.is_fully_replicated, field
    shardings = optlib.state_shardings(tx, host_params, param_sh)["lbfgs"]
    assert shardings.old_dirs.is_equivalent_to(state.old_dirs.sharding, 2)


def test_jitted_init_without_out_shardings_is_no_worse_than_optax(mesh, host_params):
    """Under ``jit`` without ``out_shardings`` XLA places constants; optlib's moments then
    hold no more bytes per device than optax's."""
    params = jax.tree.map(example.put, host_params, example.param_shardings(mesh))

    def max_bytes_per_device(state):
        per_device: dict = {}
        for leaf in jax.tree.leaves(state):
            for shard in leaf.addressable_shards:
                per_device[shard.device] = per_device.get(shard.device, 0) + shard.data.nbytes
        return max(per_device.values())

    ours = max_bytes_per_device(jax.jit(optlib.adamw(1e-3).init)(params))
    theirs = max_bytes_per_device(jax.jit(optax.adamw(1e-3).init)(params))
    assert ours <= theirs + 64  # optlib's state has one more int32 counter (learning rate)


# ------------------------------------------------------------------------------------ ZeRO-1


@pytest.fixture(scope="module")
def data_mesh():
    """1x8: ``"data"`` over all 8 devices, a ``"model"`` axis of size 1."""
    return Mesh(np.asarray(devices8()).reshape(1, 8), ("model", "data"))


def per_device_bytes(state) -> int:
    per_device: dict = {}
    for leaf in jax.tree.leaves(state):
        for shard in leaf.addressable_shards:
            per_device[shard.device] = per_device.get(shard.device, 0) + shard.data.nbytes
    return max(per_device.values())


def zero1_run(tx, mesh, host_params, batches, shard_state_over):
    replicated = NamedSharding(mesh, P())
    param_sh = jax.tree.map(lambda _: replicated, host_params)
    state_sh = optlib.state_shardings(tx, host_params, param_sh, shard_state_over=shard_state_over)
    params = jax.tree.map(lambda host: jax.device_put(host, replicated), host_params)
    opt_state = jax.jit(tx.init, out_shardings=state_sh)(params)
    initial_bytes = per_device_bytes(opt_state)
    step = jax.jit(
        example.train_step(tx),
        in_shardings=(param_sh, state_sh, replicated, replicated),
        out_shardings=(param_sh, state_sh, replicated),
    )
    for x, y in zip(*batches):
        params, opt_state, _ = step(params, opt_state, x, y)
    for leaf in jax.tree.leaves(params):
        assert leaf.sharding.is_equivalent_to(replicated, leaf.ndim)
    return params, opt_state, initial_bytes, state_sh


@pytest.mark.parametrize("name", sorted(example.OPTIMIZERS))
def test_zero1_keeps_an_eighth_of_the_state_per_device_and_trains_identically(
    name, data_mesh, host_params
):
    tx = example.OPTIMIZERS[name]()
    batches = example.make_batches(ZERO1_STEPS)
    params, state, full_bytes, _ = zero1_run(tx, data_mesh, host_params, batches, None)
    z_params, z_state, zero_bytes, z_sh = zero1_run(tx, data_mesh, host_params, batches, "data")

    # Bytes: every leaf split over "data" holds 1/8 per device; the leaves that cannot be
    # split (scalars, a dimension 8 does not divide) stay whole.
    abstract = jax.eval_shape(tx.init, host_params)
    unsplit = sum(
        leaf.size * leaf.dtype.itemsize
        for leaf, sharding in zip(jax.tree.leaves(abstract), jax.tree.leaves(z_sh))
        if sharding.is_fully_replicated
    )
    total = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(abstract))
    assert full_bytes == total
    assert zero_bytes == (total - unsplit) // 8 + unsplit
    # What stays whole is what cannot be split: scalars, and leaves none of whose dimensions
    # 8 divides (torch Adafactor's column statistic of the (4, 16, 12) experts is (4, 12)).
    for path, leaf, sharding in zip(
        *zip(*jax.tree_util.tree_leaves_with_path(abstract)), jax.tree.leaves(z_sh), strict=True
    ):
        if sharding.is_fully_replicated:
            assert all(size % 8 for size in leaf.shape), (name, jax.tree_util.keystr(path))

    if name in ROUND_OFF_ONLY:
        assert example.max_abs_difference(z_params, params) <= 1e-5
        for ours, reference in zip(jax.tree.leaves(z_state), jax.tree.leaves(state)):
            np.testing.assert_allclose(
                np.asarray(ours), np.asarray(reference), rtol=2e-3, atol=1e-6
            )
    else:
        assert leaves_equal(z_params, params), f"{name}: parameters differ"
        assert leaves_equal(z_state, state), f"{name}: optimizer state differs"


def test_zero1_splits_each_statistic_on_its_largest_free_dimension(data_mesh, host_params):
    replicated = NamedSharding(data_mesh, P())
    shardings = optlib.state_shardings(
        optlib.adam(), host_params, replicated, shard_state_over="data"
    )
    moments = shardings["adam"].exp_avg
    assert moments["embed"].spec == P(None, "data")  # (8, 16): 16 is the larger
    assert moments["bias"].spec == P("data")
    assert moments["experts"].spec == P(None, "data", None)  # (4, 16, 12)
    assert shardings["adam"].count.spec == P()


def test_zero1_keeps_a_parameter_axis_and_adds_data_on_a_free_one(mesh, host_params):
    param_sh = example.param_shardings(mesh, zero1=True)  # P(None, "model") for embed
    shardings = optlib.state_shardings(
        optlib.adam(), host_params, param_sh, shard_state_over="data"
    )
    moments = shardings["adam"].exp_avg
    assert moments["embed"].spec == P("data", "model")
    assert moments["experts"].spec == P(None, "data", "model")
    assert moments["bias"].spec == P("model")  # its only axis is taken: left as it is


def test_zero1_over_an_unknown_axis_is_rejected(mesh, host_params):
    with pytest.raises(ValueError, match="shard_state_over='batch' is not an axis"):
        optlib.state_shardings(
            optlib.adam(), host_params, example.param_shardings(mesh), shard_state_over="batch"
        )


# ------------------------------------------------------------------- param_shardings checks


def test_a_mapping_that_leaves_parameters_out_is_rejected_naming_them(mesh, host_params):
    partial = {"embed": NamedSharding(mesh, P("data", "model"))}
    with pytest.raises(ValueError, match=r"no sharding for parameters \['bias'\], \['experts'\]"):
        optlib.state_shardings(optlib.adam(), host_params, partial)


def test_entries_that_are_no_parameter_are_rejected(mesh, host_params):
    shardings = {**example.param_shardings(mesh), "head": NamedSharding(mesh, P())}
    with pytest.raises(ValueError, match=r"entries that are no parameter: \['head'\]"):
        optlib.state_shardings(optlib.adam(), host_params, shardings)


def test_a_sharding_may_stand_for_a_subtree(mesh, host_params):
    params = {"encoder": {"embed": host_params["embed"]}, "bias": host_params["bias"]}
    given = {"encoder": NamedSharding(mesh, P("data")), "bias": NamedSharding(mesh, P())}
    shardings = optlib.state_shardings(optlib.adam(), params, given)
    assert shardings["adam"].exp_avg["encoder"]["embed"].spec == P("data")
    assert shardings["adam"].exp_avg["bias"].spec == P()


# ------------------------------------------------------------------- restore on another mesh

checkpointing = load_example("checkpointing")

RESTORE_OPTIMIZERS = ("adafactor", "plateau", "adam")
SAVE_AFTER, CONTINUE_FOR = 3, 3


def fitting_shardings(mesh: Mesh) -> dict:
    """The example's parameter specs on ``mesh``, without an axis whose size does not divide
    the dimension (e.g. 12 output features over an 8-device ``"model"`` axis)."""
    shardings = {}
    for name, spec in example.PARAM_SPECS.items():
        shape = example.PARAM_SHAPES[name]
        entries = [
            axis if axis is None or shape[d] % mesh.shape[axis] == 0 else None
            for d, axis in enumerate(tuple(spec) + (None,) * (len(shape) - len(spec)))
        ]
        shardings[name] = NamedSharding(mesh, P(*entries))
    return shardings


def new_layouts():
    devices = np.asarray(devices8())
    meshes = {
        "1x8": Mesh(devices.reshape(1, 8), example.MESH_AXES),
        "8x1": Mesh(devices.reshape(8, 1), example.MESH_AXES),
    }
    layouts = {key: fitting_shardings(m) for key, m in meshes.items()}
    layouts["one device"] = SingleDeviceSharding(devices[0])  # a bare sharding: all params
    return layouts


def continue_training(tx, params, opt_state, param_sh, state_sh, batches):
    def put_batch(x):
        some = next(iter(param_sh.values()))
        if isinstance(some, SingleDeviceSharding):
            return jax.device_put(x, some)
        return jax.device_put(x, NamedSharding(some.mesh, P()))

    step = jax.jit(example.train_step(tx), out_shardings=(param_sh, state_sh, None))
    for x, y in zip(*batches):
        params, opt_state, _ = step(params, opt_state, put_batch(x), put_batch(y))
    return params, opt_state


@pytest.mark.parametrize("name", RESTORE_OPTIMIZERS)
def test_state_saved_on_2x4_restores_onto_other_meshes_and_continues_identically(
    name, mesh, host_params, tmp_path
):
    tx = example.OPTIMIZERS[name]()
    batches = example.make_batches(SAVE_AFTER + CONTINUE_FOR)
    first = tuple(b[:SAVE_AFTER] for b in batches)
    rest = tuple(b[SAVE_AFTER:] for b in batches)
    params, opt_state, _ = example.train_sharded(tx, mesh, host_params, first)
    manager = checkpointing.checkpoint_manager(str(tmp_path), save_every=1)
    checkpointing.save(manager, SAVE_AFTER, params, opt_state)
    manager.wait_until_finished()

    for layout, param_sh in new_layouts().items():
        state_sh = optlib.state_shardings(tx, host_params, param_sh)
        if isinstance(param_sh, SingleDeviceSharding):
            params_sh = {name: param_sh for name in host_params}
        else:
            params_sh = param_sh
        target = checkpointing.abstract_train_state(
            tx, host_params, {"params": params_sh, "opt_state": state_sh}
        )
        step, restored_params, restored_state = checkpointing.restore_latest(manager, target)
        assert step == SAVE_AFTER
        for (path, leaf), sharding, saved in zip(
            jax.tree_util.tree_leaves_with_path(restored_state),
            jax.tree.leaves(state_sh),
            jax.tree.leaves(opt_state),
            strict=True,
        ):
            where = f"{name} on {layout}: {jax.tree_util.keystr(path)}"
            assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim), where
            np.testing.assert_array_equal(np.asarray(leaf), np.asarray(saved), err_msg=where)
        if name == "adafactor" and layout != "one device":
            factored = restored_state["factored_rms"]
            split = [
                leaf
                for leaf in jax.tree.leaves((factored.exp_avg_sq_row, factored.exp_avg_sq_col))
                if not leaf.sharding.is_fully_replicated
            ]
            assert split, f"{layout}: every factored statistic was restored replicated"
        assert leaves_equal(restored_params, params)

        # The uninterrupted run, moved onto the new layout in memory, and the restored run
        # continue on that layout with the same numbers.
        moved_params = jax.device_put(params, params_sh)
        moved_state = jax.device_put(opt_state, state_sh)
        expected = continue_training(tx, moved_params, moved_state, params_sh, state_sh, rest)
        resumed = continue_training(tx, restored_params, restored_state, params_sh, state_sh, rest)
        assert leaves_equal(resumed, expected), f"{name} on {layout}"
    manager.close()
