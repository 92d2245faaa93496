"""optlib quickstart: a Flax classifier trained with torch's AdamW, warm-up and ReduceLROnPlateau.

The torch recipe::

    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-4)
    warmup = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=warmup_steps)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=3)
    for epoch in ...:
        for batch in ...: loss.backward(); opt.step(); warmup.step()
        plateau.step(val_loss)

and its optlib twin, one optax chain that runs inside ``jit``::

    tx = optax.chain(
        optlib.adamw(learning_rate=optlib.reduce_lr_on_plateau(1e-2, factor=0.5, patience=3),
                     weight_decay=1e-4),
        optlib.scale_by_learning_rate(optlib.linear_lr(1.0, start_factor=0.1,
                                                       total_iters=warmup_steps),
                                      flip_sign=False),          # x the warm-up factor
    )
    state = state.replace(opt_state=optlib.report_metric(state.opt_state, val_loss))  # per epoch
    optlib.current_learning_rate(state.opt_state)    # warm-up factor x plateau rate

The data (three interleaved spirals) is generated here; no download. Writes a PNG of the
learning rate and the losses (``-o``, default ``quickstart.png``). Each epoch's log line shows
the rate that epoch trained with (``first..last`` while the warm-up is still rising); the
rate ``ReduceLROnPlateau`` sets at the end of an epoch shows on the next epoch's line.

Run: ``python examples/quickstart.py`` (about 10 s on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from tqdm.auto import tqdm

import optlib

CLASSES = 3


def make_spirals(samples: int, noise: float = 0.1, seed: int = 0):
    """``samples`` points on three interleaved spirals, labelled by spiral; 80/20 split."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, size=samples)
    radius = rng.uniform(0.1, 1.0, size=samples)
    angle = 3.0 * np.pi * radius + 2.0 * np.pi * labels / CLASSES
    points = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    points += noise * radius[:, None] * rng.normal(size=points.shape)
    points, labels = points.astype(np.float32), labels.astype(np.int32)
    split = int(0.8 * samples)
    return (points[:split], labels[:split]), (points[split:], labels[split:])


class Classifier(nn.Module):
    hidden: int = 64

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(self.hidden)(x))
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(CLASSES)(x)


def make_optimizer(learning_rate: float, warmup_steps: int, patience: int):
    """AdamW x (torch LinearLR warm-up per step) x (ReduceLROnPlateau on the val loss)."""
    plateau = optlib.reduce_lr_on_plateau(learning_rate, factor=0.5, patience=patience)
    warmup = optlib.linear_lr(1.0, start_factor=0.1, total_iters=warmup_steps)
    return optax.chain(
        optlib.adamw(learning_rate=plateau, weight_decay=1e-4),
        optlib.scale_by_learning_rate(warmup, flip_sign=False),
    )


def cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@functools.partial(jax.jit, static_argnames="batch_size")
def train_epoch(state: train_state.TrainState, key, x, y, batch_size: int):
    """One epoch over shuffled minibatches (a ``lax.scan``); per-step losses and rates."""
    batches = x.shape[0] // batch_size
    order = jax.random.permutation(key, x.shape[0])[: batches * batch_size]
    xs = x[order].reshape(batches, batch_size, -1)
    ys = y[order].reshape(batches, batch_size)

    def step(state, batch):
        def loss_fn(params):
            return cross_entropy(state.apply_fn({"params": params}, batch[0]), batch[1])

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        rate = optlib.current_learning_rate(state.opt_state)  # the rate this step applies
        return state.apply_gradients(grads=grads), (loss, rate)

    return jax.lax.scan(step, state, (xs, ys))


@jax.jit
def end_of_epoch(state: train_state.TrainState, x_val, y_val):
    """Validation loss and accuracy, then ``scheduler.step(val_loss)``."""
    logits = state.apply_fn({"params": state.params}, x_val)
    val_loss = cross_entropy(logits, y_val)
    accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == y_val)
    state = state.replace(opt_state=optlib.report_metric(state.opt_state, val_loss))
    return state, val_loss, accuracy


def _scientific(value: float, _position: int) -> str:
    """A tick label like ``5e-3`` (mantissa and exponent, no padding)."""
    exponent = int(np.floor(np.log10(value) + 1e-9))
    return f"{value / 10.0**exponent:g}e{exponent}"


def _rate_text(rates: np.ndarray) -> str:
    """The epoch's rate, ``first..last`` when it changed within the epoch (warm-up)."""
    first, last = float(rates[0]), float(rates[-1])
    return f"{first:.2e}" if np.isclose(first, last, rtol=1e-6) else f"{first:.2e}..{last:.2e}"


def plot(history: dict[str, Any], steps_per_epoch: int, path: pathlib.Path) -> None:
    """Learning rate per step above, training (per step) and validation losses below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    steps = np.arange(len(history["step_lr"]))
    top.plot(steps, history["step_lr"], color="tab:blue")
    top.set_ylabel("learning rate")
    top.set_yscale("log")
    top.yaxis.set_major_locator(ticker.LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
    top.yaxis.set_major_formatter(ticker.FuncFormatter(_scientific))
    top.yaxis.set_minor_formatter(ticker.NullFormatter())
    top.grid(True, which="major", alpha=0.3)
    top.set_title("optlib quickstart: AdamW, linear warm-up, ReduceLROnPlateau")
    bottom.plot(
        steps,
        history["step_loss"],
        color="tab:gray",
        alpha=0.5,
        lw=0.8,
        label="train loss (per step)",
    )
    epoch_ends = steps_per_epoch * (np.arange(len(history["val_loss"])) + 1) - 1
    bottom.plot(
        epoch_ends,
        history["val_loss"],
        "o-",
        color="tab:red",
        ms=3,
        label="validation loss (per epoch)",
    )
    bottom.set_yscale("log")
    bottom.set_xlabel("step")
    bottom.set_ylabel("cross-entropy")
    bottom.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--warmup-epochs", type=float, default=2.0)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("-o", "--output", default="quickstart.png", help="PNG of the curves")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    args = parser.parse_args(argv)
    start = time.perf_counter()

    (x_train, y_train), (x_val, y_val) = make_spirals(args.samples)
    steps_per_epoch = len(x_train) // args.batch_size
    warmup_steps = max(1, int(args.warmup_epochs * steps_per_epoch))
    model = Classifier()
    params = model.init(jax.random.PRNGKey(0), x_train[:1])["params"]
    tx = make_optimizer(args.learning_rate, warmup_steps, args.patience)
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

    history: dict[str, list] = {
        "step_loss": [],
        "step_lr": [],
        "val_loss": [],
        "val_accuracy": [],
        "lr": [],
    }
    key = jax.random.PRNGKey(1)
    bar = tqdm(range(args.epochs), desc="training", unit="epoch", disable=args.quiet)
    for epoch in bar:
        key, shuffle = jax.random.split(key)
        state, (losses, rates) = train_epoch(state, shuffle, x_train, y_train, args.batch_size)
        # the rates this epoch's updates applied; the plateau step below changes the next's
        rates = np.asarray(rates)
        state, val_loss, accuracy = end_of_epoch(state, x_val, y_val)
        history["step_loss"].extend(np.asarray(losses).tolist())
        history["step_lr"].extend(rates.tolist())
        history["val_loss"].append(float(val_loss))
        history["val_accuracy"].append(float(accuracy))
        history["lr"].append(float(rates[-1]))  # the rate of the epoch's last update
        bar.set_postfix(
            loss=f"{float(val_loss):.3f}", acc=f"{float(accuracy):.3f}", lr=f"{rates[-1]:.1e}"
        )
        if not args.quiet:
            tqdm.write(
                f"epoch {epoch + 1:3d}  train loss {float(np.mean(losses)):.4f}  "
                f"val loss {float(val_loss):.4f}  val acc {float(accuracy):.3f}  "
                f"lr {_rate_text(rates)}"
            )

    output = pathlib.Path(args.output)
    plot(history, steps_per_epoch, output)
    history["seconds"] = time.perf_counter() - start
    if not args.quiet:
        print(
            f"final validation accuracy {history['val_accuracy'][-1]:.3f}; wrote {output} "
            f"({history['seconds']:.1f} s)"
        )
    return history


if __name__ == "__main__":
    main()
