"""``statistics_dtype=None`` on bf16/fp16 parameters equals torch bit for bit (issue 18).

100 steps of each optimizer on the problem of ``low_precision_runs`` (the same bf16/fp16
gradients fed to torch and to optlib): the parameters and every parameter-shaped state
tensor equal torch's bit for bit, NaN and infinities included (torch's fp16 Adam divides by
``sqrt(v) + fp16(1e-8) = sqrt(v) + 0`` and overflows where ``v`` underflows; optlib does the
same). The options that change the arithmetic (momentum, Nesterov, dampening, AMSGrad,
coupled and decoupled weight decay) each have a row.
"""

from __future__ import annotations

import pytest
import torch
from low_precision_runs import DTYPES, check_case

import optlib


def _adam_fields(name):
    return {
        "exp_avg": lambda s, k: s[name].exp_avg[k],
        "exp_avg_sq": lambda s, k: s[name].exp_avg_sq[k],
    }


NONE = {"statistics_dtype": None}

# name: (torch optimizer, optlib optimizer with statistics_dtype=None, state fields)
CASES = {
    "sgd": (lambda p: torch.optim.SGD(p, lr=1e-2), lambda: optlib.sgd(1e-2, **NONE), {}),
    "sgd_momentum": (
        lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9),
        lambda: optlib.sgd(1e-2, momentum=0.9, **NONE),
        {"momentum_buffer": lambda s, k: s["momentum"].momentum_buffer[k]},
    ),
    "sgd_nesterov_weight_decay": (
        lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, nesterov=True, weight_decay=0.1),
        lambda: optlib.sgd(1e-2, momentum=0.9, nesterov=True, weight_decay=0.1, **NONE),
        {"momentum_buffer": lambda s, k: s["momentum"].momentum_buffer[k]},
    ),
    "sgd_dampening": (
        lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, dampening=0.3),
        lambda: optlib.sgd(1e-2, momentum=0.9, dampening=0.3, **NONE),
        {"momentum_buffer": lambda s, k: s["momentum"].momentum_buffer[k]},
    ),
    "adam": (
        lambda p: torch.optim.Adam(p, lr=1e-2),
        lambda: optlib.adam(1e-2, **NONE),
        _adam_fields("adam"),
    ),
    "adam_amsgrad_weight_decay": (
        lambda p: torch.optim.Adam(p, lr=1e-2, amsgrad=True, weight_decay=0.1),
        lambda: optlib.adam(1e-2, amsgrad=True, weight_decay=0.1, **NONE),
        {
            **_adam_fields("adam"),
            "max_exp_avg_sq": lambda s, k: s["adam"].max_exp_avg_sq[k],
        },
    ),
    "adamw": (
        lambda p: torch.optim.AdamW(p, lr=1e-2),
        lambda: optlib.adamw(1e-2, **NONE),
        _adam_fields("adam"),
    ),
    "adamw_large_decay": (  # lr * wd above half a bf16 unit: the decay moves the parameters
        lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.5),
        lambda: optlib.adamw(1e-2, weight_decay=0.5, **NONE),
        _adam_fields("adam"),
    ),
}


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", list(CASES))
def test_equals_torch_bit_for_bit(name, dtype):
    check_case(name, dtype, *CASES[name])
