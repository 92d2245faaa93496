"""The benchmark problems: parameters and gradients as numpy trees (float32).

Both problems are plain nested dicts of numpy arrays, so that the JAX and the torch
implementations start from the same numbers: JAX copies them to the device, torch wraps
copies of them as parameters with ``.grad`` set.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass
class Problem:
    """Parameters and gradients of one benchmark problem.

    Attributes:
      name: ``"matrix"``, ``"tree"`` or ``"stack"``.
      description: one line for the tables.
      params: nested dict of float32 numpy arrays.
      grads: the same tree of gradients.
    """

    name: str
    description: str
    params: dict[str, Any]
    grads: dict[str, Any]

    @property
    def leaves(self) -> list[np.ndarray]:
        return tree_leaves(self.params)

    @property
    def num_params(self) -> int:
        return sum(leaf.size for leaf in self.leaves)

    @property
    def num_leaves(self) -> int:
        return len(self.leaves)

    @property
    def nbytes(self) -> int:
        return sum(leaf.nbytes for leaf in self.leaves)


def tree_leaves(tree: Any) -> list[np.ndarray]:
    """Leaves of a nested dict in sorted-key order (``jax.tree.leaves``'s order)."""
    if isinstance(tree, dict):
        return [leaf for key in sorted(tree) for leaf in tree_leaves(tree[key])]
    return [tree]


def _map(fn, tree: Any) -> Any:
    if isinstance(tree, dict):
        return {key: _map(fn, value) for key, value in tree.items()}
    return fn(tree)


def _normal(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    return (scale * rng.standard_normal(shape, np.float32)).astype(np.float32)


def _random_like(tree: Any, rng: np.random.Generator, scale: float) -> Any:
    return _map(lambda a: _normal(rng, a.shape, scale), tree)


def matrix_problem(side: int, seed: int = 0) -> Problem:
    """One ``side x side`` weight matrix (the issue's 4096 x 4096)."""
    rng = np.random.default_rng(seed)
    params = {"w": _normal(rng, (side, side), 0.02)}
    return Problem(
        "matrix",
        f"one {side}x{side} matrix",
        params,
        _random_like(params, rng, 1e-2),
    )


def matrix_stack_problem(count: int, side: int, seed: int = 0) -> Problem:
    """``count`` separate ``side x side`` matrices (Muon's problem: a stack of hidden layers)."""
    rng = np.random.default_rng(seed)
    params = {f"w_{index:02d}": _normal(rng, (side, side), 0.02) for index in range(count)}
    return Problem(
        "stack",
        f"a stack of {count} {side}x{side} matrices",
        params,
        _random_like(params, rng, 1e-2),
    )


def _dense(fan_in: int, fan_out: int) -> dict[str, tuple[int, ...]]:
    return {"kernel": (fan_in, fan_out), "bias": (fan_out,)}


def _layer_norm(width: int) -> dict[str, tuple[int, ...]]:
    return {"scale": (width,), "bias": (width,)}


def transformer_shapes(width: int, layers: int, vocab: int, context: int) -> dict[str, Any]:
    """The shapes of a GPT-like parameter tree: embeddings, ``layers`` blocks, a final norm.

    Each block has a fused QKV projection, an output projection, a 4x MLP (kernels and
    biases) and two layer norms: 12 leaves, ``12 * width**2`` weights. With width 576,
    12 layers, vocab 4096 and context 512: 148 leaves, ~50.5M parameters.

    Returns:
      A nested dict whose leaves are shape tuples.
    """
    tree: dict[str, Any] = {
        "embed": {"tokens": (vocab, width), "positions": (context, width)},
        "final_norm": _layer_norm(width),
    }
    for index in range(layers):
        tree[f"block_{index:02d}"] = {
            "attention": {"qkv": _dense(width, 3 * width), "out": _dense(width, width)},
            "mlp": {"up": _dense(width, 4 * width), "down": _dense(4 * width, width)},
            "norm_1": _layer_norm(width),
            "norm_2": _layer_norm(width),
        }
    return tree


def _initial_value(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """GPT-style initial values: unit norm scales, zero biases, scaled normal weights."""
    if name == "scale":
        return np.ones(shape, np.float32)
    if name == "bias":
        return np.zeros(shape, np.float32)
    if name == "kernel":
        return _normal(rng, shape, 1 / np.sqrt(shape[0]))
    return _normal(rng, shape, 0.02)


def _initialize(shapes: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    return {
        name: _initialize(value, rng)
        if isinstance(value, dict)
        else _initial_value(name, value, rng)
        for name, value in shapes.items()
    }


def tree_problem(width: int, layers: int, vocab: int, context: int, seed: int = 0) -> Problem:
    """The transformer-like tree with random gradients."""
    params = _initialize(
        transformer_shapes(width, layers, vocab, context), np.random.default_rng(seed)
    )
    problem = Problem(
        "tree", "", params, _random_like(params, np.random.default_rng(seed + 1), 1e-2)
    )
    problem.description = (
        f"transformer-like tree, {problem.num_leaves} leaves, "
        f"{problem.num_params / 1e6:.1f}M params (d={width}, {layers} layers)"
    )
    return problem


def leaves_tree(num_leaves: int) -> dict[str, np.ndarray]:
    """``num_leaves`` small leaves for the compile-time suite: 2/3 matrices, 1/3 vectors."""
    return {
        f"leaf_{index:04d}": (
            np.zeros((64,), np.float32) if index % 3 == 2 else np.zeros((32, 64), np.float32)
        )
        for index in range(num_leaves)
    }
