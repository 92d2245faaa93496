"""Checkpoint and resume mid-run: the resumed run continues bit-identically.

Every optlib optimizer keeps all it needs in its state (step counts, moments, the learning
rate, a metric-driven scheduler's counters and hyperparameters), and the state is a plain
pytree of arrays, so a checkpoint is just ``{"params": ..., "opt_state": ...}``:

    # save (orbax): every `save_every` steps, keeping the last two
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
        max_to_keep=2, save_interval_steps=save_every))
    manager.save(step, args=ocp.args.StandardSave({"params": params, "opt_state": opt_state}))

    # restore: the target is the abstract state, no arrays are allocated twice
    target = {"params": jax.eval_shape(lambda: params),
              "opt_state": jax.eval_shape(tx.init, params)}
    restored = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(target))

    # or in memory / one file: flax.serialization
    data = flax.serialization.to_bytes({"params": params, "opt_state": opt_state})
    restored = flax.serialization.from_bytes(target, data)

On a mesh, give the target leaves their shardings
(``jax.ShapeDtypeStruct(shape, dtype, sharding=...)`` with ``optlib.state_shardings``) and orbax
restores every shard in place. The data pipeline must resume at the same step too (here the
batch of step ``i`` is a function of ``i``). The tree structure (including static flags such as
GreedyLR's ``verbose``) comes from the target, i.e. from ``tx``: resume with the optimizer the
checkpoint was written with.

This script trains with AdamW driven by ReduceLROnPlateau, checkpoints every 10 steps,
"crashes" at step 25, restarts from the latest checkpoint (step 20), and checks that the final
parameters and optimizer state equal those of an uninterrupted run, bit for bit; then does
the same with ``flax.serialization``.

Run: ``python examples/checkpointing.py`` (a few seconds); ``--directory DIR`` keeps the files.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

import optlib

# ----------------------------------------------------------------------------- the recipe


def abstract_train_state(tx: optax.GradientTransformation, params: Any, shardings: Any = None):
    """The restore target: shapes and dtypes of ``{"params", "opt_state"}``, no arrays.

    Args:
      tx: the optimizer the checkpoint was written with.
      params: the parameters (or their ``jax.ShapeDtypeStruct``s).
      shardings: optional ``{"params": ..., "opt_state": ...}`` pytrees of shardings (e.g.
        ``optlib.state_shardings(tx, params, param_shardings)``) to restore onto a mesh.
    """
    target = {
        "params": jax.eval_shape(lambda tree: tree, params),
        "opt_state": jax.eval_shape(tx.init, params),
    }
    if shardings is not None:
        target = jax.tree.map(
            lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
            target,
            shardings,
        )
    return target


def checkpoint_manager(directory: str, save_every: int) -> ocp.CheckpointManager:
    """An orbax manager that keeps the last two checkpoints, one every ``save_every`` steps."""
    return ocp.CheckpointManager(
        directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=2, save_interval_steps=save_every),
    )


def save(manager: ocp.CheckpointManager, step: int, params: Any, opt_state: Any) -> bool:
    """Saves ``{"params", "opt_state"}`` after ``step`` completed steps (if the step is due)."""
    return manager.save(
        step, args=ocp.args.StandardSave({"params": params, "opt_state": opt_state})
    )


def restore_latest(manager: ocp.CheckpointManager, target: Any) -> tuple[int, Any, Any]:
    """``(step, params, opt_state)`` of the latest checkpoint, restored against ``target``."""
    step = manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {manager.directory}")
    restored = manager.restore(step, args=ocp.args.StandardRestore(target))
    return step, restored["params"], restored["opt_state"]


def to_bytes(params: Any, opt_state: Any) -> bytes:
    """``{"params", "opt_state"}`` as msgpack bytes (``flax.serialization``)."""
    return flax.serialization.to_bytes({"params": params, "opt_state": opt_state})


def from_bytes(data: bytes, target: Any) -> tuple[Any, Any]:
    """``(params, opt_state)`` from ``to_bytes`` output, with the structure of ``target``.

    msgpack gives host arrays; each goes to its target leaf's sharding if it has one (as
    orbax does), else becomes a default-device array.
    """
    restored = flax.serialization.from_bytes(target, data)
    restored = jax.tree.map(
        lambda leaf, like: (
            jax.device_put(leaf, like.sharding)
            if getattr(like, "sharding", None) is not None
            else jnp.asarray(leaf)
        ),
        restored,
        target,
    )
    return restored["params"], restored["opt_state"]


# ------------------------------------------------------------------------ a training run


def init_params(seed: int = 0) -> dict[str, jax.Array]:
    rng = np.random.default_rng(seed)
    return {
        "hidden": jnp.asarray(rng.normal(size=(3, 16)) / np.sqrt(3), jnp.float32),
        "bias": jnp.zeros(16, jnp.float32),
        "out": jnp.asarray(rng.normal(size=(16,)) / 4, jnp.float32),
    }


def batch(step: int, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """The batch of step ``step`` (a function of the step, so resuming needs nothing else)."""
    rng = np.random.default_rng(1000 + step)
    x = rng.uniform(-1, 1, size=(batch_size, 3)).astype(np.float32)
    y = (np.sin(2 * x[:, 0]) * x[:, 1] + 0.5 * x[:, 2] ** 2).astype(np.float32)
    return x, y


def loss_fn(params, x, y):
    prediction = jnp.tanh(x @ params["hidden"] + params["bias"]) @ params["out"]
    return jnp.mean((prediction - y) ** 2)


def make_step(tx: optax.GradientTransformation) -> Callable:
    """The jitted step; ``value=loss`` steps the metric-driven scheduler."""

    @jax.jit
    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params, value=loss)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def run(step_fn, params, opt_state, start: int, stop: int, on_step=None, log_every: int = 0):
    """Steps ``start..stop-1``; ``on_step(completed_steps, params, opt_state)`` after each."""
    for index in range(start, stop):
        params, opt_state, loss = step_fn(params, opt_state, *batch(index))
        if on_step is not None:
            on_step(index + 1, params, opt_state)
        if log_every and (index + 1) % log_every == 0:
            rate = optlib.current_learning_rate(opt_state)
            print(f"step {index + 1:4d}  loss {float(loss):.4f}  lr {float(rate):.2e}")
    return params, opt_state


def bit_identical(a: Any, b: Any) -> bool:
    """Same tree structure, and every leaf equal in dtype, shape and bits."""
    if jax.tree_util.tree_structure(a) != jax.tree_util.tree_structure(b):
        return False
    return all(
        np.asarray(x).dtype == np.asarray(y).dtype
        and np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def main(argv: Sequence[str] | None = None) -> dict[str, bool]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--save-every", type=int, default=10)
    parser.add_argument("--crash-at", type=int, default=25)
    parser.add_argument("--directory", default=None, help="checkpoint directory (default: temp)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    log_every = 0 if args.quiet else args.save_every

    tx = optlib.adamw(
        learning_rate=optlib.reduce_lr_on_plateau(1e-2, factor=0.5, patience=5), weight_decay=1e-3
    )
    step_fn = make_step(tx)  # compiled once, shared by all the runs below
    params = init_params()
    target = abstract_train_state(tx, params)

    with tempfile.TemporaryDirectory() as scratch:
        directory = args.directory or scratch
        # 1. The run that "crashes": checkpoints every `save_every` steps, stops at crash_at.
        with checkpoint_manager(directory, args.save_every) as manager:
            run(
                step_fn,
                params,
                tx.init(params),
                0,
                args.crash_at,
                on_step=lambda step, p, s: save(manager, step, p, s),
                log_every=log_every,
            )
        # 2. A fresh process would start here: restore the latest checkpoint and go on.
        with checkpoint_manager(directory, args.save_every) as manager:
            start, resumed_params, resumed_state = restore_latest(manager, target)
        if not args.quiet:
            print(f"restored step {start} from {directory}; resuming")
        resumed = run(
            step_fn, resumed_params, resumed_state, start, args.steps, log_every=log_every
        )

    # 3. The uninterrupted run, keeping the same step in memory as bytes.
    saved = {}

    def keep_bytes(step, params, opt_state):
        if step == start:
            saved["data"] = to_bytes(params, opt_state)

    uninterrupted = run(step_fn, params, tx.init(params), 0, args.steps, on_step=keep_bytes)
    from_memory = run(step_fn, *from_bytes(saved["data"], target), start, args.steps)

    result = {
        "orbax": bit_identical(resumed, uninterrupted),
        "flax.serialization": bit_identical(from_memory, uninterrupted),
    }
    if not args.quiet:
        for how, same in result.items():
            print(
                f"resumed with {how}: params and optimizer state bit-identical to the "
                f"uninterrupted run: {same}"
            )
    return result


if __name__ == "__main__":
    main()
