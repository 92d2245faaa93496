"""Resume a PyTorch training run in JAX, and hand it back: optimizer and scheduler state.

A torch MLP trains for a while with AdamW (weights decayed, biases not: two param groups)
and a OneCycleLR schedule, and saves ``optimizer.state_dict()`` / ``scheduler.state_dict()``
with ``torch.save``. The JAX side builds the Flax twin of the model, converts the weights
(a torch ``Linear.weight`` is (out, in), a Flax ``Dense`` kernel (in, out)) and loads the
optimizer state into the optlib twin of the optimizer::

    schedule = optlib.one_cycle_lr(max_lr=..., total_steps=...)       # torch's scheduler
    tx = optlib.param_groups({"decay": optlib.adamw(schedule, weight_decay=wd),
                              "no_decay": optlib.adamw(schedule, weight_decay=0.0)},
                             optlib.decay_labels)
    opt_state = optlib.from_torch_state_dict(
        tx, params, saved["optimizer"], saved["scheduler"],
        param_paths=["params/Dense_0/kernel", ...],       # torch's parameter order
        layouts={"params/Dense_0/kernel": "transpose", ...})

Adam's moments, the step counts, the scheduler's position (and the momentum OneCycleLR
cycles) continue where torch stopped: the next JAX steps equal the steps torch would have
taken, to float64 rounding. ``optlib.to_torch_state_dict`` goes the other way. For a Hugging
Face ``Trainer`` checkpoint folder use ``optlib.load_hf_trainer_checkpoint``.

Run: ``python examples/resume_torch_checkpoint.py`` (a few seconds).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

import optlib

MAX_LR, WEIGHT_DECAY = 0.05, 0.01
# torch name -> Flax path; the torch optimizer's order is the decayed weights, then the biases
TORCH_TO_FLAX = {
    "0.weight": "params/Dense_0/kernel",
    "2.weight": "params/Dense_1/kernel",
    "0.bias": "params/Dense_0/bias",
    "2.bias": "params/Dense_1/bias",
}
LAYOUTS = {path: "transpose" for path in TORCH_TO_FLAX.values() if path.endswith("kernel")}


class MLP(nn.Module):
    """The Flax twin of ``Sequential(Linear(4, 16), Tanh(), Linear(16, 1))``."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(1, name="Dense_1")(jnp.tanh(nn.Dense(16, name="Dense_0")(x)))


def batches(steps: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The same generated batch of step ``i`` for torch and JAX."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(4, 1))
    data = []
    for _ in range(steps):
        x = rng.normal(size=(32, 4))
        data.append((x, np.sin(x @ w)))
    return data


def torch_setup(total_steps: int):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    model = model.double()
    named = dict(model.named_parameters())
    optimizer = torch.optim.AdamW(
        [
            {"params": [named["0.weight"], named["2.weight"]], "weight_decay": WEIGHT_DECAY},
            {"params": [named["0.bias"], named["2.bias"]], "weight_decay": 0.0},
        ],
        lr=MAX_LR,
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=MAX_LR, total_steps=total_steps
    )
    return model, optimizer, scheduler


def torch_steps(model, optimizer, scheduler, data) -> None:
    for x, y in data:
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(torch.tensor(x)), torch.tensor(y))
        loss.backward()
        optimizer.step()
        scheduler.step()


def flax_params(model) -> dict:
    """torch weights -> the Flax tree (kernels transposed)."""
    tree: dict = {"params": {}}
    for name, value in model.state_dict().items():
        _, layer, leaf = TORCH_TO_FLAX[name].split("/")
        array = value.numpy().T if leaf == "kernel" else value.numpy()
        tree["params"].setdefault(layer, {})[leaf] = jnp.asarray(array)
    return tree


def torch_params(params: dict) -> dict:
    """The Flax tree -> torch names (kernels transposed back)."""
    out = {}
    for name, path in TORCH_TO_FLAX.items():
        _, layer, leaf = path.split("/")
        array = np.asarray(params["params"][layer][leaf])
        out[name] = array.T if leaf == "kernel" else array
    return out


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-steps", type=int, default=20, help="steps before the switch")
    parser.add_argument("--jax-steps", type=int, default=20, help="steps after it")
    parser.add_argument("--directory", type=Path, default=None, help="keep the files here")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)  # float64 on both sides: equal to rounding
    total = args.torch_steps + args.jax_steps
    data = batches(total)
    directory = args.directory or Path(tempfile.mkdtemp(prefix="optlib_resume_"))
    directory.mkdir(parents=True, exist_ok=True)

    # 1. torch trains and checkpoints
    model, optimizer, scheduler = torch_setup(total)
    torch_steps(model, optimizer, scheduler, data[: args.torch_steps])
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
        directory / "checkpoint.pt",
    )
    params = flax_params(model)
    torch_steps(model, optimizer, scheduler, data[args.torch_steps :])  # the reference
    reference = {n: p.detach().numpy() for n, p in model.named_parameters()}

    # 2. JAX resumes from the checkpoint
    saved = torch.load(directory / "checkpoint.pt", weights_only=True)
    schedule = optlib.one_cycle_lr(max_lr=MAX_LR, total_steps=total)
    tx = optlib.param_groups(
        {
            "decay": optlib.adamw(schedule, weight_decay=WEIGHT_DECAY),
            "no_decay": optlib.adamw(schedule, weight_decay=0.0),
        },
        optlib.decay_labels,
    )
    opt_state = optlib.from_torch_state_dict(
        tx,
        params,
        saved["optimizer"],
        saved["scheduler"],
        param_paths=list(TORCH_TO_FLAX.values()),
        layouts=LAYOUTS,
    )
    net = MLP()

    @jax.jit
    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean((net.apply(p, x) - y) ** 2))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    for i, (x, y) in enumerate(data[args.torch_steps :], start=args.torch_steps):
        lr = optlib.current_learning_rate(opt_state)["decay"]
        params, opt_state, loss = step(params, opt_state, x, y)
        if i % 5 == 0:
            print(f"step {i:3d}  loss {float(loss):.6f}  lr {float(lr):.6f}")
    ours = torch_params(params)
    difference = max(
        float(np.max(np.abs(ours[n] - reference[n]) / np.max(np.abs(reference[n]))))
        for n in reference
    )
    print(f"JAX resumed vs torch uninterrupted, max relative difference: {difference:.2e}")

    # 3. and back to torch: a fresh optimizer + scheduler continue from the JAX state
    back = optlib.to_torch_state_dict(
        tx,
        opt_state,
        params,
        param_paths=list(TORCH_TO_FLAX.values()),
        layouts=LAYOUTS,
        param_groups=saved["optimizer"]["param_groups"],
        scheduler_state_dict=saved["scheduler"],
    )
    model, optimizer, scheduler = torch_setup(total)
    optimizer.load_state_dict(back.optimizer)
    scheduler.load_state_dict(back.scheduler)
    print(
        f"back in torch: step {int(optimizer.state_dict()['state'][0]['step'])}, "
        f"scheduler last_epoch {scheduler.last_epoch}"
    )
    return {"difference": difference, "optimizer": back.optimizer, "scheduler": back.scheduler}


if __name__ == "__main__":
    main()
