"""optlib: PyTorch- and Hugging Face-exact optimizers and LR schedules as Optax pieces.

Public names are re-exported flat from here, like optax: ``optlib.step_lr``,
``optlib.get_scheduler``, ``optlib.adam``, ``optlib.scale_by_adagrad``, ... Three layers,
each also importable on its own: ``optlib.schedules`` (pure functions of the step),
``optlib.transforms`` (chainable ``GradientTransformation``s) and ``optlib.optimizers``
(reference-named chains); the rest are integrations built on them.
"""

from optlib import optimizers, schedules, transforms
from optlib._describe import describe
from optlib._freezing import carry_over_state
from optlib._from_torch import from_torch
from optlib._hf_checkpoint import load_hf_trainer_checkpoint
from optlib._param_groups import decay_labels, param_groups
from optlib._partition import register_state_partition
from optlib._plotting import plot_schedule
from optlib._registry import get_scheduler, scheduler_names
from optlib._sharding import state_shardings
from optlib._state_tree import current_learning_rate, register_learning_rate_state
from optlib._torch_state import TorchStateDicts, from_torch_state_dict, to_torch_state_dict
from optlib._training_args import from_training_args, hf_no_decay_labels
from optlib.optimizers import *  # exactly optimizers.__all__
from optlib.schedules import *  # exactly schedules.__all__
from optlib.transforms import *  # exactly transforms.__all__

__version__ = "0.1.0"

_INTEGRATIONS = [
    # names -> schedules (torch class names, transformers SchedulerType values)
    "get_scheduler",
    "scheduler_names",
    # reading and stepping states
    "current_learning_rate",
    "register_learning_rate_state",
    # param groups, freezing and unfreezing
    "carry_over_state",
    "decay_labels",
    "param_groups",
    # sharding
    "register_state_partition",
    "state_shardings",
    # plotting
    "plot_schedule",
    # torch and Hugging Face Trainer checkpoints: resume a torch run, hand one back
    "TorchStateDicts",
    "from_torch_state_dict",
    "load_hf_trainer_checkpoint",
    "to_torch_state_dict",
    # recipe factories: torch optimizers/schedulers and HF TrainingArguments -> optax
    "describe",
    "from_torch",
    "from_training_args",
    "hf_no_decay_labels",
]

__all__ = [*schedules.__all__, *transforms.__all__, *optimizers.__all__, *_INTEGRATIONS]
