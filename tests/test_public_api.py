"""The public surface: ``optlib.__all__`` is pinned, built from the layers, and nothing leaks.

A name added to or removed from the public API changes this list on purpose (and the
CHANGELOG); everything else reachable from ``optlib`` is a layer subpackage or private.
"""

from __future__ import annotations

import optlib

PUBLIC = [
    "ADJUST_LR_FNS",
    "AverageParamsState",
    "ClipGradNormState",
    "GreedyLRConfig",
    "GreedyLRState",
    "LINE_SEARCH_FNS",
    "LearningRate",
    "MomentumSchedule",
    "NS_COEFFICIENTS",
    "PlateauConfig",
    "ReduceLROnPlateauState",
    "ScaleByAdagradState",
    "ScaleByAdamState",
    "ScaleByAdamaxState",
    "ScaleByAdemamixState",
    "ScaleByAsgdStepSizeState",
    "ScaleByBfgsState",
    "ScaleByCappedRelativeStepState",
    "ScaleByFactoredRmsState",
    "ScaleByLearningRateState",
    "ScaleByLionState",
    "ScaleByNadamState",
    "ScaleByNewtonState",
    "ScaleByParamRmsState",
    "ScaleByRadamState",
    "ScaleByRelativeStepSizeState",
    "ScaleByRpropState",
    "ScaleBySecondMomentState",
    "ScaleByStableAdamState",
    "ScaleByTorchLbfgsState",
    "ScheduleFreeState",
    "TorchStateDicts",
    "TraceEmaMomentumState",
    "TraceMomentumState",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "add_decayed_weights_scaled_by_learning_rate",
    "add_decoupled_weight_decay",
    "add_weight_decay",
    "ademamix",
    "adjusted_lr_ratio",
    "apply_learning_rate",
    "apply_schedule_free",
    "asgd",
    "asgd_average",
    "average_params",
    "averaged_params",
    "bfgs",
    "carry_over_state",
    "chained_scheduler",
    "clip_by_update_rms",
    "clip_grad_norm",
    "clip_grad_value",
    "constant_lr",
    "cosine_annealing_lr",
    "cosine_annealing_warm_restarts",
    "cosine_annealing_warm_up_restarts",
    "current_learning_rate",
    "cyclic_lr",
    "decay_labels",
    "describe",
    "ema_of_updates",
    "exponential_lr",
    "from_torch",
    "from_torch_state_dict",
    "from_training_args",
    "get_constant_schedule",
    "get_constant_schedule_with_warmup",
    "get_cosine_schedule_with_warmup",
    "get_cosine_with_hard_restarts_schedule_with_warmup",
    "get_cosine_with_min_lr_schedule_with_warmup",
    "get_cosine_with_min_lr_schedule_with_warmup_lr_rate",
    "get_inverse_sqrt_schedule",
    "get_linear_schedule_with_warmup",
    "get_polynomial_decay_schedule_with_warmup",
    "get_scheduler",
    "get_wsd_schedule",
    "global_grad_norm",
    "greedy_lr",
    "hf_no_decay_labels",
    "lambda_lr",
    "lbfgs",
    "linear_decay",
    "linear_lr",
    "lion",
    "load_hf_trainer_checkpoint",
    "multi_step_lr",
    "multiplicative_lr",
    "muon",
    "nadam",
    "negate_gradients",
    "newton",
    "newton_schulz",
    "one_cycle_lr",
    "param_groups",
    "per_epoch",
    "plot_schedule",
    "polynomial_lr",
    "radam",
    "reduce_lr_on_plateau",
    "register_learning_rate_state",
    "register_state_partition",
    "relative_step_size",
    "report_metric",
    "rmsprop",
    "rprop",
    "scale_by_adadelta",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_ademamix",
    "scale_by_asgd_step_size",
    "scale_by_bfgs",
    "scale_by_capped_relative_step",
    "scale_by_factored_rms",
    "scale_by_learning_rate",
    "scale_by_lion",
    "scale_by_nadam",
    "scale_by_newton",
    "scale_by_newton_schulz",
    "scale_by_param_rms",
    "scale_by_radam",
    "scale_by_relative_step_size",
    "scale_by_rms",
    "scale_by_rprop",
    "scale_by_second_moment",
    "scale_by_shape",
    "scale_by_stable_adam",
    "scale_by_torch_factored_rms",
    "scale_by_torch_lbfgs",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "schedule_free_radam",
    "schedule_free_sgd",
    "scheduler_names",
    "sequential_lr",
    "sgd",
    "stable_adamw",
    "state_shardings",
    "step_lr",
    "swa_lr",
    "to_torch_state_dict",
    "torch_adafactor",
    "torch_parameter_step",
    "trace_ema_momentum",
    "trace_momentum",
    "track_learning_rate",
]

LAYERS = ("schedules", "transforms", "optimizers")


def test_the_public_names_are_exactly_the_pinned_ones():
    assert sorted(optlib.__all__) == PUBLIC


def test_each_public_name_is_listed_once_and_resolves():
    assert len(optlib.__all__) == len(set(optlib.__all__))
    for name in optlib.__all__:
        assert getattr(optlib, name, None) is not None, name


def test_the_top_level_is_the_layers_plus_the_integrations():
    layered = [name for layer in LAYERS for name in getattr(optlib, layer).__all__]
    assert set(optlib.__all__) == set(layered) | set(optlib._INTEGRATIONS)
    assert not set(layered) & set(optlib._INTEGRATIONS)


def test_nothing_but_the_layers_and_private_names_leaks():
    leaked = {
        name
        for name in set(dir(optlib)) - set(optlib.__all__)
        if not name.startswith("_") and name not in LAYERS
    }
    assert not leaked, sorted(leaked)
