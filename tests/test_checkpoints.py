"""Save mid-run, restore, continue: bit-identical to the uninterrupted run.

For every optlib optimizer, both metric-driven schedulers, optimizers driven by registered
schedules (OneCycleLR's momentum cycling included), parameter groups and the second-order
methods: run ``STEPS`` steps, checkpoint after a random step ``k`` with orbax (restored
against ``jax.eval_shape(tx.init, params)``, the recipe of ``examples/checkpointing.py``) and
with ``flax.serialization``, resume from each, and require every parameter and optimizer-state
leaf to equal the uninterrupted run's exactly (same dtype, same bits). One jitted step per
optimizer serves all three runs.
"""

from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from examples_loader import load_example

import optlib

pytest.importorskip("orbax.checkpoint", reason="checkpoint tests need orbax-checkpoint")

STEPS = 12


recipe = load_example("checkpointing")


def one_cycle():
    return optlib.get_scheduler("OneCycleLR", learning_rate=0.1, max_lr=0.1, total_steps=STEPS)


# name -> optimizer factory. Every first-order step passes ``value=loss`` (it steps the
# metric-driven schedulers; the others ignore it).
FIRST_ORDER = {
    "sgd": lambda: optlib.sgd(0.1, momentum=0.9, dampening=0.1, weight_decay=1e-3),
    "sgd_nesterov_one_cycle": lambda: optlib.sgd(one_cycle(), momentum=0.9, nesterov=True),
    "adam_amsgrad": lambda: optlib.adam(1e-2, amsgrad=True, weight_decay=1e-3),
    "adam_one_cycle": lambda: optlib.adam(one_cycle()),
    "adamw_cosine_with_warmup": lambda: optlib.adamw(
        optlib.get_scheduler(
            "cosine", learning_rate=1e-2, num_warmup_steps=3, num_training_steps=STEPS
        )
    ),
    "adagrad": lambda: optlib.adagrad(0.1, lr_decay=1e-2, initial_accumulator_value=0.1),
    "rmsprop_warm_restarts": lambda: optlib.rmsprop(
        optlib.get_scheduler("CosineAnnealingWarmRestarts", learning_rate=1e-2, T_0=4),
        momentum=0.5,
        centered=True,
    ),
    "adadelta": lambda: optlib.adadelta(1.0, weight_decay=1e-3),
    "nadam": lambda: optlib.nadam(2e-3, weight_decay=1e-2, decoupled_weight_decay=True),
    "adafactor_relative_step": lambda: optlib.adafactor(),
    "adafactor_beta1_learning_rate": lambda: optlib.adafactor(
        learning_rate=1e-2, relative_step=False, beta1=0.9, weight_decay=1e-2
    ),
    "reduce_lr_on_plateau": lambda: optlib.adam(
        learning_rate=optlib.reduce_lr_on_plateau(0.05, factor=0.5, patience=1)
    ),
    "greedy_lr": lambda: optlib.sgd(
        learning_rate=optlib.greedy_lr(0.05, patience=1, smooth=True, window_size=3), momentum=0.9
    ),
    "param_groups": lambda: optlib.param_groups(
        {
            "decay": optlib.adamw(1e-2, weight_decay=0.1),
            "no_decay": optlib.adamw(1e-2, weight_decay=0.0),
        },
        optlib.decay_labels,
    ),
    "lion_one_cycle": lambda: optlib.lion(one_cycle(), weight_decay=1e-2),
    "ademamix_warmups": lambda: optlib.ademamix(1e-2, t_alpha=5, t_beta3=5),
    "stable_adamw_decouple_lr": lambda: optlib.stable_adamw(1e-2, decouple_lr=True),
    "radam": lambda: optlib.radam(1e-2, weight_decay=1e-2, decoupled_weight_decay=True),
    "adamax": lambda: optlib.adamax(2e-3, weight_decay=1e-3),
    "rprop_reduce_lr_on_plateau": lambda: optlib.rprop(
        learning_rate=optlib.reduce_lr_on_plateau(1e-3, factor=0.5, patience=1)
    ),
    "asgd": lambda: optlib.asgd(1e-2, t0=2, weight_decay=1e-3),
    "torch_adafactor": lambda: optlib.torch_adafactor(1e-2, weight_decay=1e-2),
    "sgd_swa": lambda: optax.chain(
        optlib.sgd(0.1, momentum=0.9), optlib.average_params(start_step=2, every_n_steps=2)
    ),
    "schedule_free_adamw": lambda: optlib.schedule_free_adamw(
        1e-2, warmup_steps=3, weight_decay=1e-2, r=0.5
    ),
    "schedule_free_sgd": lambda: optlib.schedule_free_sgd(0.1, warmup_steps=2),
    "schedule_free_radam": lambda: optlib.schedule_free_radam(1e-2, weight_decay=1e-2),
    # Muon only takes matrices: Muon on "w", AdamW on "b"; momentum driven by OneCycleLR.
    "muon_one_cycle": lambda: optlib.param_groups(
        {"muon": optlib.muon(one_cycle()), "adamw": optlib.adamw(one_cycle())},
        lambda params: optlib.decay_labels(params, "muon", "adamw"),
    ),
}
SECOND_ORDER = {"newton": optlib.newton, "bfgs": optlib.bfgs}
# Optimizers given the objective whose state keeps no value/gradient for
# optax.value_and_grad_from_state (torch's LBFGS re-evaluates its closure at each step).
CLOSURE = {
    "lbfgs": lambda: optlib.lbfgs(0.5, max_iter=4, history_size=3, line_search_fn="strong_wolfe"),
}
METRIC_DRIVEN = {"reduce_lr_on_plateau", "greedy_lr"}


def init_params():
    rng = np.random.default_rng(0)
    return {
        "w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
        "b": jnp.asarray(rng.normal(size=(4,)), jnp.float32),
    }


def batch(step: int):
    rng = np.random.default_rng(step)
    x = rng.normal(size=(5, 3)).astype(np.float32)
    return x, np.sin(x @ np.ones((3, 4), np.float32))


def loss_fn(params, x, y):
    return jnp.mean((jnp.tanh(x @ params["w"] + params["b"]) - y) ** 2) + 0.01 * jnp.sum(
        params["w"] ** 4
    )


def make_step(name: str):
    """(tx, jitted step(params, opt_state, step_index)) for the optimizer ``name``."""
    if name in SECOND_ORDER or name in CLOSURE:
        tx = SECOND_ORDER[name]() if name in SECOND_ORDER else CLOSURE[name]()
        x, y = batch(0)

        def objective(params):
            return loss_fn(params, x, y)

        def value_and_grad(params, state):
            if name in CLOSURE:
                return jax.value_and_grad(objective)(params)
            return optax.value_and_grad_from_state(objective)(params, state=state)

        def step(params, opt_state, index):
            del index  # the objective is fixed
            value, grad = value_and_grad(params, opt_state)
            updates, opt_state = tx.update(
                grad, opt_state, params, value=value, grad=grad, value_fn=objective
            )
            return optax.apply_updates(params, updates), opt_state

        return tx, jax.jit(step)

    tx = FIRST_ORDER[name]()
    batches = tuple(jnp.asarray(np.stack(part)) for part in zip(*map(batch, range(STEPS))))

    def step(params, opt_state, index):
        x, y = (part[index] for part in batches)
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params, value=loss)
        return optax.apply_updates(params, updates), opt_state

    return tx, jax.jit(step)


def run(step, params, opt_state, start: int, stop: int):
    for index in range(start, stop):
        params, opt_state = step(params, opt_state, jnp.asarray(index, jnp.int32))
    return params, opt_state


def assert_bit_identical(actual, expected, what: str):
    assert jax.tree_util.tree_structure(actual) == jax.tree_util.tree_structure(expected), what
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(actual), jax.tree.leaves(expected)):
        where = f"{what}: {jax.tree_util.keystr(path)}"
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype, f"{where}: dtype {a.dtype} != {b.dtype}"
        np.testing.assert_array_equal(a, b, err_msg=where, strict=True)


@pytest.mark.parametrize("name", [*FIRST_ORDER, *SECOND_ORDER, *CLOSURE])
def test_resumed_run_continues_bit_identically(name, tmp_path):
    tx, step = make_step(name)
    # Everything committed to one device, restored arrays included (orbax commits them): the
    # three runs then share one compiled step.
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    params = jax.device_put(init_params(), device)
    save_at = int(np.random.default_rng(zlib.crc32(name.encode())).integers(2, STEPS - 2))
    abstract = recipe.abstract_train_state(tx, params)
    target = recipe.abstract_train_state(tx, params, jax.tree.map(lambda _: device, abstract))

    mid_params, mid_state = run(step, params, jax.device_put(tx.init(params), device), 0, save_at)
    with recipe.checkpoint_manager(str(tmp_path), save_every=1) as manager:
        assert recipe.save(manager, save_at, mid_params, mid_state)
    data = recipe.to_bytes(mid_params, mid_state)
    final = run(step, mid_params, mid_state, save_at, STEPS)

    with recipe.checkpoint_manager(str(tmp_path), save_every=1) as manager:
        restored_step, *from_orbax = recipe.restore_latest(manager, target)
    from_flax = recipe.from_bytes(data, target)
    assert restored_step == save_at
    for how, restored in (("orbax", from_orbax), ("flax.serialization", from_flax)):
        assert_bit_identical(tuple(restored), (mid_params, mid_state), f"{how} restore")
        resumed = run(step, *restored, save_at, STEPS)
        assert_bit_identical(resumed, final, f"resumed from {how} at step {save_at}")

    assert not np.array_equal(final[0]["w"], params["w"]), "the optimizer did not train"
    if name in METRIC_DRIVEN:
        initial_rate = optlib.current_learning_rate(tx.init(params))
        assert optlib.current_learning_rate(mid_state) != initial_rate or (
            optlib.current_learning_rate(final[1]) != initial_rate
        ), "the scheduler never acted: the test would not cover its counters"


def test_sharded_state_restores_onto_the_mesh(tmp_path):
    """orbax restores each shard in place when the target carries the state shardings."""
    sharded = load_example("sharded_train")
    devices = jax.devices("cpu")
    if len(devices) < 8:
        pytest.fail("needs 8 CPU devices (tests/conftest.py sets XLA_FLAGS)")
    mesh = sharded.make_mesh(devices[:8])
    tx = optlib.adafactor(beta1=0.9)
    host_params = sharded.init_params()
    param_sh = sharded.param_shardings(mesh)
    shardings = {"params": param_sh, "opt_state": optlib.state_shardings(tx, host_params, param_sh)}
    params, opt_state, step, batch_sh = sharded.sharded_setup(tx, mesh, host_params)
    x, y = sharded.make_batches(1)
    params, opt_state, _ = step(
        params, opt_state, sharded.put(x[0], batch_sh[0]), sharded.put(y[0], batch_sh[1])
    )

    with recipe.checkpoint_manager(str(tmp_path), save_every=1) as manager:
        recipe.save(manager, 1, params, opt_state)
    target = recipe.abstract_train_state(tx, host_params, shardings)
    with recipe.checkpoint_manager(str(tmp_path), save_every=1) as manager:
        _, restored_params, restored_state = recipe.restore_latest(manager, target)

    restored = {"params": restored_params, "opt_state": restored_state}
    for leaf, sharding in zip(jax.tree.leaves(restored), jax.tree.leaves(shardings)):
        assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim)
    assert_bit_identical(restored, {"params": params, "opt_state": opt_state}, "sharded restore")
