"""``statistics_dtype=None`` on bf16/fp16 parameters equals torch bit for bit (issue 18):
RAdam, Adamax, Rprop, ASGD and torch's Adafactor.

100 steps of each optimizer on the problem of ``low_precision_runs`` (the same bf16/fp16
gradients fed to torch and to optlib): the parameters and every parameter-shaped state
tensor equal torch's bit for bit, and so do ASGD's 0-d ``eta`` and torch Adafactor's
factored ``row_var`` / ``col_var`` (not parameter-shaped; read with ``tensors_of``).

What each row exercises:

* RAdam: the un-rectified steps 1-5 and the rectified ones from step 6 (``b2 = 0.999``; step
  3 for ``b2 = 0.99``), its ``exp_avg / bc1 * lr * (sqrt(bc2) / (sqrt(v) + eps)) * rect``
  with the rate inside the rounded product, torch's Python-double scalars; coupled and
  decoupled weight decay;
* Adamax: the rounded ``exp_inf.mul_(b2)`` and ``|g| + eps`` inside the maximum;
* Rprop: the step sizes in the parameters' dtype;
* ASGD (``t0=20``: the average starts inside the 100 steps): torch's ``p.mul_(1 - lambd * eta)``
  and ``p.add_(g, alpha=-eta)`` rounded one after the other, the rounded averaging;
* torch's Adafactor: the bf16/fp16 norms, the factored and the full (vector) second moment,
  the parameter step ``p.add_(u, alpha=-alpha / denom)`` with its scalars from torch's norms;
  weight decay.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from low_precision_runs import DTYPES, SHAPES, as_float32, optlib_run, torch_run

import optlib

NONE = {"statistics_dtype": None}


def _fields(name, *fields):
    return {field: (lambda s, k, field=field: getattr(s[name], field)[k]) for field in fields}


def _asgd_state(optimizer, k, p):
    """torch's ASGD ``eta``: a 0-d float32 tensor, compared too."""
    return {"eta": optimizer.state[p]["eta"].numpy()}


def _adafactor_state(optimizer, k, p):
    """torch's factored statistics of the matrix, shaped (rows, 1) and (1, cols)."""
    state = optimizer.state[p]
    return {name: state[name].float().numpy() for name in ("row_var", "col_var") if name in state}


_ADAFACTOR_FIELDS = {
    "row_var": lambda s, k: s["factored_rms"].exp_avg_sq_row[k][..., :, None],
    "col_var": lambda s, k: s["factored_rms"].exp_avg_sq_col[k][..., None, :],
    "variance": lambda s, k: s["factored_rms"].exp_avg_sq[k],
}
_ASGD_FIELDS = {
    "ax": lambda s, k: optlib.averaged_params(s)[k],
    "eta": lambda s, k: s["asgd"].eta,
}

# name: (torch optimizer, optlib optimizer with statistics_dtype=None, state fields,
#        torch's extra state read-out or None)
CASES = {
    "radam": (
        lambda p: torch.optim.RAdam(p, lr=1e-2),
        lambda: optlib.radam(1e-2, **NONE),
        _fields("radam", "exp_avg", "exp_avg_sq"),
        None,
    ),
    "radam_betas": (  # rectified from step 3
        lambda p: torch.optim.RAdam(p, lr=1e-2, betas=(0.8, 0.99)),
        lambda: optlib.radam(1e-2, betas=(0.8, 0.99), **NONE),
        _fields("radam", "exp_avg", "exp_avg_sq"),
        None,
    ),
    "radam_weight_decay": (
        lambda p: torch.optim.RAdam(p, lr=1e-2, weight_decay=0.1),
        lambda: optlib.radam(1e-2, weight_decay=0.1, **NONE),
        _fields("radam", "exp_avg", "exp_avg_sq"),
        None,
    ),
    "radam_decoupled_weight_decay": (
        lambda p: torch.optim.RAdam(p, lr=1e-2, decoupled_weight_decay=True, weight_decay=0.1),
        lambda: optlib.radam(1e-2, decoupled_weight_decay=True, weight_decay=0.1, **NONE),
        _fields("radam", "exp_avg", "exp_avg_sq"),
        None,
    ),
    "adamax": (
        lambda p: torch.optim.Adamax(p, lr=1e-2),
        lambda: optlib.adamax(1e-2, **NONE),
        _fields("adamax", "exp_avg", "exp_inf"),
        None,
    ),
    "adamax_weight_decay": (
        lambda p: torch.optim.Adamax(p, lr=1e-2, weight_decay=0.1),
        lambda: optlib.adamax(1e-2, weight_decay=0.1, **NONE),
        _fields("adamax", "exp_avg", "exp_inf"),
        None,
    ),
    "rprop": (
        lambda p: torch.optim.Rprop(p, lr=1e-2),
        lambda: optlib.rprop(1e-2, **NONE),
        _fields("rprop", "prev", "step_size"),
        None,
    ),
    "asgd": (
        lambda p: torch.optim.ASGD(p, lr=1e-2, t0=20),
        lambda: optlib.asgd(1e-2, t0=20, **NONE),
        _ASGD_FIELDS,
        _asgd_state,
    ),
    "asgd_large_decay": (  # lambd * eta moves the parameters; coupled weight decay too
        lambda p: torch.optim.ASGD(p, lr=0.05, lambd=0.05, alpha=0.6, t0=20, weight_decay=0.1),
        lambda: optlib.asgd(0.05, lambd=0.05, alpha=0.6, t0=20, weight_decay=0.1, **NONE),
        _ASGD_FIELDS,
        _asgd_state,
    ),
    "torch_adafactor": (
        lambda p: torch.optim.Adafactor(p, lr=1e-2),
        lambda: optlib.torch_adafactor(1e-2, **NONE),
        _ADAFACTOR_FIELDS,
        _adafactor_state,
    ),
    "torch_adafactor_weight_decay": (
        lambda p: torch.optim.Adafactor(p, lr=1e-2, weight_decay=0.1),
        lambda: optlib.torch_adafactor(1e-2, weight_decay=0.1, **NONE),
        _ADAFACTOR_FIELDS,
        _adafactor_state,
    ),
}


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", list(CASES))
def test_equals_torch_bit_for_bit(name, dtype):
    make_torch, make_optlib, fields, tensors_of = CASES[name]
    jax_dtype, torch_dtype = DTYPES[dtype]
    reference_params, reference_state = torch_run(make_torch, torch_dtype, tensors_of=tensors_of)
    ours, state = optlib_run(make_optlib(), jax_dtype)
    compared = set()
    for k in SHAPES:
        np.testing.assert_array_equal(
            ours[k], reference_params[k], err_msg=f"{name} {dtype}: params[{k}]"
        )
        for field, leaf in fields.items():
            if field not in reference_state[k]:  # torch's Adafactor: row/col or variance
                continue
            np.testing.assert_array_equal(
                as_float32(leaf(state, k)),
                reference_state[k][field],
                err_msg=f"{name} {dtype}: {field}[{k}]",
            )
            compared.add(field)
    assert compared == set(fields), f"{name}: torch has no {set(fields) - compared}"


@pytest.mark.parametrize(
    ("torch_step", "error"),
    [((0.0, 1e-3), ValueError), ((1.0, -1.0), ValueError), ((1.0,), TypeError), (1.0, TypeError)],
)
def test_a_bad_torch_step_pair_is_rejected(torch_step, error):
    with pytest.raises(error, match=r"torch_step"):
        optlib.scale_by_capped_relative_step(1e-2, torch_step=torch_step)
