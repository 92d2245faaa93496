"""Flax Linen ``TrainState`` with an epoch-level ReduceLROnPlateau on the validation loss.

``TrainState.apply_gradients`` calls ``tx.update(grads, opt_state, params)`` and forwards no
extra arguments, so the scheduler is stepped once per epoch with ``optlib.report_metric``:

    state = state.replace(opt_state=optlib.report_metric(state.opt_state, val_loss))

with ``tx = optlib.adam(learning_rate=optlib.reduce_lr_on_plateau(...))``: torch's Adam and
``scheduler.step(val_loss)``, jitted, with the counters in the optimizer state. The data: a
noisy nonlinear regression, generated here, so the validation loss improves, then plateaus at
the noise floor, and the learning rate drops.

Run: ``python examples/flax_trainstate.py`` (a few seconds), or ``--epochs 6 --samples 256``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.training import train_state

import optlib


class MLP(nn.Module):
    hidden: int = 64

    @nn.compact
    def __call__(self, x):
        x = nn.tanh(nn.Dense(self.hidden)(x))
        return nn.Dense(1)(x)[..., 0]


def make_data(samples: int, seed: int = 0):
    """``y = sin(3 x0) + x1^2 + noise``, split 80/20 into train and validation."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(samples, 2)).astype(np.float32)
    y = (np.sin(3 * x[:, 0]) + x[:, 1] ** 2 + 0.1 * rng.normal(size=samples)).astype(np.float32)
    split = int(0.8 * samples)
    return (x[:split], y[:split]), (x[split:], y[split:])


def mse(params, apply_fn, x, y):
    return jnp.mean((apply_fn({"params": params}, x) - y) ** 2)


@jax.jit
def train_epoch(state: train_state.TrainState, xs, ys):
    """One epoch: a scan over the minibatches ``xs[i], ys[i]``; returns the mean loss."""

    def step(state, batch):
        loss, grads = jax.value_and_grad(mse)(state.params, state.apply_fn, *batch)
        return state.apply_gradients(grads=grads), loss

    state, losses = jax.lax.scan(step, state, (xs, ys))
    return state, losses.mean()


@jax.jit
def end_of_epoch(state: train_state.TrainState, x_val, y_val):
    """Validation loss, then ``scheduler.step(val_loss)`` on the optimizer state."""
    val_loss = mse(state.params, state.apply_fn, x_val, y_val)
    state = state.replace(opt_state=optlib.report_metric(state.opt_state, val_loss))
    return state, val_loss


def main(argv: Sequence[str] | None = None) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=3e-2)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    (x_train, y_train), (x_val, y_val) = make_data(args.samples)
    batches = len(x_train) // args.batch_size
    xs = x_train[: batches * args.batch_size].reshape(batches, args.batch_size, -1)
    ys = y_train[: batches * args.batch_size].reshape(batches, args.batch_size)

    model = MLP()
    params = model.init(jax.random.PRNGKey(0), x_train[:1])["params"]
    # torch: Adam(lr) + ReduceLROnPlateau(patience, factor=0.3), stepped on the val loss.
    tx = optlib.adam(
        learning_rate=optlib.reduce_lr_on_plateau(
            args.learning_rate, patience=args.patience, factor=0.3
        )
    )
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

    history: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "learning_rate": []}
    for epoch in range(args.epochs):
        state, train_loss = train_epoch(state, xs, ys)
        state, val_loss = end_of_epoch(state, x_val, y_val)
        rate = optlib.current_learning_rate(state.opt_state)
        history["train_loss"].append(float(train_loss))
        history["val_loss"].append(float(val_loss))
        history["learning_rate"].append(float(rate))
        if not args.quiet:
            print(
                f"epoch {epoch:3d}  train {float(train_loss):.4f}  val {float(val_loss):.4f}  "
                f"lr {float(rate):.2e}"
            )
    return history


if __name__ == "__main__":
    main()
