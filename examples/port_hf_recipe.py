"""A Hugging Face Trainer recipe as a Flax training loop, in one call.

The recipe is what a ``transformers.TrainingArguments`` holds (here a plain dict, as saved by
``args.to_dict()`` / ``args.to_json_string()``; transformers is not needed):

    tx = optlib.from_training_args(TRAINING_ARGS, num_training_steps=steps, params=params)

gives the chain Trainer would build: AdamW with Trainer's betas/eps, weight decay on every
parameter except biases and LayerNorm parameters (Trainer's name rule on the Flax paths:
``LayerNorm_0`` matches ``layernorm``), the cosine schedule with 10 % warm-up rounded up as
Trainer rounds it, ``clip_grad_norm_(1.0)`` and 4-step gradient accumulation
(``optax.MultiSteps``: the schedule counts optimizer steps, like Trainer).
``optlib.describe(tx)`` prints it. The model: a small Flax MLP with a LayerNorm, fit to a
generated regression in a few seconds.

Run: ``python examples/port_hf_recipe.py`` (``--epochs 3 --quiet`` for a shorter run).
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

TRAINING_ARGS = {
    "optim": "adamw_torch",
    "learning_rate": 3e-3,
    "weight_decay": 0.01,
    "adam_beta1": 0.9,
    "adam_beta2": 0.98,
    "adam_epsilon": 1e-6,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.1,  # a fraction of the training steps, rounded up
    "max_grad_norm": 1.0,
    "gradient_accumulation_steps": 4,
    "per_device_train_batch_size": 32,
    "num_train_epochs": 8,
}


class MLP(nn.Module):
    hidden: int = 64

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(self.hidden)(x)
        x = nn.gelu(nn.LayerNorm()(x))
        return nn.Dense(1)(x)[..., 0]


def make_data(samples: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(samples, 3)).astype(np.float32)
    y = np.sin(2 * x[:, 0]) * x[:, 1] + 0.5 * x[:, 2] ** 2
    return x, (y + 0.05 * rng.normal(size=samples)).astype(np.float32)


def mse(params, apply_fn, x, y):
    return jnp.mean((apply_fn({"params": params}, x) - y) ** 2)


@jax.jit
def train_epoch(state: train_state.TrainState, xs, ys):
    """A scan over micro-batches; MultiSteps applies an update every 4th one."""

    def step(state, batch):
        loss, grads = jax.value_and_grad(mse)(state.params, state.apply_fn, *batch)
        return state.apply_gradients(grads=grads), loss

    state, losses = jax.lax.scan(step, state, (xs, ys))
    return state, losses.mean()


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=TRAINING_ARGS["num_train_epochs"])
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    x, y = make_data(args.samples)
    batch = TRAINING_ARGS["per_device_train_batch_size"]
    micro_batches = args.samples // batch
    accumulation = TRAINING_ARGS["gradient_accumulation_steps"]
    # Trainer's count: optimizer steps = micro-batches per epoch // accumulation * epochs.
    steps = micro_batches // accumulation * args.epochs

    model = MLP()
    params = model.init(jax.random.key(0), x[:1])["params"]
    tx = optlib.from_training_args(TRAINING_ARGS, num_training_steps=steps, params=params)
    if not args.quiet:
        print(optlib.describe(tx), end="\n\n")
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

    xs = jnp.asarray(x[: micro_batches * batch]).reshape(micro_batches, batch, -1)
    ys = jnp.asarray(y[: micro_batches * batch]).reshape(micro_batches, batch)
    history: dict = {"loss": [], "lr": [], "steps": steps}
    for epoch in range(args.epochs):
        state, loss = train_epoch(state, xs, ys)
        lr = optlib.current_learning_rate(state.opt_state)["decay"]
        history["loss"].append(float(loss))
        history["lr"].append(float(lr))
        if not args.quiet:
            print(f"epoch {epoch + 1}: loss {float(loss):.4f}  lr {float(lr):.2e}")
    history["optimizer_steps"] = int(state.opt_state.gradient_step)
    return history


if __name__ == "__main__":
    main()
