"""Parameter groups (torch's ``param_groups``) and gradient accumulation (``optax.MultiSteps``).

Both run against a real torch loop on the problem of ``test_optimizers_torch``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from parity import (
    OPTIMIZER_RTOL_F64,
    make_problem,
    max_relative_error,
    optlib_trajectory,
    torch,
    torch_trajectory,
)

import optlib

GROUP_STEPS = 50
T_MAX = 30  # < GROUP_STEPS: the cosine turns back up, as torch's does
GROUPS = {  # label -> (lr, weight_decay), torch's two param groups
    "decay": (0.05, 0.01),
    "no_decay": (0.02, 0.0),
}


def _torch_groups(params: dict) -> list[dict]:
    labels = optlib.decay_labels({k: p.detach().numpy() for k, p in params.items()})
    return [
        {
            "params": [p for k, p in params.items() if labels[k] == label],
            "lr": lr,
            "weight_decay": weight_decay,
        }
        for label, (lr, weight_decay) in GROUPS.items()
    ]


def test_two_group_adamw_with_cosine_annealing_matches_torch(x64):
    problem = make_problem(GROUP_STEPS, seed=3)
    tx = optlib.param_groups(
        {
            label: optlib.adamw(optlib.cosine_annealing_lr(lr, T_max=T_MAX), weight_decay=wd)
            for label, (lr, wd) in GROUPS.items()
        },
        optlib.decay_labels,
    )
    ours, state = optlib_trajectory(tx, problem, jnp.float64)
    reference, optimizer, _ = torch_trajectory(
        lambda params: torch.optim.AdamW(_torch_groups(params)),
        problem,
        torch.float64,
        scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=T_MAX),
    )
    error = max_relative_error(ours, reference)
    assert error <= OPTIMIZER_RTOL_F64, f"max relative parameter error {error:.3e}"
    rates = optlib.current_learning_rate(state)
    assert set(rates) == set(GROUPS)
    for group, label in zip(optimizer.param_groups, GROUPS):
        np.testing.assert_allclose(float(rates[label]), group["lr"], rtol=1e-12)


def test_decay_labels_split_weights_from_biases_and_scalars():
    params = {
        "w": jnp.ones((2, 3)),
        "conv": jnp.ones((2, 2, 3)),
        "b": jnp.ones(3),
        "s": jnp.ones([]),
    }
    assert optlib.decay_labels(params) == {
        "w": "decay",
        "conv": "decay",
        "b": "no_decay",
        "s": "no_decay",
    }


def test_param_groups_rejects_what_is_not_an_optimizer():
    with pytest.raises(TypeError, match="groups"):
        optlib.param_groups({}, optlib.decay_labels)
    with pytest.raises(TypeError, match=r"groups\['decay'\]"):
        optlib.param_groups({"decay": 0.1}, optlib.decay_labels)


ACCUMULATION_STEPS = 10
MICRO_BATCHES = 4


def test_multisteps_accumulation_is_one_large_batch_step_per_k_micro_batches(x64):
    """k micro-batches, one AdamW step on their mean gradient, the schedule stepping once.

    The torch reference is HF's loop: ``(loss / k).backward()`` per micro-batch, then
    ``optimizer.step(); scheduler.step()``.
    """
    problem = make_problem(ACCUMULATION_STEPS, seed=5, micro_batches=MICRO_BATCHES)
    schedule = optlib.cosine_annealing_lr(0.05, T_max=ACCUMULATION_STEPS)
    tx = optax.MultiSteps(
        optlib.adamw(schedule, weight_decay=0.1),
        every_k_schedule=MICRO_BATCHES,
        accumulator_dtype=jnp.float64,  # optax's default accumulator is float32
    )
    ours, state = optlib_trajectory(tx, problem, jnp.float64, accumulate=True)
    reference, optimizer, _ = torch_trajectory(
        lambda params: torch.optim.AdamW(list(params.values()), lr=0.05, weight_decay=0.1),
        problem,
        torch.float64,
        scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=ACCUMULATION_STEPS
        ),
    )
    error = max_relative_error(ours, reference)
    assert error <= OPTIMIZER_RTOL_F64, f"max relative parameter error {error:.3e}"
    # The schedule counted optimizer steps, not micro-batches.
    assert int(state.gradient_step) == ACCUMULATION_STEPS
    np.testing.assert_allclose(
        float(optlib.current_learning_rate(state)), optimizer.param_groups[0]["lr"], rtol=1e-12
    )
    # Memory: one accumulator, shaped like the parameters.
    shapes = jax.tree.map(jnp.shape, state.acc_grads)
    assert shapes == {k: v.shape for k, v in problem.params.items()}


def test_multisteps_steps_a_metric_driven_scheduler_once_per_optimizer_step(x64):
    """ReduceLROnPlateau inside MultiSteps sees one metric per optimizer step, as in torch."""
    problem = make_problem(ACCUMULATION_STEPS, seed=6, micro_batches=MICRO_BATCHES)
    metrics = np.array([1.0, 0.9, 0.9, 0.9, 0.95, 0.8, 0.8, 0.8, 0.8, 0.7])
    tx = optax.MultiSteps(
        optlib.sgd(optlib.reduce_lr_on_plateau(0.05, factor=0.5, patience=1), momentum=0.9),
        every_k_schedule=MICRO_BATCHES,
        accumulator_dtype=jnp.float64,
    )
    ours, state = optlib_trajectory(tx, problem, jnp.float64, accumulate=True, metrics=metrics)
    reference, optimizer, _ = torch_trajectory(
        lambda params: torch.optim.SGD(list(params.values()), lr=0.05, momentum=0.9),
        problem,
        torch.float64,
        scheduler=lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, factor=0.5, patience=1
        ),
        metrics=metrics,
    )
    error = max_relative_error(ours, reference)
    assert error <= OPTIMIZER_RTOL_F64, f"max relative parameter error {error:.3e}"
    assert optimizer.param_groups[0]["lr"] < 0.05  # the reference did reduce
    np.testing.assert_allclose(
        float(optlib.current_learning_rate(state)), optimizer.param_groups[0]["lr"], rtol=1e-12
    )
