"""Sharded training on a 2x4 device mesh: the optimizer state is laid out like the parameters.

The parameters are split over both mesh axes (``P("data", "model")`` for a matrix, a 3-D
leaf split on its last two axes), the batch over ``"data"``, and one jitted step runs with
``in_shardings``/``out_shardings``. ``optlib.state_shardings`` gives the state's layout:

    state_sh = optlib.state_shardings(tx, params, param_shardings)
    opt_state = jax.jit(tx.init, out_shardings=state_sh)(params)   # created in place
    step = jax.jit(train_step, in_shardings=(param_sh, state_sh, batch_sh, batch_sh),
                   out_shardings=(param_sh, state_sh, replicated))

* statistics with the parameter's shape (Adam's moments, Adagrad's sum, ...) take the
  parameter's sharding;
* Adafactor's factored statistics keep the parameter's sharding minus the reduced axis (the
  row statistics of a ``P("data", "model")`` matrix are ``P("data")``, its column statistics
  ``P("model")``), never replicated;
* scalars (step counts, learning rates, metric-scheduler counters) are replicated.

On a CPU this fakes 8 devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``, set
below before jax is imported); on a TPU/GPU slice the same code uses the real devices. The
run is compared with the same training on one device.

Run: ``python examples/sharded_train.py`` (a few seconds), ``--optimizer adamw``, ``--steps 50``.
"""

from __future__ import annotations

import os

_DEVICES_FLAG = "--xla_force_host_platform_device_count"
if _DEVICES_FLAG not in os.environ.get("XLA_FLAGS", ""):  # must precede `import jax`
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_DEVICES_FLAG}=8".strip()

import argparse  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import optlib  # noqa: E402

MESH_SHAPE = (2, 4)
MESH_AXES = ("data", "model")
IN_FEATURES, HIDDEN, EXPERTS, OUT_FEATURES = 8, 16, 4, 12

# The model: h = tanh(x @ embed + bias); y_hat[b, k] = h[b] @ experts[k].
PARAM_SHAPES = {
    "embed": (IN_FEATURES, HIDDEN),
    "bias": (HIDDEN,),
    "experts": (EXPERTS, HIDDEN, OUT_FEATURES),
}
PARAM_SPECS = {
    "embed": P("data", "model"),
    "bias": P("model"),
    "experts": P(None, "data", "model"),
}
BATCH_SPECS = (P("data"), P("data"))  # x: (batch, in), y: (batch, experts, out)

# Every optimizer optlib has for a training loop (newton/bfgs take the objective in
# ``update``; see examples/checkpointing.py). ``value=loss`` steps the metric-driven ones.
OPTIMIZERS: dict[str, Callable[[], optax.GradientTransformation]] = {
    "sgd": lambda: optlib.sgd(0.05, momentum=0.9, nesterov=True),
    "adam": lambda: optlib.adam(1e-2, amsgrad=True),
    "adamw": lambda: optlib.adamw(
        optlib.get_scheduler(
            "cosine", learning_rate=1e-2, num_warmup_steps=5, num_training_steps=100
        )
    ),
    "adagrad": lambda: optlib.adagrad(5e-2, lr_decay=1e-3),
    "rmsprop": lambda: optlib.rmsprop(1e-3, momentum=0.5, centered=True),
    "adadelta": lambda: optlib.adadelta(1.0),
    "nadam": lambda: optlib.nadam(1e-2, weight_decay=1e-2),
    "adafactor": lambda: optlib.adafactor(beta1=0.9),
    "plateau": lambda: optlib.adam(learning_rate=optlib.reduce_lr_on_plateau(1e-2, patience=5)),
    "greedy": lambda: optlib.sgd(
        learning_rate=optlib.greedy_lr(5e-2, patience=2, max_lr=0.2), momentum=0.9
    ),
    "lion": lambda: optlib.lion(1e-3, weight_decay=1e-2),
    "ademamix": lambda: optlib.ademamix(1e-2, t_alpha=50, t_beta3=50),
    "stable_adamw": lambda: optlib.stable_adamw(1e-2),
    "radam": lambda: optlib.radam(1e-2, weight_decay=1e-2),
    "adamax": lambda: optlib.adamax(2e-3, weight_decay=1e-3),
    "rprop": lambda: optlib.rprop(1e-3),
    "asgd": lambda: optlib.asgd(1e-2, t0=5),
    "torch_adafactor": lambda: optlib.torch_adafactor(1e-2, weight_decay=1e-2),
    "adam_ema": lambda: optax.chain(optlib.adam(1e-2), optlib.average_params("ema", decay=0.9)),
    "schedule_free_adamw": lambda: optlib.schedule_free_adamw(1e-2, warmup_steps=5),
    "schedule_free_sgd": lambda: optlib.schedule_free_sgd(5e-2, weight_decay=1e-3),
    "schedule_free_radam": lambda: optlib.schedule_free_radam(1e-2),
    # Muon takes only matrices: the 2-D "embed"; AdamW on the bias and the 3-D experts.
    "muon": lambda: optlib.param_groups(
        {"muon": optlib.muon(2e-2), "adamw": optlib.adamw(1e-2)},
        lambda params: jax.tree.map(lambda p: "muon" if p.ndim == 2 else "adamw", params),
    ),
}


def make_mesh(devices: Sequence[Any] | None = None) -> Mesh:
    """A ``("data", "model")`` mesh of shape 2x4 over ``devices`` (default: ``jax.devices()``)."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    return Mesh(devices[: np.prod(MESH_SHAPE)].reshape(MESH_SHAPE), MESH_AXES)


def init_params(seed: int = 0) -> dict[str, np.ndarray]:
    """The parameters as host arrays (the same on every process)."""
    rng = np.random.default_rng(seed)
    return {
        name: (rng.normal(size=shape) / np.sqrt(shape[-2] if len(shape) > 1 else 4.0)).astype(
            np.float32
        )
        for name, shape in PARAM_SHAPES.items()
    }


def make_batches(steps: int, batch_size: int = 16, seed: int = 1):
    """``steps`` batches of a random teacher network's outputs, as host arrays."""
    rng = np.random.default_rng(seed)
    teacher = init_params(seed + 100)
    x = rng.normal(size=(steps, batch_size, IN_FEATURES)).astype(np.float32)
    h = np.tanh(x @ teacher["embed"] + teacher["bias"])
    y = np.einsum("sbh,khc->sbkc", h, teacher["experts"]).astype(np.float32)
    return x, y


def loss_fn(params, x, y):
    h = jnp.tanh(x @ params["embed"] + params["bias"])
    prediction = jnp.einsum("bh,khc->bkc", h, params["experts"])
    return jnp.mean((prediction - y) ** 2)


def train_step(tx: optax.GradientTransformation):
    """The (unjitted) step: gradients, ``tx.update`` with the loss as ``value``, new params.

    Returns ``(params, opt_state, {"loss": loss, "lr": rate})``, ``rate`` being the learning
    rate this step applied (``optlib.current_learning_rate`` of the state it starts from; with
    parameter groups, ``{group: rate}``, the first group's).
    """

    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        rate = optlib.current_learning_rate(opt_state)
        if isinstance(rate, dict) and "embed" in rate:  # Adafactor's per-parameter rates
            rate = rate["embed"]
        rate = jax.tree.leaves(rate)[0]  # parameter groups: the first group's
        updates, opt_state = tx.update(grads, opt_state, params, value=loss)
        return optax.apply_updates(params, updates), opt_state, {"loss": loss, "lr": rate}

    return step


def param_shardings(mesh: Mesh, *, zero1: bool = False) -> dict[str, NamedSharding]:
    """The parameters' shardings; with ``zero1``, replicated over ``"data"`` (data parallel),
    split over ``"model"`` only."""

    def spec(names: P) -> P:
        return P(*(None if axis == "data" else axis for axis in names)) if zero1 else names

    return {name: NamedSharding(mesh, spec(names)) for name, names in PARAM_SPECS.items()}


def put(host: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from a host array that every process holds (works multi-process too)."""
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def sharded_setup(tx: optax.GradientTransformation, mesh: Mesh, host_params, zero1: bool = False):
    """Sharded params, the optimizer state created in place, and the jitted sharded step.

    With ``zero1`` the parameters are replicated over ``"data"`` and the optimizer state is
    split over it (``optlib.state_shardings(..., shard_state_over="data")``, ZeRO-1).
    """
    param_sh = param_shardings(mesh, zero1=zero1)
    state_sh = optlib.state_shardings(
        tx, host_params, param_sh, shard_state_over="data" if zero1 else None
    )
    batch_sh = tuple(NamedSharding(mesh, spec) for spec in BATCH_SPECS)
    replicated = NamedSharding(mesh, P())
    params = jax.tree.map(put, host_params, param_sh)
    opt_state = jax.jit(tx.init, out_shardings=state_sh)(params)
    step = jax.jit(
        train_step(tx),
        in_shardings=(param_sh, state_sh, *batch_sh),
        out_shardings=(param_sh, state_sh, replicated),
    )
    return params, opt_state, step, batch_sh


def host_history(metrics: list[dict[str, jax.Array]]) -> dict[str, np.ndarray]:
    """``{"loss": [...], "lr": [...]}`` as host arrays (one transfer at the end)."""
    return {key: np.asarray([float(m[key]) for m in metrics]) for key in ("loss", "lr")}


def train_sharded(tx, mesh: Mesh, host_params, batches, zero1: bool = False):
    """Trains on the mesh; returns (params, opt_state, {"loss", "lr"} per step)."""
    params, opt_state, step, batch_sh = sharded_setup(tx, mesh, host_params, zero1)
    metrics = []
    for x, y in zip(*batches):
        params, opt_state, m = step(params, opt_state, put(x, batch_sh[0]), put(y, batch_sh[1]))
        metrics.append(m)
    return params, opt_state, host_history(metrics)


def train_single_device(tx, host_params, batches):
    """The same training on one device; returns (params, opt_state, {"loss", "lr"})."""
    step = jax.jit(train_step(tx))
    params = jax.tree.map(jnp.asarray, host_params)
    opt_state = tx.init(params)
    metrics = []
    for x, y in zip(*batches):
        params, opt_state, m = step(params, opt_state, x, y)
        metrics.append(m)
    return params, opt_state, host_history(metrics)


def describe_state_layout(opt_state) -> list[str]:
    """One line per array of the optimizer state: its path, shape and partition spec."""
    lines = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(opt_state):
        spec = leaf.sharding.spec if isinstance(leaf.sharding, NamedSharding) else "?"
        lines.append(f"  {jax.tree_util.keystr(path):58s} {leaf.shape!s:14s} {spec}")
    return lines


def max_abs_difference(a, b) -> float:
    """The largest ``|a - b|`` over the leaves of two trees of the same structure."""
    return max(
        float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)), initial=0.0))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adafactor")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--zero1", action="store_true", help="replicated params, ZeRO-1 state")
    parser.add_argument("--quiet", action="store_true", help="print only the final loss")
    args = parser.parse_args(argv)

    mesh = make_mesh()
    tx = OPTIMIZERS[args.optimizer]()
    host_params, batches = init_params(), make_batches(args.steps)
    params, opt_state, history = train_sharded(tx, mesh, host_params, batches, args.zero1)
    ref_params, _, ref_history = train_single_device(tx, host_params, batches)
    difference = max_abs_difference(params, ref_params)
    if not args.quiet:
        print(
            f"mesh {dict(mesh.shape)} over {mesh.devices.size} {jax.devices()[0].platform} "
            f"devices; optimizer {args.optimizer}; state layout:"
        )
        print("\n".join(describe_state_layout(opt_state)))
        for step in range(0, args.steps, max(1, args.steps // 5)):
            print(f"step {step:4d}  loss {history['loss'][step]:.5f}  lr {history['lr'][step]:.3e}")
        print(f"max |sharded - single-device| over the params: {difference:.2e}")
    print(f"final_loss={float(history['loss'][-1])!r}")
    return {"sharded": history, "single_device": ref_history, "max_param_difference": difference}


if __name__ == "__main__":
    main()
