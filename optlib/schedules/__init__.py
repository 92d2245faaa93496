"""Layer 1: schedules, pure jit-traceable functions of the update count."""

from optlib.schedules._core import MomentumSchedule, per_epoch
from optlib.schedules.extras import cosine_annealing_warm_up_restarts, linear_decay
from optlib.schedules.hf import (
    get_constant_schedule,
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_cosine_with_hard_restarts_schedule_with_warmup,
    get_cosine_with_min_lr_schedule_with_warmup,
    get_cosine_with_min_lr_schedule_with_warmup_lr_rate,
    get_inverse_sqrt_schedule,
    get_linear_schedule_with_warmup,
    get_polynomial_decay_schedule_with_warmup,
    get_wsd_schedule,
)
from optlib.schedules.swa import (
    swa_lr,
)
from optlib.schedules.torch import (
    chained_scheduler,
    constant_lr,
    cosine_annealing_lr,
    cosine_annealing_warm_restarts,
    cyclic_lr,
    exponential_lr,
    lambda_lr,
    linear_lr,
    multi_step_lr,
    multiplicative_lr,
    one_cycle_lr,
    polynomial_lr,
    sequential_lr,
    step_lr,
)

__all__ = [
    # torch.optim.lr_scheduler
    "chained_scheduler",
    "constant_lr",
    "cosine_annealing_lr",
    "cosine_annealing_warm_restarts",
    "cyclic_lr",
    "exponential_lr",
    "lambda_lr",
    "linear_lr",
    "multi_step_lr",
    "multiplicative_lr",
    "one_cycle_lr",
    "polynomial_lr",
    "sequential_lr",
    "step_lr",
    # transformers.optimization
    "get_constant_schedule",
    "get_constant_schedule_with_warmup",
    "get_cosine_schedule_with_warmup",
    "get_cosine_with_hard_restarts_schedule_with_warmup",
    "get_cosine_with_min_lr_schedule_with_warmup",
    "get_cosine_with_min_lr_schedule_with_warmup_lr_rate",
    "get_inverse_sqrt_schedule",
    "get_linear_schedule_with_warmup",
    "get_polynomial_decay_schedule_with_warmup",
    "get_wsd_schedule",
    # other published schedules
    "cosine_annealing_warm_up_restarts",
    "linear_decay",
    # composing schedules
    "MomentumSchedule",
    "per_epoch",
    # stochastic weight averaging (torch.optim.swa_utils.SWALR)
    "swa_lr",
]
