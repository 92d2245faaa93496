"""The reference-parity harness: run torch / transformers and optlib on the same inputs.

A schedule's reference trace is what a torch training loop sees: ``lrs[k]`` is the learning
rate in the optimizer's param group after ``k`` calls of ``scheduler.step()`` (the rate the
``k``-th update uses; shared/API.md "Step indexing"). optlib's trace is the schedule
evaluated at ``0..n-1`` in one jitted, vmapped call, so each configuration compiles once.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="parity tests need the reference: pip install -e '.[test]' (torch==2.13.0)"
)

# Tolerances of the "Done when": |ours - ref| <= RTOL*|ref| + ATOL_PEAK*peak.
RTOL_F32 = 2e-5
ATOL_PEAK_F32 = 1e-6
RTOL_F64 = 1e-12


def make_torch_optimizer(
    learning_rate: float, optimizer_cls: Any = None, **optimizer_kwargs: Any
) -> Any:
    """A torch optimizer over one dummy parameter, for driving a scheduler."""
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    optimizer_cls = optimizer_cls or torch.optim.SGD
    return optimizer_cls([param], lr=learning_rate, **optimizer_kwargs)


def torch_trace(
    make_scheduler: Callable[[Any], Any],
    learning_rate: float,
    steps: int,
    *,
    optimizer_cls: Any = None,
    key: str = "lr",
    **optimizer_kwargs: Any,
) -> np.ndarray:
    """``[group[key] after k scheduler steps for k in range(steps)]`` from a real torch loop.

    ``key`` may be ``"lr"``, ``"momentum"`` or ``"beta1"`` (``betas[0]``).
    """
    optimizer = make_torch_optimizer(learning_rate, optimizer_cls, **optimizer_kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduler = make_scheduler(optimizer)
        values = []
        for _ in range(steps):
            group = optimizer.param_groups[0]
            values.append(group["betas"][0] if key == "beta1" else group[key])
            optimizer.step()
            scheduler.step()
    return np.asarray(values, dtype=np.float64)


def optlib_trace(
    schedule: Callable[[jax.Array], jax.Array], steps: int, start: int = 0
) -> np.ndarray:
    """``schedule(k)`` for ``k`` in ``start..start+steps-1``, one jit of a vmap."""
    counts = jnp.arange(start, start + steps, dtype=jnp.int32)
    return np.asarray(jax.jit(jax.vmap(schedule))(counts), dtype=np.float64)


def assert_trace_close(
    ours: np.ndarray,
    reference: np.ndarray,
    *,
    rtol: float = RTOL_F32,
    atol_peak: float = ATOL_PEAK_F32,
    label: str = "",
) -> float:
    """Asserts ``|ours - ref| <= rtol*|ref| + atol_peak*peak`` everywhere; returns the worst
    relative error (for closing notes)."""
    ours = np.asarray(ours, np.float64)
    reference = np.asarray(reference, np.float64)
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    peak = float(np.max(np.abs(reference))) if reference.size else 0.0
    bound = rtol * np.abs(reference) + atol_peak * peak
    error = np.abs(ours - reference)
    bad = np.nonzero(~(error <= bound))[0]
    if bad.size:
        k = int(bad[0])
        raise AssertionError(
            f"{label}: {bad.size} step(s) differ; first at step {k}: optlib={ours[k]!r} "
            f"reference={reference[k]!r} (|diff|={error[k]:.3e} > bound {bound[k]:.3e})\n"
            f"optlib[{max(k - 3, 0)}:{k + 4}]={ours[max(k - 3, 0) : k + 4]}\n"
            f"reference[{max(k - 3, 0)}:{k + 4}]={reference[max(k - 3, 0) : k + 4]}"
        )
    scale = np.maximum(np.abs(reference), 1e-300)
    return float(np.max(error / scale)) if reference.size else 0.0
