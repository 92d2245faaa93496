"""Optimizer-state memory of every optimizer, at the full problem sizes in every mode.

The state's shapes come from ``jax.eval_shape(tx.init, params)``, so nothing is allocated and
even ``--quick`` reports the issue's sizes (4096 x 4096 and the ~50M tree).
"""

from __future__ import annotations

import jax
import numpy as np

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


def run(context: Context) -> dict:
    """Returns ``{"problems": {name: description}, "rows": [...], "adafactor_over_adam": {}}``."""
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
    return {"problems": descriptions, "rows": rows, "adafactor_over_adam": ratio}
