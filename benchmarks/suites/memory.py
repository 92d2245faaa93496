"""Optimizer-state memory of every optimizer, at the full problem sizes in every mode.

The state's shapes come from ``jax.eval_shape(tx.init, params)``, so nothing is allocated and
even ``--quick`` reports the issue's sizes (4096 x 4096 and the ~50M tree).

The sharded table gives the state bytes each device holds on an 8-device ``"data"`` mesh
(an ``AbstractMesh``: no devices needed) for three layouts of the transformer-like tree:
parameters and state replicated; parameters split over the 8 devices (each on its largest
divisible dimension) with the state following them (``optlib.state_shardings``); parameters
replicated and the state split (ZeRO-1, ``shard_state_over="data"``).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AbstractMesh, NamedSharding, PartitionSpec

import optlib
from benchmarks.config import FULL
from benchmarks.context import Context
from benchmarks.problems import transformer_shapes
from benchmarks.timing import tree_nbytes
from benchmarks.twins import TWINS


def _abstract(shapes):
    return jax.tree.map(
        lambda shape: jax.ShapeDtypeStruct(shape, np.float32),
        shapes,
        is_leaf=lambda node: isinstance(node, tuple),
    )


def _full_size_shapes() -> dict[str, tuple[str, object]]:
    """``{problem: (description, abstract params)}`` at the full mode's sizes."""
    tree = _abstract(transformer_shapes(FULL.width, FULL.layers, FULL.vocab, FULL.context))
    leaves = jax.tree.leaves(tree)
    return {
        "matrix": (
            f"one {FULL.matrix}x{FULL.matrix} matrix",
            _abstract({"w": (FULL.matrix, FULL.matrix)}),
        ),
        "tree": (
            f"transformer-like tree, {len(leaves)} leaves, "
            f"{sum(np.prod(leaf.shape) for leaf in leaves) / 1e6:.1f}M params",
            tree,
        ),
    }


SHARDED_DEVICES = 8


def _per_device_bytes(abstract_state, shardings) -> int:
    """Bytes of the state one device holds (every split is even: the largest shard)."""
    return int(
        sum(
            np.prod(sharding.shard_shape(leaf.shape), dtype=np.int64) * leaf.dtype.itemsize
            for leaf, sharding in zip(
                jax.tree.leaves(abstract_state), jax.tree.leaves(shardings), strict=True
            )
        )
    )


def _split_largest(mesh, shape) -> NamedSharding:
    """``"data"`` on the largest dimension it divides (replicated if none does)."""
    divisible = [d for d, size in enumerate(shape) if size % SHARDED_DEVICES == 0]
    spec = [None] * len(shape)
    if divisible:
        spec[max(divisible, key=lambda d: shape[d])] = "data"
    return NamedSharding(mesh, PartitionSpec(*spec))


def _sharded_rows(shapes) -> list[dict]:
    """Per-device state bytes of every optimizer in the three layouts (see the docstring)."""
    mesh = AbstractMesh((SHARDED_DEVICES,), ("data",))
    replicated = NamedSharding(mesh, PartitionSpec())
    split = jax.tree.map(lambda leaf: _split_largest(mesh, leaf.shape), shapes)
    rows = []
    for twin in TWINS:
        tx = twin.optlib()
        state = jax.eval_shape(tx.init, shapes)
        layouts = {
            "replicated": optlib.state_shardings(tx, shapes, replicated),
            "param_sharded": optlib.state_shardings(tx, shapes, split),
            "zero1": optlib.state_shardings(tx, shapes, replicated, shard_state_over="data"),
        }
        row = {"optimizer": twin.name, "devices": SHARDED_DEVICES}
        for layout, shardings in layouts.items():
            row[f"{layout}_bytes"] = _per_device_bytes(state, shardings)
        row["zero1_over_replicated"] = row["zero1_bytes"] / row["replicated_bytes"]
        rows.append(row)
    return rows


def run(context: Context) -> dict:
    """Returns ``{"problems": {name: description}, "rows": [...], "adafactor_over_adam": {},
    "sharded": {"problem": description, "rows": [...]}}``."""
    rows = []
    descriptions = {}
    for name, (description, shapes) in _full_size_shapes().items():
        context.log(f"memory: {description}")
        param_bytes = tree_nbytes(shapes)
        descriptions[name] = description
        for twin in TWINS:
            optlib_bytes = tree_nbytes(jax.eval_shape(twin.optlib().init, shapes))
            optax_bytes = tree_nbytes(jax.eval_shape(twin.optax().init, shapes))
            rows.append(
                {
                    "problem": name,
                    "optimizer": twin.name,
                    "param_bytes": param_bytes,
                    "optlib_state_bytes": optlib_bytes,
                    "optax_state_bytes": optax_bytes,
                    "optlib_state_over_params": optlib_bytes / param_bytes,
                }
            )
    by_key = {(row["problem"], row["optimizer"]): row for row in rows}
    ratio = {
        problem: by_key[(problem, "adafactor")]["optlib_state_bytes"]
        / by_key[(problem, "adam")]["optlib_state_bytes"]
        for problem in descriptions
    }
    context.log(f"memory: per-device state on {SHARDED_DEVICES} devices")
    _, tree = _full_size_shapes()["tree"]
    sharded = {"problem": descriptions["tree"], "rows": _sharded_rows(tree)}
    return {
        "problems": descriptions,
        "rows": rows,
        "adafactor_over_adam": ratio,
        "sharded": sharded,
    }
