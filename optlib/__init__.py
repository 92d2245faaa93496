"""optlib: PyTorch- and Hugging Face-exact optimizers and LR schedules as Optax pieces.

Public names are re-exported flat from here, like optax: ``optlib.step_lr``,
``optlib.get_scheduler``, ``optlib.adam``, ``optlib.scale_by_adagrad``, ...
"""

from optlib._state_tree import current_learning_rate, register_learning_rate_state
from optlib.freezing import carry_over_state
from optlib.metric import *  # noqa: F403
from optlib.optimizers import *  # noqa: F403
from optlib.param_groups import *  # noqa: F403
from optlib.plotting import plot_schedule
from optlib.registry import get_scheduler, scheduler_names
from optlib.schedules import *  # noqa: F403
from optlib.sharding import register_state_partition, state_shardings
from optlib.transforms import *  # noqa: F403

__version__ = "0.1.0"
