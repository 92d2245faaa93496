"""Fine-tuning with a frozen backbone, unfrozen mid-training (torch's ``add_param_group``).

torch::

    model.backbone.requires_grad_(False)
    opt = torch.optim.AdamW(model.head.parameters(), lr=1e-2)
    ...                                    # a few epochs: only the head trains
    model.backbone.requires_grad_(True)
    opt.add_param_group({"params": model.backbone.parameters(), "lr": 2e-3})

optlib: parameter groups by label; the frozen group's updates are zero and it keeps no state
(the head's group holds ``optax.MaskedNode`` placeholders, not arrays, for the backbone)::

    tx = optlib.param_groups({"head": optlib.adamw(1e-2), "frozen": optax.set_to_zero()},
                             {"backbone": "frozen", "head": "head"})
    ...
    tx = optlib.param_groups({"head": optlib.adamw(1e-2), "backbone": optlib.adamw(2e-3),
                              "frozen": optax.set_to_zero()},
                             {"backbone": "backbone", "head": "head"})
    opt_state = optlib.carry_over_state(tx, params, opt_state)   # head state kept, backbone fresh

then the step is jitted again for the new ``tx`` (one more compilation, once). The backbone
starts with zero moments and its own step count, the head keeps its moments and
count: exactly torch's per-parameter state (tests/test_unfreeze.py checks it against torch).

Run: ``python examples/unfreeze.py`` (a few seconds).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import optlib


class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
        hidden = nn.tanh(nn.Dense(32, name="backbone")(x))
        return nn.Dense(1, name="head")(hidden)[..., 0]


def make_data(samples: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(samples, 4)).astype(np.float32)
    y = (np.sin(3 * x[:, 0]) * np.cos(2 * x[:, 1]) + x[:, 2] * x[:, 3]).astype(np.float32)
    return x, y


def optimizer(frozen: bool, head_lr: float, backbone_lr: float) -> optax.GradientTransformation:
    """AdamW on the head, and on the backbone too unless it is frozen."""
    groups = {"head": optlib.adamw(head_lr), "frozen": optax.set_to_zero()}
    if not frozen:
        groups["backbone"] = optlib.adamw(backbone_lr)
    labels = {"backbone": "frozen" if frozen else "backbone", "head": "head"}
    return optlib.param_groups(groups, labels)


def make_epoch(model: Model, tx: optax.GradientTransformation):
    """A jitted epoch: a scan of optimizer steps over the minibatches; returns the mean loss."""

    def loss_fn(params, x, y):
        return jnp.mean((model.apply({"params": params}, x) - y) ** 2)

    @jax.jit
    def epoch(params, opt_state, xs, ys):
        def step(carry, batch):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), (xs, ys))
        return params, opt_state, losses.mean()

    return epoch


def state_size(opt_state: Any) -> int:
    """How many numbers the optimizer state holds (frozen parameters add none)."""
    return sum(int(np.size(leaf)) for leaf in jax.tree.leaves(opt_state))


def format_rates(opt_state) -> str:
    rates = optlib.current_learning_rate(opt_state)  # {group: rate} for parameter groups
    return " ".join(f"lr[{group}] {float(rate):.1e}" for group, rate in sorted(rates.items()))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--unfreeze-at", type=int, default=10, help="epoch that unfreezes")
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--head-lr", type=float, default=1e-2)
    parser.add_argument("--backbone-lr", type=float, default=2e-3)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    x, y = make_data(args.samples)
    batches = len(x) // args.batch_size
    xs = x[: batches * args.batch_size].reshape(batches, args.batch_size, -1)
    ys = y[: batches * args.batch_size].reshape(batches, args.batch_size)
    model = Model()
    params = model.init(jax.random.PRNGKey(0), x[:1])["params"]
    initial_backbone = params["backbone"]

    tx = optimizer(frozen=True, head_lr=args.head_lr, backbone_lr=args.backbone_lr)
    opt_state = tx.init(params)
    epoch_fn = make_epoch(model, tx)
    history: dict[str, Any] = {"loss": [], "state_size": [state_size(opt_state)]}
    for epoch in range(args.epochs):
        if epoch == args.unfreeze_at:
            history["backbone_unchanged_while_frozen"] = all(
                bool(jnp.array_equal(a, b))
                for a, b in zip(
                    jax.tree.leaves(params["backbone"]), jax.tree.leaves(initial_backbone)
                )
            )
            tx = optimizer(frozen=False, head_lr=args.head_lr, backbone_lr=args.backbone_lr)
            opt_state = optlib.carry_over_state(tx, params, opt_state)
            epoch_fn = make_epoch(model, tx)
            history["state_size"].append(state_size(opt_state))
            if not args.quiet:
                print(
                    f"epoch {epoch:3d}  unfreezing the backbone: optimizer state "
                    f"{history['state_size'][0]} -> {history['state_size'][1]} numbers"
                )
        params, opt_state, loss = epoch_fn(params, opt_state, xs, ys)
        history["loss"].append(float(loss))
        if not args.quiet:
            print(f"epoch {epoch:3d}  loss {float(loss):.4f}  {format_rates(opt_state)}")
    return history


if __name__ == "__main__":
    main()
