"""bf16 and fp16 parameters train for 1000 steps with every optimizer (issue 9.4).

A two-layer MLP regression with parameters, data, loss and gradients in bfloat16 or float16,
trained for 1000 steps inside one jitted ``lax.scan`` per optimizer and dtype (all of them in
one compile). For every optimizer (a metric-driven learning rate included):

* no NaN or Inf: in the losses of all 1000 steps and in the final parameters;
* the parameters stay in their dtype, and the updates come out in it (checked while
  tracing: ``optax.apply_updates`` would otherwise hide a silent upcast);
* the optimizer's statistics are float32: every floating leaf of the state is float32
  (scalars such as learning rates included). Exempt: the line searches' own state
  (``optax.scale_by_*_linesearch``, used as is by ``newton``/``bfgs``), which stores the
  latest value and gradient as they are, in the parameters' dtype.
* the run does not blow up: the final loss is at most the initial one.

``newton`` and ``bfgs`` are deterministic methods (their line searches guarantee a decrease
of the objective they are given): they train on one full batch; the others on 8 minibatches.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from reliability_cases import OPTIMIZER_CASES, init_params, make_batches, train_step

STEPS = 1000
DTYPES = (jnp.bfloat16, jnp.float16)


def _is_line_search_state(node) -> bool:
    return "Linesearch" in type(node).__name__


def state_float_dtypes(state) -> dict[str, jnp.dtype]:
    """``{path: dtype}`` of the floating leaves of ``state``, line-search states left out."""
    dtypes = {}
    leaves = jax.tree_util.tree_leaves_with_path(
        state, is_leaf=lambda node: _is_line_search_state(node)
    )
    for path, leaf in leaves:
        if _is_line_search_state(leaf):
            continue
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            dtypes[jax.tree_util.keystr(path)] = leaf.dtype
    return dtypes


def training_inputs(dtype, batch_count: int):
    """``(params, batches)`` in ``dtype``."""
    params = init_params(jax.random.key(0), dtype)
    return params, make_batches(jax.random.key(1), batch_count, dtype)


def train(tx, params, batches):
    """1000 steps in one ``lax.scan``: ``(final params, final state, losses)``."""

    def body(carry, index):
        params, state = carry
        batch = jax.tree.map(lambda x: x[index % x.shape[0]], batches)
        new_params, new_state, loss = train_step(tx, params, state, batch)
        for old, new in zip(jax.tree.leaves(params), jax.tree.leaves(new_params)):
            assert new.dtype == old.dtype, (old.dtype, new.dtype)  # at trace time
        return (new_params, new_state), loss

    (final, state), losses = jax.lax.scan(body, (params, tx.init(params)), jnp.arange(STEPS))
    return final, state, losses


# Every optimizer once (Nesterov, AMSGrad and the second metric-driven rate change no dtype
# handling; each row adds to the compile), Adafactor both ways, one metric-driven rate.
CASES = [
    case
    for case in OPTIMIZER_CASES
    if case.name not in ("sgd_nesterov", "adam_amsgrad", "sgd_greedy_lr")
]


def check_run(label: str, dtype, params, state, losses) -> None:
    """No NaN/Inf, parameters in ``dtype``, float32 statistics, no blow-up."""
    losses = np.asarray(losses, np.float32)
    assert np.all(np.isfinite(losses)), (
        f"{label}: non-finite loss at step {int(np.flatnonzero(~np.isfinite(losses))[0])}"
    )
    for leaf in jax.tree.leaves(params):
        assert leaf.dtype == dtype, label
        assert bool(jnp.all(jnp.isfinite(leaf))), f"{label}: non-finite parameters"
    not_float32 = {
        path: dtype_ for path, dtype_ in state_float_dtypes(state).items() if dtype_ != jnp.float32
    }
    assert not not_float32, f"{label}: state not in float32: {not_float32}"
    assert losses[-1] <= losses[0], f"{label}: loss went from {losses[0]} to {losses[-1]}"


def test_1000_steps_in_bf16_and_fp16_with_every_optimizer():
    """Every optimizer and both dtypes in one compile (one program per optimizer costs more
    in all); every run is checked and every failing one is reported."""
    optimizers = {case.name: case.make() for case in CASES}
    inputs = {
        case.name: [training_inputs(dtype, 1 if case.line_search else 8) for dtype in DTYPES]
        for case in CASES
    }
    # inputs are arguments (as constants XLA would fold them)
    results = jax.jit(
        lambda inputs: {
            name: [train(optimizers[name], *pair) for pair in pairs]
            for name, pairs in inputs.items()
        }
    )(inputs)
    assert sorted(results) == sorted(case.name for case in CASES)
    failures = []
    for name, runs in results.items():
        for dtype, (params, state, losses) in zip(DTYPES, runs):
            try:
                check_run(f"{name}/{jnp.dtype(dtype).name}", dtype, params, state, losses)
            except AssertionError as error:
                failures.append(str(error))
    assert not failures, "\n".join(failures)
