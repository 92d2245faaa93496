"""Resume a Hugging Face ``Trainer`` checkpoint folder (``checkpoint-N/``) with optlib."""

from __future__ import annotations

import json
import os
from typing import Any

import optax

from optlib._torch_state import from_torch_state_dict, require_torch

__all__ = ["load_hf_trainer_checkpoint"]


def load_hf_trainer_checkpoint(
    checkpoint_dir: str | os.PathLike,
    tx: optax.GradientTransformation,
    params: Any,
    *,
    param_paths: Any,
    layouts: Any = None,
) -> tuple[Any, int]:
    """The optlib state and the global step of a ``transformers.Trainer`` checkpoint.

    Reads ``optimizer.pt``, ``scheduler.pt`` (if present) and ``trainer_state.json`` of a
    ``checkpoint-N/`` folder, the tensors with ``torch.load(weights_only=True)`` (no pickled
    code runs), and converts them with ``from_torch_state_dict``. The model weights are not
    read: convert them as for any torch model (``model.safetensors``), with the same
    ``layouts``. Continue with ``tx`` from the returned state, starting at batch
    ``global_step``, as ``Trainer.train(resume_from_checkpoint=...)`` does.

    The Trainer's default optimizer is ``torch.optim.AdamW`` over two param groups (weights
    with ``weight_decay``, biases and LayerNorm weights without), and its scheduler a
    ``LambdaLR`` from ``transformers.get_scheduler``: the optlib twin is
    ``optlib.param_groups({"decay": optlib.adamw(schedule, weight_decay=wd),
    "no_decay": optlib.adamw(schedule, weight_decay=0.0)}, labels)`` with
    ``schedule = optlib.get_scheduler(args.lr_scheduler_type, learning_rate=args.learning_rate,
    ...)``.

    Args:
      checkpoint_dir: the ``checkpoint-N`` folder.
      tx: the optlib optimizer (see above).
      params: the JAX parameters.
      param_paths: as in ``from_torch_state_dict``: a list in the optimizer's parameter order,
        or, for an optimizer state with ``param_names``, a ``{torch_name: path}`` mapping or a
        callable.
      layouts: as in ``from_torch_state_dict`` (``"transpose"`` for Flax ``Dense`` kernels).

    Returns:
      ``(opt_state, global_step)``.

    Raises:
      ImportError: torch is not installed.
      FileNotFoundError: the folder has no ``optimizer.pt``.
      ValueError: see ``from_torch_state_dict``.
    """
    torch = require_torch()
    folder = os.fspath(checkpoint_dir)
    optimizer_file = os.path.join(folder, "optimizer.pt")
    if not os.path.isfile(optimizer_file):
        raise FileNotFoundError(f"{folder} has no optimizer.pt: not a Trainer checkpoint folder")
    optimizer_state = torch.load(optimizer_file, map_location="cpu", weights_only=True)
    scheduler_file = os.path.join(folder, "scheduler.pt")
    scheduler_state = (
        torch.load(scheduler_file, map_location="cpu", weights_only=True)
        if os.path.isfile(scheduler_file)
        else None
    )
    trainer_file = os.path.join(folder, "trainer_state.json")
    global_step = 0
    if os.path.isfile(trainer_file):
        with open(trainer_file, encoding="utf-8") as handle:
            global_step = int(json.load(handle).get("global_step", 0))
    opt_state = from_torch_state_dict(
        tx,
        params,
        optimizer_state,
        scheduler_state,
        param_paths=param_paths,
        layouts=layouts,
    )
    return opt_state, global_step
