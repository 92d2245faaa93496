"""Two processes on localhost (jax.distributed, gloo CPU collectives, 4 devices each) train
on one global 2x4 mesh and finish with the loss of the same training in one process."""

from __future__ import annotations

import jax
import pytest
from examples_loader import load_example

STEPS = 6
OPTIMIZER = "adafactor"  # factored statistics sharded over both mesh axes


def test_two_processes_finish_with_the_single_process_loss():
    if len(jax.devices("cpu")) < 8:
        pytest.fail("needs 8 CPU devices for the single-process run (tests/conftest.py XLA_FLAGS)")
    distributed = load_example("distributed_train")
    sharded = load_example("sharded_train")

    results = distributed.launch(OPTIMIZER, STEPS, timeout=150.0)
    losses = [loss for loss, _ in results]
    assert len(losses) == 2
    assert all("4 local of 8 devices" in stdout for _, stdout in results)
    assert losses[0] == losses[1], "both processes compute the same replicated loss"

    tx = sharded.OPTIMIZERS[OPTIMIZER]()
    _, _, single = sharded.train_sharded(
        tx,
        sharded.make_mesh(jax.devices("cpu")[:8]),
        sharded.init_params(),
        sharded.make_batches(STEPS),
    )
    expected = float(single["loss"][-1])
    assert abs(losses[0] - expected) <= 1e-6 * abs(expected), (losses, expected)


def test_two_processes_with_a_zero1_state_finish_with_the_single_process_loss():
    """``--zero1``: parameters replicated over "data", the optimizer state split over it."""
    if len(jax.devices("cpu")) < 8:
        pytest.fail("needs 8 CPU devices for the single-process run (tests/conftest.py XLA_FLAGS)")
    distributed = load_example("distributed_train")
    sharded = load_example("sharded_train")

    results = distributed.launch(OPTIMIZER, STEPS, timeout=150.0, zero1=True)
    losses = [loss for loss, _ in results]
    assert losses[0] == losses[1]
    assert not any("[Gloo]" in stdout for _, stdout in results), "collectives' chatter shown"

    tx = sharded.OPTIMIZERS[OPTIMIZER]()
    mesh = sharded.make_mesh(jax.devices("cpu")[:8])
    params, state, single = sharded.train_sharded(
        tx, mesh, sharded.init_params(), sharded.make_batches(STEPS), zero1=True
    )
    moments = state["momentum"].ema["embed"]  # adafactor(beta1=0.9): param-shaped average
    assert "data" in tuple(moments.sharding.spec) and "data" not in tuple(
        params["embed"].sharding.spec
    )
    expected = float(single["loss"][-1])
    assert abs(losses[0] - expected) <= 1e-6 * abs(expected), (losses, expected)
