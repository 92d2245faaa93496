"""``statistics_dtype=None`` on bf16/fp16 parameters equals torch bit for bit: Adagrad,
RMSprop, Adadelta and NAdam (issue 18).

100 steps of each optimizer on the problem of ``low_precision_runs`` (the same bf16/fp16
gradients fed to torch and to optlib): the parameters and every parameter-shaped state
tensor (``sum``, ``square_avg``, ``grad_avg``, ``momentum_buffer``, ``acc_delta``,
``exp_avg``, ``exp_avg_sq``) equal torch's bit for bit, NaN and infinities included (fp16's
``eps=1e-8`` rounds to 0: where a second moment underflows, RMSprop and NAdam divide by zero
as torch does). Each option that
changes torch's sequence of ops has a row: Adagrad's ``lr_decay`` (the ``addcdiv_`` value),
``initial_accumulator_value`` and coupled weight decay; RMSprop centered, with momentum (the
step becomes ``p.add_(buf, alpha=-lr)``) and with coupled weight decay; Adadelta's rounded
``lr``; NAdam with coupled and with decoupled weight decay (its two ``addcdiv_`` on the
parameter are rounded one after the other, after ``p.mul_(1 - lr * wd)``).

NAdam's step sizes are torch's Python doubles, optlib's float32: on other problems an fp16
entry can differ now and then (measured in the README's deviations); on this one none does.
"""

from __future__ import annotations

import pytest
import torch
from low_precision_runs import DTYPES, check_case

import optlib

NONE = {"statistics_dtype": None}


def _rms_fields(centered=False, momentum=False):
    fields = {"square_avg": lambda s, k: s["rms"].nu[k]}
    if centered:
        fields["grad_avg"] = lambda s, k: s["rms"].mu[k]
    if momentum:
        fields["momentum_buffer"] = lambda s, k: s["momentum"].momentum_buffer[k]
    return fields


ADADELTA_FIELDS = {
    "square_avg": lambda s, k: s["adadelta"].e_g[k],
    "acc_delta": lambda s, k: s["adadelta"].e_x[k],
}
NADAM_FIELDS = {
    "exp_avg": lambda s, k: s["nadam"].exp_avg[k],
    "exp_avg_sq": lambda s, k: s["nadam"].exp_avg_sq[k],
}

# name: (torch optimizer, optlib optimizer with statistics_dtype=None, state fields)
CASES = {
    "adagrad": (
        lambda p: torch.optim.Adagrad(p, lr=1e-2),
        lambda: optlib.adagrad(1e-2, **NONE),
        {"sum": lambda s, k: s["adagrad"].sum[k]},
    ),
    "adagrad_weight_decay_initial_accumulator": (
        lambda p: torch.optim.Adagrad(p, lr=1e-2, weight_decay=0.1, initial_accumulator_value=0.1),
        lambda: optlib.adagrad(1e-2, weight_decay=0.1, initial_accumulator_value=0.1, **NONE),
        {"sum": lambda s, k: s["adagrad"].sum[k]},
    ),
    "adagrad_lr_decay": (  # torch's value=-lr / (1 + (t - 1) * lr_decay)
        lambda p: torch.optim.Adagrad(p, lr=1e-2, lr_decay=0.01),
        lambda: optlib.adagrad(1e-2, lr_decay=0.01, **NONE),
        {"sum": lambda s, k: s["adagrad"].sum[k]},
    ),
    "rmsprop": (
        lambda p: torch.optim.RMSprop(p, lr=1e-2),
        lambda: optlib.rmsprop(1e-2, **NONE),
        _rms_fields(),
    ),
    "rmsprop_centered": (
        lambda p: torch.optim.RMSprop(p, lr=1e-2, centered=True),
        lambda: optlib.rmsprop(1e-2, centered=True, **NONE),
        _rms_fields(centered=True),
    ),
    "rmsprop_momentum": (
        lambda p: torch.optim.RMSprop(p, lr=1e-2, momentum=0.9),
        lambda: optlib.rmsprop(1e-2, momentum=0.9, **NONE),
        _rms_fields(momentum=True),
    ),
    "rmsprop_weight_decay": (
        lambda p: torch.optim.RMSprop(p, lr=1e-2, weight_decay=0.1),
        lambda: optlib.rmsprop(1e-2, weight_decay=0.1, **NONE),
        _rms_fields(),
    ),
    "rmsprop_centered_momentum_weight_decay": (
        lambda p: torch.optim.RMSprop(p, lr=1e-2, centered=True, momentum=0.9, weight_decay=0.1),
        lambda: optlib.rmsprop(1e-2, centered=True, momentum=0.9, weight_decay=0.1, **NONE),
        _rms_fields(centered=True, momentum=True),
    ),
    "adadelta": (
        lambda p: torch.optim.Adadelta(p),
        lambda: optlib.adadelta(**NONE),
        ADADELTA_FIELDS,
    ),
    "adadelta_lr_weight_decay": (  # lr rounded to bf16/fp16 as add_'s alpha
        lambda p: torch.optim.Adadelta(p, lr=0.3, weight_decay=0.1),
        lambda: optlib.adadelta(0.3, weight_decay=0.1, **NONE),
        ADADELTA_FIELDS,
    ),
    "nadam": (
        lambda p: torch.optim.NAdam(p, lr=1e-2),
        lambda: optlib.nadam(1e-2, **NONE),
        NADAM_FIELDS,
    ),
    "nadam_weight_decay": (
        lambda p: torch.optim.NAdam(p, lr=1e-2, weight_decay=0.1),
        lambda: optlib.nadam(1e-2, weight_decay=0.1, **NONE),
        NADAM_FIELDS,
    ),
    "nadam_decoupled_weight_decay": (
        lambda p: torch.optim.NAdam(p, lr=1e-2, decoupled_weight_decay=True, weight_decay=0.1),
        lambda: optlib.nadam(1e-2, decoupled_weight_decay=True, weight_decay=0.1, **NONE),
        NADAM_FIELDS,
    ),
}


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", list(CASES))
def test_equals_torch_bit_for_bit(name, dtype):
    check_case(name, dtype, *CASES[name], all_fields=True)
