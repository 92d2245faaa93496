"""Flax NNX with a per-step GreedyLR: ``optimizer.update(model, grads, value=loss)``.

``nnx.Optimizer.update`` forwards its keyword arguments to ``tx.update``, so the training loss
of every step drives the scheduler inside the jitted step, with no host round trip: GreedyLR
raises the learning rate while the (smoothed) loss keeps improving and lowers it once the
loss plateaus. ``--scheduler plateau`` uses ReduceLROnPlateau instead.

Run: ``python examples/flax_nnx.py`` (a few seconds), or ``--steps 150`` for a quick look.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import optlib


class MLP(nnx.Module):
    def __init__(self, hidden: int, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(2, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))[..., 0]


def make_batches(steps: int, batch_size: int, seed: int = 0):
    """``steps`` minibatches of ``y = sin(3 x0) + x1^2 + noise``."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(steps, batch_size, 2)).astype(np.float32)
    noise = 0.1 * rng.normal(size=(steps, batch_size))
    y = (np.sin(3 * x[..., 0]) + x[..., 1] ** 2 + noise).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(y)


def make_scheduler(name: str, learning_rate: float) -> optax.GradientTransformationExtraArgs:
    if name == "greedy":
        return optlib.greedy_lr(
            learning_rate,
            patience=10,
            factor=0.9,
            smooth=True,
            window_size=20,
            min_lr=1e-4,
            max_lr=0.05,
            cooldown=5,
            warmup=5,
        )
    return optlib.reduce_lr_on_plateau(learning_rate, patience=100, factor=0.5, min_lr=1e-4)


def loss_fn(model: MLP, x, y):
    return jnp.mean((model(x) - y) ** 2)


@nnx.jit
def train_step(model: MLP, optimizer: nnx.Optimizer, x, y):
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads, value=loss)  # one scheduler step on this loss
    return loss, optlib.current_learning_rate(optimizer.opt_state)


def main(argv: Sequence[str] | None = None) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--scheduler", choices=["greedy", "plateau"], default="greedy")
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    xs, ys = make_batches(args.steps, args.batch_size)
    model = MLP(64, rngs=nnx.Rngs(0))
    # torch: Adam whose lr a metric-driven scheduler steps on every step's loss.
    tx = optlib.adam(learning_rate=make_scheduler(args.scheduler, args.learning_rate))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    # ``cached_partial`` binds model and optimizer once (flax's fast path for training loops).
    step_fn = nnx.cached_partial(train_step, model, optimizer)
    losses, rates = [], []
    for step in range(args.steps):
        loss, rate = step_fn(xs[step], ys[step])
        losses.append(loss)
        rates.append(rate)
        if not args.quiet and (step % args.log_every == 0 or step == args.steps - 1):
            print(f"step {step:5d}  loss {float(loss):.4f}  lr {float(rate):.2e}")
    return {
        "loss": [float(loss) for loss in losses],
        "learning_rate": [float(rate) for rate in rates],
    }


if __name__ == "__main__":
    main()
