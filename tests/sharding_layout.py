"""The sharded-training example and the state layout the sharding tests expect of it.

Shared by ``test_sharding.py`` and ``test_state_sharding.py``: the example module (loaded
once), each parameter's expected partition specs, and which spec a state leaf should have.
"""

from __future__ import annotations

import jax
from examples_loader import load_example
from jax.sharding import PartitionSpec as P

example = load_example("sharded_train")

# Per parameter: the spec of a statistic with its shape, and of Adafactor's row statistics
# (mean over the last axis) and column statistics (mean over the second-to-last axis).
EXPECTED_SPECS = {
    "embed": {"full": P("data", "model"), "row": P("data"), "col": P("model")},
    "experts": {"full": P(None, "data", "model"), "row": P(None, "data"), "col": P(None, "model")},
    "bias": {"full": P("model")},
}


def normalized(spec: P) -> tuple:
    """A spec as a tuple without trailing ``None``s (``P("a", None) == P("a")``)."""
    entries = list(spec)
    while entries and entries[-1] is None:
        entries.pop()
    return tuple(entries)


def expected_spec(path, leaf) -> tuple[str, P]:
    """(kind, spec) the issue asks for: ``full``/``row``/``col`` statistic, or ``scalar``."""
    keys = [getattr(key, "key", getattr(key, "name", None)) for key in path]
    param = keys[-1] if keys and keys[-1] in example.PARAM_SHAPES else None
    if param is not None:
        shape = example.PARAM_SHAPES[param]
        field = keys[-2]
        if leaf.shape == shape:
            return "full", EXPECTED_SPECS[param]["full"]
        if len(shape) >= 2 and field == "exp_avg_sq_row" and leaf.shape == shape[:-1]:
            return "row", EXPECTED_SPECS[param]["row"]
        if len(shape) >= 2 and field == "exp_avg_sq_col" and leaf.shape == shape[:-2] + shape[-1:]:
            return "col", EXPECTED_SPECS[param]["col"]
    assert leaf.ndim == 0 or param is None, (
        f"state leaf {jax.tree_util.keystr(path)} {leaf.shape} belongs to parameter {param} "
        "but is neither full-shape nor a factored statistic"
    )
    return "scalar", P()
