"""Layer 2: small chainable ``GradientTransformation``s, each doing one job."""

from optlib.transforms.averaging import (
    AverageParamsState,
    ScaleByAsgdStepSizeState,
    asgd_average,
    average_params,
    averaged_params,
    scale_by_asgd_step_size,
)
from optlib.transforms.clipping import (
    ClipGradNormState,
    clip_grad_norm,
    clip_grad_value,
    global_grad_norm,
)
from optlib.transforms.extra_moments import (
    ScaleByAdemamixState,
    ScaleByLionState,
    ScaleByStableAdamState,
    scale_by_ademamix,
    scale_by_lion,
    scale_by_stable_adam,
)
from optlib.transforms.factored import (
    ScaleByCappedRelativeStepState,
    ScaleByFactoredRmsState,
    ScaleByParamRmsState,
    ScaleByRelativeStepSizeState,
    add_decayed_weights_scaled_by_learning_rate,
    clip_by_update_rms,
    ema_of_updates,
    relative_step_size,
    scale_by_capped_relative_step,
    scale_by_factored_rms,
    scale_by_param_rms,
    scale_by_relative_step_size,
    scale_by_torch_factored_rms,
)
from optlib.transforms.learning_rate import (
    LearningRate,
    ScaleByLearningRateState,
    apply_learning_rate,
    scale_by_learning_rate,
    torch_parameter_step,
    track_learning_rate,
)
from optlib.transforms.metric import (
    GreedyLRConfig,
    GreedyLRState,
    PlateauConfig,
    ReduceLROnPlateauState,
    greedy_lr,
    reduce_lr_on_plateau,
    report_metric,
)
from optlib.transforms.moments import (
    ScaleByAdagradState,
    ScaleByAdamState,
    ScaleByNadamState,
    TraceEmaMomentumState,
    scale_by_adadelta,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_nadam,
    scale_by_rms,
    trace_ema_momentum,
)
from optlib.transforms.momentum import TraceMomentumState, trace_momentum
from optlib.transforms.orthogonalize import (
    ADJUST_LR_FNS,
    NS_COEFFICIENTS,
    adjusted_lr_ratio,
    newton_schulz,
    scale_by_newton_schulz,
    scale_by_shape,
)
from optlib.transforms.regularization import (
    add_decoupled_weight_decay,
    add_weight_decay,
    negate_gradients,
)
from optlib.transforms.schedule_free import (
    ScaleBySecondMomentState,
    ScheduleFreeState,
    apply_schedule_free,
    scale_by_second_moment,
    schedule_free_eval_params,
)
from optlib.transforms.second_order import (
    ScaleByBfgsState,
    ScaleByNewtonState,
    scale_by_bfgs,
    scale_by_newton,
)
from optlib.transforms.torch_adaptive import (
    ScaleByAdamaxState,
    ScaleByRadamState,
    ScaleByRpropState,
    scale_by_adamax,
    scale_by_radam,
    scale_by_rprop,
)
from optlib.transforms.torch_lbfgs import (
    LINE_SEARCH_FNS,
    ScaleByTorchLbfgsState,
    scale_by_torch_lbfgs,
)

__all__ = [
    # the learning rate
    "LearningRate",
    "ScaleByLearningRateState",
    "apply_learning_rate",
    "scale_by_learning_rate",
    "torch_parameter_step",
    "track_learning_rate",
    # metric-driven learning rates (torch ReduceLROnPlateau, transformers GreedyLR)
    "GreedyLRConfig",
    "GreedyLRState",
    "PlateauConfig",
    "ReduceLROnPlateauState",
    "greedy_lr",
    "reduce_lr_on_plateau",
    "report_metric",
    # moment statistics (torch.optim)
    "ScaleByAdagradState",
    "ScaleByAdamState",
    "ScaleByNadamState",
    "scale_by_adadelta",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_nadam",
    "scale_by_rms",
    # momentum
    "TraceEmaMomentumState",
    "TraceMomentumState",
    "trace_ema_momentum",
    "trace_momentum",
    # weight decay and maximize
    "add_decoupled_weight_decay",
    "add_weight_decay",
    "negate_gradients",
    # clipping
    "ClipGradNormState",
    "clip_grad_norm",
    "clip_grad_value",
    "global_grad_norm",
    # factored statistics (Hugging Face Adafactor)
    "ScaleByCappedRelativeStepState",
    "ScaleByFactoredRmsState",
    "ScaleByParamRmsState",
    "ScaleByRelativeStepSizeState",
    "add_decayed_weights_scaled_by_learning_rate",
    "clip_by_update_rms",
    "ema_of_updates",
    "relative_step_size",
    "scale_by_capped_relative_step",
    "scale_by_factored_rms",
    "scale_by_param_rms",
    "scale_by_relative_step_size",
    "scale_by_torch_factored_rms",
    # second order
    "ScaleByBfgsState",
    "ScaleByNewtonState",
    "scale_by_bfgs",
    "scale_by_newton",
    # Lion, AdEMAMix, StableAdamW statistics
    "ScaleByAdemamixState",
    "ScaleByLionState",
    "ScaleByStableAdamState",
    "scale_by_ademamix",
    "scale_by_lion",
    "scale_by_stable_adam",
    # RAdam, Adamax, Rprop statistics (torch.optim)
    "ScaleByAdamaxState",
    "ScaleByRadamState",
    "ScaleByRpropState",
    "scale_by_adamax",
    "scale_by_radam",
    "scale_by_rprop",
    # parameter averaging (torch.optim.swa_utils, ASGD)
    "AverageParamsState",
    "ScaleByAsgdStepSizeState",
    "asgd_average",
    "average_params",
    "averaged_params",
    "scale_by_asgd_step_size",
    # schedule-free averaging (facebookresearch schedulefree)
    "ScaleBySecondMomentState",
    "ScheduleFreeState",
    "apply_schedule_free",
    "scale_by_second_moment",
    "schedule_free_eval_params",
    # orthogonalized updates (torch.optim.Muon)
    "ADJUST_LR_FNS",
    "NS_COEFFICIENTS",
    "adjusted_lr_ratio",
    "newton_schulz",
    "scale_by_newton_schulz",
    "scale_by_shape",
    # L-BFGS (torch.optim.LBFGS)
    "LINE_SEARCH_FNS",
    "ScaleByTorchLbfgsState",
    "scale_by_torch_lbfgs",
]
