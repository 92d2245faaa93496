"""torch.optim.swa_utils.SWALR as a schedule (for stochastic weight averaging recipes)."""

from __future__ import annotations

from optlib._registry import register
from optlib._validation import check_choice, check_int, check_non_negative
from optlib.schedules._torch_rules import SwaAnnealing, TorchSchedule

__all__ = ["swa_lr"]


def swa_lr(
    learning_rate: float,
    swa_lr: float | None = None,
    anneal_epochs: int = 10,
    anneal_strategy: str = "cos",
) -> TorchSchedule:
    """Anneals the lr to ``swa_lr`` and holds it there (torch.optim.swa_utils.SWALR).

    On a fresh optimizer: ``lr_k = swa_lr * a_k + learning_rate * (1 - a_k)`` with
    ``a_k = anneal(min(1, k / anneal_epochs))``, ``anneal(t) = (1 - cos(pi t)) / 2`` ("cos")
    or ``t`` ("linear"); so ``lr_0 = learning_rate``, ``lr_k = swa_lr`` from
    ``k = anneal_epochs`` on (from ``k = 0`` with ``anneal_epochs=0``).

    torch's SWALR anneals from the lr it finds in the optimizer. In
    ``optlib.sequential_lr([..., swa_lr(...)], milestones=[..., m])`` (torch's SequentialLR)
    the milestone step keeps the lr the previous scheduler left at step ``m - 1`` and the
    annealing starts from it: ``lr_{m+k} = swa_lr * a_k + lr_{m-1} * (1 - a_k)``. Wrap the
    result in ``optlib.per_epoch`` for torch's per-epoch recipe.

    Args:
      learning_rate: the optimizer's lr (torch's base lr).
      swa_lr: the lr to anneal to (>= 0). Required.
      anneal_epochs: steps (scheduler calls) of the annealing, an integer >= 0.
      anneal_strategy: ``"cos"`` or ``"linear"``.

    Returns:
      A ``step -> lr`` schedule.

    Raises:
      ValueError: a missing or negative ``swa_lr``, a negative ``anneal_epochs``, an unknown
        ``anneal_strategy``; TypeError: a non-integer ``anneal_epochs``.
    """
    base = check_non_negative("learning_rate", learning_rate)
    if swa_lr is None:
        raise ValueError("SWALR requires `swa_lr`, please provide that argument.")
    final = check_non_negative("swa_lr", swa_lr)
    check_choice("anneal_strategy", anneal_strategy, ("cos", "linear"))
    epochs = check_int("anneal_epochs", anneal_epochs, minimum=0)
    rule = SwaAnnealing(base, final, epochs, cosine=anneal_strategy == "cos")
    return TorchSchedule("SWALR", base, rule)


register("SWALR", swa_lr, "torch.optim.swa_utils.SWALR", family="torch")
