"""torch ``state_dict``s in and out: resume a PyTorch run with optlib, or hand one back.

torch keeps an optimizer's statistics per parameter, keyed by the parameter's integer id
(its position in the param groups), with a ``step`` per parameter; optlib keeps the same
numbers in the links of a ``named_chain`` (``opt_state["adam"].exp_avg``), one pytree per
statistic and one counter per link. ``TORCH_STATE_LAYOUTS`` is the one table that says, for every
optlib optimizer with a torch (or Hugging Face) twin, which link and field holds each torch
per-parameter key, and which links count torch's ``step``. The rest is generic:

* parameters: ``param_paths`` gives the key path in ``params`` of torch's parameter ``i``;
  ``layouts`` converts each parameter-shaped tensor (``"transpose"`` for a torch
  ``Linear.weight`` (out, in) against a Flax ``Dense`` kernel (in, out)); Adafactor's factored
  row / column statistics follow the permutation (a transposed matrix swaps them);
* param groups: each optlib chain (one per ``optlib.param_groups`` group, or the single one)
  takes the torch param group that holds its parameters;
* counters: the links named in the table count torch's ``step``; every other counter (the
  learning-rate link, a cycled momentum) counts scheduler steps, torch's ``last_epoch``
  (torch's ``step`` when no scheduler state is given), so that a schedule of optax's count
  continues where torch's scheduler stopped;
* L-BFGS: torch.optim.LBFGS keeps one record for all parameters (``d``, ``t``, the history
  lists ``old_dirs`` / ``old_stps`` / ``ro``, ``H_diag``, ``prev_flat_grad``, ``prev_loss``,
  ``n_iter``, ``func_evals``), its vectors over the parameters in torch's order; optlib's
  ``scale_by_torch_lbfgs`` state holds them over ``ravel_pytree``'s order (layouts applied),
  the history in a ring buffer, and counts scheduler steps in ``count``;
* learning rates: a step schedule's state takes torch's current ``group['lr']`` (and is
  checked against what ``tx``'s schedule gives at ``last_epoch``), ReduceLROnPlateau and
  GreedyLR states take the scheduler's ``best``, counters and current lr.
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optlib._state_tree import find_states
from optlib.transforms.factored import ScaleByRelativeStepSizeState, relative_step_size
from optlib.transforms.learning_rate import ScaleByLearningRateState
from optlib.transforms.metric import GreedyLRState, ReduceLROnPlateauState
from optlib.transforms.torch_lbfgs import ScaleByTorchLbfgsState

__all__ = [
    "TORCH_STATE_LAYOUTS",
    "TorchField",
    "TorchStateLayout",
    "TorchStateDicts",
    "from_torch_state_dict",
    "require_torch",
    "to_torch_state_dict",
]


def require_torch() -> Any:
    """``import torch``, or an ``ImportError`` that says how to install it."""
    try:
        import torch
    except ImportError as error:  # pragma: no cover - torch is installed in the test env
        raise ImportError(
            'reading or writing torch state dicts needs PyTorch: pip install "optlib[torch]"'
        ) from error
    return torch


# ---------------------------------------------------------------------------------- the table


@dataclasses.dataclass(frozen=True)
class TorchField:
    """One torch per-parameter state key and where optlib keeps it.

    Attributes:
      key: torch's key (``"exp_avg"``).
      link: the ``named_chain`` link (``"adam"``).
      attribute: the field of that link's state (``"exp_avg"``).
      kind: ``"param"`` (shaped like the parameter), ``"row"`` / ``"col"`` / ``"full"``
        (Adafactor's factored statistics, and the unfactored one of tensors with < 2 dims), or
        ``"scalar"`` (one number per parameter in torch, one per chain in optlib, e.g. NAdam's
        ``mu_product``).
      sign: optlib's value is ``sign`` times torch's (-1 for HF Adafactor's ``exp_avg``, an
        average of the update after the learning rate, which optlib has negated already).
      keepdim: for ``"row"`` / ``"col"``: torch keeps the averaged axis with size 1
        (torch.optim.Adafactor's ``row_var`` (..., rows, 1), ``col_var`` (..., 1, cols));
        optlib drops it.
    """

    key: str
    link: str
    attribute: str
    kind: str = "param"
    sign: float = 1.0
    keepdim: bool = False


@dataclasses.dataclass(frozen=True)
class TorchStateLayout:
    """How one optlib optimizer's state maps onto its torch twin's ``state_dict``.

    Attributes:
      name: the optlib function (``"adam"``).
      reference: the torch class (``"torch.optim.Adam"``).
      links: the ``named_chain`` links that identify the optimizer in a state (the first
        entry of ``TORCH_STATE_LAYOUTS`` whose links are all present wins).
      group_keys: keys every torch param group of this class has.
      absent_group_keys: keys its param groups never have (tells Adam, RAdam, Adamax apart).
      fields: the per-parameter tensors.
      step_links: links whose ``count`` is torch's per-parameter ``step``.
      has_step: torch keeps a per-parameter ``step`` (every class but SGD).
      integer_step: torch keeps ``step`` as a Python int (HF Adafactor), not a tensor.
      momentum: ``(link, attribute, group_key)``: the average whose factor is torch's
        ``group[group_key]`` (``"momentum"``, or ``"betas"``' first entry), which OneCycleLR /
        CyclicLR cycle; ``to_torch_state_dict`` reads the current factor from it.
      buffer_flag: ``(link, key)``: that link's ``has_buffer`` is whether torch holds ``key``
        (SGD's / RMSprop's ``momentum_buffer``, created at the first step).
      rate: the path to the state that tracks the learning rate (torch's group ``lr`` and
        the scheduler's count): a link, then attributes inside it
        (``("asgd", "learning_rate_state")``); the chain must have it.
      step_counters: ``(link, attribute)`` counters besides the links' ``count`` that hold
        torch's ``step`` (ASGD's ``n_averaged``).
      derived: per-parameter torch scalars that optlib does not keep, ``{key: fn}`` with
        ``fn(step, group) -> value`` (ASGD's ``mu``); read from torch they are checked
        against it.
    """

    name: str
    reference: str
    links: tuple[str, ...]
    group_keys: frozenset[str]
    absent_group_keys: frozenset[str] = frozenset()
    fields: tuple[TorchField, ...] = ()
    step_links: tuple[str, ...] = ()
    has_step: bool = True
    integer_step: bool = False
    momentum: tuple[str, str, str] | None = None
    buffer_flag: tuple[str, str] | None = None
    rate: tuple[str, ...] = ("learning_rate",)
    step_counters: tuple[tuple[str, str], ...] = ()
    derived: Mapping[str, Callable[[int, Mapping], float]] = dataclasses.field(default_factory=dict)


def _asgd_mu(step: int, group: Mapping) -> float:
    """torch.optim.ASGD's ``mu`` after ``step`` steps: ``1 / max(1, step - t0)`` (1 before)."""
    if "t0" not in group:
        raise ValueError(
            "to_torch_state_dict of optlib.asgd needs param_groups= (torch's per-parameter "
            "'mu' is 1 / max(1, step - t0), and the optlib state does not hold t0)"
        )
    return 1.0 / max(1.0, step - float(group["t0"])) if step else 1.0


def _adam_like(name, reference, link, second, *, group_keys, absent=(), extra=()):
    return TorchStateLayout(
        name=name,
        reference=reference,
        links=(link,),
        group_keys=frozenset({"lr", "betas", "eps", "weight_decay", *group_keys}),
        absent_group_keys=frozenset(absent),
        fields=(
            TorchField("exp_avg", link, "exp_avg"),
            TorchField(second, link, second),
            *extra,
        ),
        step_links=(link,),
        momentum=(link, "exp_avg", "betas"),
    )


_MOMENTUM_BUFFER = TorchField("momentum_buffer", "momentum", "momentum_buffer")

TORCH_STATE_LAYOUTS: tuple[TorchStateLayout, ...] = (
    TorchStateLayout(
        name="torch_adafactor",
        reference="torch.optim.Adafactor",
        links=("factored_rms", "param_scale"),
        group_keys=frozenset({"beta2_decay", "eps", "d"}),
        fields=(
            TorchField("row_var", "factored_rms", "exp_avg_sq_row", "row", keepdim=True),
            TorchField("col_var", "factored_rms", "exp_avg_sq_col", "col", keepdim=True),
            TorchField("variance", "factored_rms", "exp_avg_sq", "full"),
        ),
        step_links=("factored_rms", "learning_rate"),
        rate=("learning_rate", "learning_rate_state"),
    ),
    TorchStateLayout(
        name="asgd",
        reference="torch.optim.ASGD",
        links=("asgd", "average"),
        group_keys=frozenset({"lambd", "alpha", "t0"}),
        fields=(
            TorchField("eta", "asgd", "eta", "scalar"),
            TorchField("ax", "average", "average"),
        ),
        step_links=("asgd", "average"),
        rate=("asgd", "learning_rate_state"),
        step_counters=(("average", "n_averaged"),),
        derived={"mu": _asgd_mu},
    ),
    TorchStateLayout(
        name="muon",
        reference="torch.optim.Muon",
        links=("momentum", "newton_schulz"),
        group_keys=frozenset({"momentum", "nesterov", "ns_coefficients", "ns_steps", "eps"}),
        fields=(_MOMENTUM_BUFFER,),
        has_step=False,
        momentum=("momentum", "momentum_buffer", "momentum"),
    ),
    TorchStateLayout(
        name="adafactor",
        reference="transformers.optimization.Adafactor",
        links=("factored_rms",),
        group_keys=frozenset({"clip_threshold", "decay_rate", "relative_step", "scale_parameter"}),
        fields=(
            TorchField("exp_avg_sq_row", "factored_rms", "exp_avg_sq_row", "row"),
            TorchField("exp_avg_sq_col", "factored_rms", "exp_avg_sq_col", "col"),
            TorchField("exp_avg_sq", "factored_rms", "exp_avg_sq", "full"),
            TorchField("exp_avg", "momentum", "ema", sign=-1.0),
        ),
        step_links=("factored_rms", "momentum"),
        integer_step=True,
    ),
    TorchStateLayout(
        name="rmsprop",
        reference="torch.optim.RMSprop",
        links=("rms",),
        group_keys=frozenset({"alpha", "centered", "momentum"}),
        fields=(
            TorchField("square_avg", "rms", "nu"),
            TorchField("grad_avg", "rms", "mu"),
            _MOMENTUM_BUFFER,
        ),
        momentum=("momentum", "momentum_buffer", "momentum"),
        buffer_flag=("momentum", "momentum_buffer"),
    ),
    _adam_like(
        "adam",
        "torch.optim.Adam",
        "adam",
        "exp_avg_sq",
        group_keys={"amsgrad"},
        extra=(TorchField("max_exp_avg_sq", "adam", "max_exp_avg_sq"),),
    ),
    _adam_like(
        "nadam",
        "torch.optim.NAdam",
        "nadam",
        "exp_avg_sq",
        group_keys={"momentum_decay"},
        extra=(TorchField("mu_product", "nadam", "mu_product", "scalar"),),
    ),
    _adam_like(
        "radam",
        "torch.optim.RAdam",
        "radam",
        "exp_avg_sq",
        group_keys={"decoupled_weight_decay"},
        absent={"amsgrad", "momentum_decay"},
    ),
    _adam_like(
        "adamax",
        "torch.optim.Adamax",
        "adamax",
        "exp_inf",
        group_keys=set(),
        absent={"amsgrad", "momentum_decay", "decoupled_weight_decay"},
    ),
    TorchStateLayout(
        name="adagrad",
        reference="torch.optim.Adagrad",
        links=("adagrad",),
        group_keys=frozenset({"lr_decay", "initial_accumulator_value"}),
        fields=(TorchField("sum", "adagrad", "sum"),),
        step_links=("adagrad",),
    ),
    TorchStateLayout(
        name="adadelta",
        reference="torch.optim.Adadelta",
        links=("adadelta",),
        group_keys=frozenset({"rho"}),
        fields=(
            TorchField("square_avg", "adadelta", "e_g"),
            TorchField("acc_delta", "adadelta", "e_x"),
        ),
    ),
    TorchStateLayout(
        name="rprop",
        reference="torch.optim.Rprop",
        links=("rprop",),
        group_keys=frozenset({"etas", "step_sizes"}),
        fields=(
            TorchField("prev", "rprop", "prev"),
            TorchField("step_size", "rprop", "step_size"),
        ),
    ),
    TorchStateLayout(
        name="sgd",
        reference="torch.optim.SGD",
        links=("momentum",),
        group_keys=frozenset({"momentum", "dampening", "nesterov"}),
        fields=(_MOMENTUM_BUFFER,),
        has_step=False,
        momentum=("momentum", "momentum_buffer", "momentum"),
        buffer_flag=("momentum", "momentum_buffer"),
    ),
)
"""Every optlib optimizer with a torch twin; a new optimizer is one ``TorchStateLayout`` row."""


_MISSING = object()


def _rate_state(chain: Mapping, entry: TorchStateLayout) -> Any:
    """The state at ``entry.rate`` in ``chain`` (``_MISSING`` if the chain has none)."""
    state: Any = chain.get(entry.rate[0], _MISSING)
    for attribute in entry.rate[1:]:
        state = getattr(state, attribute, _MISSING)
    return state


def _with_rate_state(chain: dict, entry: TorchStateLayout, new: Any) -> dict:
    """``chain`` with the state at ``entry.rate`` replaced by ``new``."""

    def replace(state: Any, path: tuple[str, ...]) -> Any:
        if not path:
            return new
        return state._replace(**{path[0]: replace(getattr(state, path[0]), path[1:])})

    link = entry.rate[0]
    return {**chain, link: replace(chain[link], entry.rate[1:])}


def _entry_of_chain(chain: Any) -> TorchStateLayout | None:
    if not isinstance(chain, dict):
        return None
    for entry in TORCH_STATE_LAYOUTS:
        if all(link in chain for link in entry.links) and (
            _rate_state(chain, entry) is not _MISSING
        ):
            return entry
    return None


def _torch_class_of(group: Mapping) -> list[str]:
    """The table's torch classes whose param-group keys ``group`` has."""
    keys = set(group)
    return [
        entry.reference
        for entry in TORCH_STATE_LAYOUTS
        if entry.group_keys <= keys and not entry.absent_group_keys & keys
    ]


# ----------------------------------------------------------------------- parameters, layouts


def _key_name(key: Any) -> str:
    for attribute in ("key", "idx", "name"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def _normalize_path(path: Any, what: str) -> tuple[str, ...]:
    if isinstance(path, str):
        return tuple(part for part in path.split("/") if part)
    if isinstance(path, Sequence):
        return tuple(_key_name(part) for part in path)
    raise TypeError(f"{what} must be an 'a/b' string or a tuple of keys, got {path!r}")


def _show(path: tuple[str, ...]) -> str:
    return "/".join(path)


class _Layout(NamedTuple):
    """``jax_array = torch_array.transpose(perm)``; ``None`` is the identity."""

    perm: tuple[int, ...] | None

    def to_jax(self, array: np.ndarray) -> np.ndarray:
        return array if self.perm is None else np.transpose(array, self.perm)

    def to_torch(self, array: np.ndarray) -> np.ndarray:
        return array if self.perm is None else np.transpose(array, np.argsort(self.perm))

    def factored(self, which: str, ndim: int) -> tuple[str, _Layout]:
        """Which torch statistic ("row" / "col") holds optlib's ``which`` statistic, and the
        permutation of that statistic's axes (a transposition swaps rows and columns)."""
        perm = tuple(range(ndim)) if self.perm is None else self.perm
        dropped_jax = ndim - 1 if which == "row" else ndim - 2
        dropped_torch = perm[dropped_jax]
        if {perm[-1], perm[-2]} != {ndim - 1, ndim - 2}:
            raise ValueError(
                f"layout {perm} moves the last two axes away: Adafactor's factored statistics "
                "(over the last two axes) cannot follow it"
            )
        key = "row" if dropped_torch == ndim - 1 else "col"
        remaining = [axis for axis in range(ndim) if axis != dropped_torch]
        sub = tuple(remaining.index(perm[i]) for i in range(ndim) if i != dropped_jax)
        return key, _Layout(None if sub == tuple(range(ndim - 1)) else sub)


def _parse_layout(layout: Any, ndim: int, where: str) -> _Layout:
    if layout is None or layout == "identity":
        return _Layout(None)
    if layout in ("transpose", "T"):
        return _Layout(tuple(reversed(range(ndim))))
    if isinstance(layout, Sequence) and not isinstance(layout, str):
        perm = tuple(int(axis) for axis in layout)
        if sorted(perm) != list(range(ndim)):
            raise ValueError(f"layouts[{where!r}] = {layout!r} is not a permutation of {ndim} axes")
        return _Layout(perm)
    raise ValueError(
        f"layouts[{where!r}] must be 'transpose', 'identity' or a permutation tuple, got {layout!r}"
    )


@dataclasses.dataclass(frozen=True)
class _Param:
    torch_id: Any
    group: int
    leaf: int
    path: tuple[str, ...]
    shape: tuple[int, ...]
    layout: _Layout


def _torch_parameters(
    groups: Sequence[Mapping], params: Any, param_paths: Any, layouts: Any
) -> list[_Param]:
    """torch's parameters in order, each with its leaf of ``params`` and its layout."""
    leaves_with_paths, _ = jax.tree_util.tree_flatten_with_path(params)
    leaf_of = {
        tuple(_key_name(k) for k in path): i for i, (path, _) in enumerate(leaves_with_paths)
    }
    shapes = [tuple(np.shape(leaf)) for _, leaf in leaves_with_paths]
    ids = [(index, torch_id) for index, group in enumerate(groups) for torch_id in group["params"]]
    names: list[str] | None = [
        name for group in groups for name in group.get("param_names", ())
    ] or None
    if names is not None and len(names) != len(ids):
        names = None

    if param_paths is None:
        if names is None:
            raise ValueError(
                "param_paths is required: the state dict has no 'param_names' (give the key "
                "path of each parameter, in torch's order)"
            )
        paths = [name.replace(".", "/") for name in names]
    elif callable(param_paths) or isinstance(param_paths, Mapping):
        if names is None:
            raise ValueError(
                "param_paths as a mapping or callable needs 'param_names' in the state dict "
                "(a torch optimizer built from model.named_parameters()); give a list instead"
            )
        if isinstance(param_paths, Mapping):
            missing = [name for name in names if name not in param_paths]
            if missing:
                raise ValueError(f"param_paths has no entry for torch parameter(s) {missing}")
            paths = [param_paths[name] for name in names]
        else:
            paths = [param_paths(name) for name in names]
    else:
        paths = list(param_paths)
        if len(paths) != len(ids):
            raise ValueError(
                f"param_paths has {len(paths)} entries but the torch optimizer has {len(ids)} "
                "parameters"
            )

    layouts = layouts or {}
    layout_of = (
        layouts
        if callable(layouts)
        else {_normalize_path(k, "layouts key"): v for k, v in layouts.items()}
    )
    result, seen = [], set()
    for position, ((group, torch_id), path) in enumerate(zip(ids, paths, strict=True)):
        key = _normalize_path(path, f"param_paths[{position}]")
        label = f"torch parameter {torch_id}" + (f" ({names[position]!r})" if names else "")
        if key not in leaf_of:
            known = ", ".join(_show(p) for p in list(leaf_of)[:8])
            raise ValueError(f"{label}: path {_show(key)!r} is not in params (params has {known})")
        if key in seen:
            raise ValueError(f"{label}: path {_show(key)!r} is given twice in param_paths")
        seen.add(key)
        leaf = leaf_of[key]
        raw = layout_of(key) if callable(layout_of) else layout_of.get(key)
        result.append(
            _Param(
                torch_id,
                group,
                leaf,
                key,
                shapes[leaf],
                _parse_layout(raw, len(shapes[leaf]), _show(key)),
            )
        )
    unknown = set(layout_of) - seen if not callable(layout_of) else set()
    if unknown:
        raise ValueError(
            f"layouts names paths that are no torch parameter: {sorted(map(_show, unknown))}"
        )
    extra = [p for p in leaf_of if p not in seen]
    if extra:
        raise ValueError(
            f"params has {len(extra)} leaf/leaves the torch optimizer does not hold: "
            f"{[_show(p) for p in extra[:8]]}"
        )
    return result


# ------------------------------------------------------------------------ walking the state


def _map_chains(state: Any, fn: Callable[[dict, TorchStateLayout], dict]) -> Any:
    """``state`` with every optimizer chain (a ``named_chain`` dict) replaced by ``fn``."""
    entry = _entry_of_chain(state)
    if entry is not None:
        return fn(state, entry)
    if isinstance(state, dict):
        return {key: _map_chains(value, fn) for key, value in state.items()}
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*(_map_chains(value, fn) for value in state))
    if isinstance(state, (tuple, list)):
        return type(state)(_map_chains(value, fn) for value in state)
    return state


def _chains(state: Any) -> list[tuple[dict, TorchStateLayout]]:
    found: list[tuple[dict, TorchStateLayout]] = []

    def collect(chain, entry):
        found.append((chain, entry))
        return chain

    _map_chains(state, collect)
    return found


def _field_tree(chain: dict, field: TorchField) -> Any:
    return getattr(chain.get(field.link), field.attribute, None)


def _members(chain: dict, entry: TorchStateLayout, treedef: Any) -> list[int] | None:
    """The params leaves a chain updates (``None``: its state does not say, e.g. plain SGD)."""
    for field in entry.fields:
        tree = _field_tree(chain, field)
        if tree is not None and field.kind != "scalar":
            leaves = treedef.flatten_up_to(tree)
            return [i for i, leaf in enumerate(leaves) if not isinstance(leaf, optax.MaskedNode)]
    return None


def _assign_groups(chains, groups, parameters, treedef) -> list[int]:
    """The torch param group of each chain."""
    group_of_leaf = {p.leaf: p.group for p in parameters}
    assigned: list[int | None] = []
    for chain, entry in chains:
        members = _members(chain, entry, treedef)
        if members is None:
            assigned.append(None)
            continue
        found = sorted({group_of_leaf[leaf] for leaf in members})
        settings = [
            {k: v for k, v in groups[g].items() if k not in ("params", "param_names")}
            for g in found
        ]
        if len(found) > 1 and any(setting != settings[0] for setting in settings):
            raise ValueError(
                f"one optlib {entry.name} group holds parameters of torch param groups {found}; "
                "build tx with optlib.param_groups, one optimizer per torch param group"
            )
        assigned.append(found[0] if found else 0)
    if any(group is None for group in assigned):
        if len(groups) == 1:
            assigned = [0 if group is None else group for group in assigned]
        elif len(chains) == len(groups):
            assigned = list(range(len(groups)))
        else:
            raise ValueError(
                f"cannot tell which of the {len(groups)} torch param groups each of the "
                f"{len(chains)} optlib optimizers of tx is"
            )
    return assigned  # type: ignore[return-value]


# --------------------------------------------------------------------------- torch -> optlib


# torch.optim.LBFGS keeps one record for all parameters (under the first one's id): flat
# vectors over the parameters in torch's order, its history as lists (oldest first). optlib's
# ScaleByTorchLbfgsState holds the same numbers over ravel_pytree's order, the history in a
# ring buffer (``history_start`` = slot of the oldest pair).

_LBFGS_VECTORS = ("d", "prev_flat_grad")
_LBFGS_LISTS = ("old_dirs", "old_stps")


def _is_lbfgs(x: Any) -> bool:
    return isinstance(x, ScaleByTorchLbfgsState)


def _lbfgs_gather(parameters: list[_Param], n_leaves: int) -> np.ndarray:
    """``optlib_flat = torch_flat[gather]`` (torch: params in order, each ``view(-1)`` in its
    layout; optlib: ``ravel_pytree`` of the JAX leaves)."""
    offsets, start = {}, 0
    for param in parameters:
        offsets[param.leaf] = start
        start += math.prod(param.shape)
    by_leaf = {param.leaf: param for param in parameters}
    pieces = []
    for leaf in range(n_leaves):
        param = by_leaf[leaf]
        torch_shape = param.layout.to_torch(np.empty(param.shape)).shape
        index = offsets[leaf] + np.arange(math.prod(param.shape)).reshape(torch_shape)
        pieces.append(np.asarray(param.layout.to_jax(index)).reshape(-1))
    return np.concatenate(pieces) if pieces else np.zeros(0, int)


def _lbfgs_from_torch(template, group: Mapping, record: Mapping, gather, sched_count) -> Any:
    size = template.old_dirs.shape[0]
    if group.get("history_size", size) != size:
        raise ValueError(
            f"torch.optim.LBFGS history_size={group['history_size']} but tx's optlib.lbfgs "
            f"keeps {size}"
        )
    dtype = template.d.dtype
    vector = lambda value: jnp.asarray(_numpy(value).reshape(-1)[gather], dtype)
    scalar = lambda value, like: jnp.asarray(float(_numpy(value)), like.dtype)
    out = template._replace(
        count=jnp.asarray(sched_count, jnp.int32),
        func_evals=jnp.asarray(int(record.get("func_evals", 0)), jnp.int32),
        n_iter=jnp.asarray(int(record.get("n_iter", 0)), jnp.int32),
    )
    if "lr" in group and group["lr"] is not None:
        out = out._replace(learning_rate=jnp.asarray(group["lr"], out.learning_rate.dtype))
    if "d" not in record:  # no inner iteration yet
        return out
    history = len(record["old_dirs"])
    if history > size:
        raise ValueError(f"the torch LBFGS history holds {history} pairs, tx keeps {size}")
    stacked = {}
    for key in _LBFGS_LISTS:
        buffer = np.zeros(template.old_dirs.shape, np.float64)
        for slot, value in enumerate(record[key]):
            buffer[slot] = _numpy(value).reshape(-1)[gather]
        stacked[key] = jnp.asarray(buffer, dtype)
    ro = np.zeros(size, np.float64)
    ro[:history] = [float(_numpy(value)) for value in record["ro"]]
    return out._replace(
        d=vector(record["d"]),
        prev_flat_grad=vector(record["prev_flat_grad"]),
        t=scalar(record["t"], template.t),
        H_diag=scalar(record["H_diag"], template.H_diag),
        prev_loss=scalar(record["prev_loss"], template.prev_loss),
        old_dirs=stacked["old_dirs"],
        old_stps=stacked["old_stps"],
        ro=jnp.asarray(ro, dtype),
        history_start=jnp.zeros([], jnp.int32),
        history_len=jnp.asarray(history, jnp.int32),
    )


def _lbfgs_to_torch(torch, state, gather) -> dict:
    record: dict = {"func_evals": int(state.func_evals), "n_iter": int(state.n_iter)}
    if int(state.n_iter) == 0:
        return record
    size = state.old_dirs.shape[0]

    def vector(value) -> Any:
        flat = np.empty(gather.shape, np.asarray(value).dtype)
        flat[gather] = np.asarray(value)
        return torch.from_numpy(flat)

    slots = [(int(state.history_start) + i) % size for i in range(int(state.history_len))]
    dtype = torch.from_numpy(np.array(state.ro)).dtype
    record.update(
        d=vector(state.d),
        t=torch.tensor(float(state.t), dtype=dtype),
        old_dirs=[vector(state.old_dirs[slot]) for slot in slots],
        old_stps=[vector(state.old_stps[slot]) for slot in slots],
        ro=[torch.tensor(float(state.ro[slot]), dtype=dtype) for slot in slots],
        H_diag=torch.tensor(float(state.H_diag), dtype=dtype),
        prev_flat_grad=vector(state.prev_flat_grad),
        prev_loss=float(state.prev_loss),
        al=[None] * size,
    )
    return record


def _lbfgs_groups(state_dict: Any) -> list[Mapping]:
    if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= set(state_dict):
        raise TypeError(
            "optimizer_state_dict must be a torch optimizer's state_dict() (keys 'state' and "
            f"'param_groups'), got {type(state_dict).__name__}"
        )
    groups = list(state_dict["param_groups"])
    if len(groups) != 1 or "history_size" not in groups[0]:
        raise ValueError(
            "optimizer_state_dict is not a torch.optim.LBFGS state dict (tx is optlib.lbfgs)"
            + (f": it looks like {' or '.join(_torch_class_of(groups[0]))}" if groups else "")
        )
    return groups


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


def _check_optimizer_dict(entry: TorchStateLayout, state_dict: Any) -> list[Mapping]:
    if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= set(state_dict):
        raise TypeError(
            "optimizer_state_dict must be a torch optimizer's state_dict() (keys 'state' and "
            f"'param_groups'), got {type(state_dict).__name__}"
        )
    groups = list(state_dict["param_groups"])
    allowed = {field.key for field in entry.fields} | {"step", "RMS", *entry.derived}
    for index, group in enumerate(groups):
        keys = set(group)
        if not entry.group_keys <= keys or entry.absent_group_keys & keys:
            looks = _torch_class_of(group)
            raise ValueError(
                f"optimizer_state_dict is not a {entry.reference} state dict (tx is optlib."
                f"{entry.name}): param group {index} has keys {sorted(keys - {'params'})}"
                + (f"; it looks like {' or '.join(looks)}" if looks else "")
            )
    for torch_id, param_state in state_dict["state"].items():
        unknown = set(param_state) - allowed
        if unknown:
            raise ValueError(
                f"optimizer_state_dict is not a {entry.reference} state dict (tx is optlib."
                f"{entry.name}): parameter {torch_id} has state {sorted(unknown)}"
            )
    return groups


def _step_of(entry, state, members: list[_Param]) -> int:
    steps = {}
    for param in members:
        param_state = state.get(param.torch_id)
        if param_state and "step" in param_state:
            steps[_show(param.path)] = round(float(_numpy(param_state["step"])))
    values = set(steps.values())
    if len(values) > 1:
        raise ValueError(
            f"the torch parameters of one group have different steps {steps}; optlib keeps one "
            f"count per optimizer ({entry.reference} skips parameters without a gradient)"
        )
    if values and len(steps) != len(members) and entry.has_step:
        missing = [_show(p.path) for p in members if _show(p.path) not in steps]
        raise ValueError(
            f"torch parameters {missing} have no {entry.reference} state while others have "
            "(they never had a gradient); optlib updates every parameter at every step"
        )
    return values.pop() if values else 0


def _factored_field(entry: TorchStateLayout, which: str) -> TorchField:
    """The entry's field of kind ``which`` ("row" / "col")."""
    return next(field for field in entry.fields if field.kind == which)


def _kept_axis(which: str) -> int:
    """The axis torch keeps with size 1 in a ``keepdim`` row / col statistic."""
    return -1 if which == "row" else -2


def _fill_field(entry, field, template, treedef, members, state, by_leaf) -> Any:
    leaves = list(treedef.flatten_up_to(template))
    for leaf_index, leaf in enumerate(leaves):
        param = by_leaf.get(leaf_index)
        if param is None or isinstance(leaf, optax.MaskedNode):
            continue
        param_state = state.get(param.torch_id) or {}
        ndim = len(param.shape)
        key, layout = field.key, param.layout
        if field.kind in ("row", "col"):
            if ndim < 2:
                continue
            which, layout = param.layout.factored(field.kind, ndim)
            torch_field = _factored_field(entry, which)
            key = torch_field.key
        elif field.kind == "full" and ndim >= 2:
            continue
        if key not in param_state:
            continue
        raw = _numpy(param_state[key])
        if field.kind in ("row", "col") and torch_field.keepdim:
            if raw.ndim != ndim or raw.shape[_kept_axis(which)] != 1:
                raise ValueError(
                    f"parameter {_show(param.path)!r} (torch parameter {param.torch_id}): torch "
                    f"state {key!r} has shape {tuple(raw.shape)}, {entry.reference} keeps a "
                    f"size-1 axis {_kept_axis(which)} of the {ndim}-D parameter's statistic"
                )
            raw = np.squeeze(raw, _kept_axis(which))
        value = field.sign * layout.to_jax(raw)
        if tuple(value.shape) != tuple(leaf.shape):
            raise ValueError(
                f"parameter {_show(param.path)!r} (torch parameter {param.torch_id}): torch "
                f"state {key!r} has shape {tuple(_numpy(param_state[key]).shape)}, optlib "
                f"expects {tuple(leaf.shape)} after the layout"
                + ("" if param.layout.perm else "; pass layouts={path: 'transpose'}?")
            )
        leaves[leaf_index] = jnp.asarray(value, leaf.dtype)
    return treedef.unflatten(leaves)


def _scheduler_count(scheduler_state_dict: Mapping | None) -> int | None:
    if scheduler_state_dict is None:
        return None
    if "last_epoch" in scheduler_state_dict:
        return int(scheduler_state_dict["last_epoch"])
    subs = scheduler_state_dict.get("_schedulers")
    if subs:  # ChainedScheduler: every member steps together
        return int(subs[0]["last_epoch"])
    raise ValueError("scheduler_state_dict has no 'last_epoch': not a torch scheduler state dict")


def _is_plateau(sd: Mapping) -> bool:
    return "num_bad_epochs" in sd and "mode_worse" in sd


def _is_greedy(sd: Mapping) -> bool:
    return "num_good_epochs" in sd and "max_lrs" in sd


def _check_config(name: str, pairs: dict, where: str) -> None:
    for key, (ours, theirs) in pairs.items():
        ours_f, theirs_f = float(np.asarray(ours)), float(theirs)
        if not (ours_f == theirs_f or math.isclose(ours_f, theirs_f, rel_tol=1e-6)):
            raise ValueError(
                f"scheduler_state_dict does not match tx's {name}: torch's {where}{key} is "
                f"{theirs!r}, tx's is {ours_f!r}"
            )


def _plateau_state(template: ReduceLROnPlateauState, sd: Mapping, group: int, lr) -> Any:
    if not _is_plateau(sd):
        raise ValueError(
            "tx's learning rate is optlib.reduce_lr_on_plateau but scheduler_state_dict is not "
            f"a torch ReduceLROnPlateau state dict (keys {sorted(sd)})"
        )
    c = template.config
    _check_config(
        "reduce_lr_on_plateau",
        {
            "factor": (c.factor, sd["factor"]),
            "patience": (c.patience, sd["patience"]),
            "threshold": (c.threshold, sd["threshold"]),
            "cooldown": (c.cooldown, sd["cooldown"]),
            "eps": (c.eps, sd["eps"]),
            "mode == 'max'": (c.maximize, sd["mode"] == "max"),
            "threshold_mode == 'rel'": (c.relative, sd["threshold_mode"] == "rel"),
            f"min_lrs[{group}]": (c.min_lr, sd["min_lrs"][group]),
        },
        "",
    )
    dtype = template.best.dtype
    return template._replace(
        learning_rate=jnp.asarray(lr, template.learning_rate.dtype),
        best=jnp.asarray(sd["best"], dtype),
        num_bad_epochs=jnp.asarray(sd["num_bad_epochs"], jnp.int32),
        cooldown_counter=jnp.asarray(sd["cooldown_counter"], jnp.int32),
        count=jnp.asarray(sd["last_epoch"], jnp.int32),
    )


def _greedy_state(template: GreedyLRState, sd: Mapping, group: int, lr) -> Any:
    if not _is_greedy(sd):
        raise ValueError(
            "tx's learning rate is optlib.greedy_lr but scheduler_state_dict is not a "
            f"transformers GreedyLR state dict (keys {sorted(sd)})"
        )
    c = template.config
    _check_config(
        "greedy_lr",
        {
            "factor": (c.factor, sd["factor"]),
            "patience": (c.patience, sd["patience"]),
            "threshold": (c.threshold, sd["threshold"]),
            "cooldown": (c.cooldown, sd["cooldown"]),
            "warmup": (c.warmup, sd["warmup"]),
            "eps": (c.eps, sd["eps"]),
            "reset_start": (c.reset_start, sd["reset_start_original"]),
            "smooth": (c.smooth, sd["smooth"]),
            f"min_lrs[{group}]": (c.min_lr, sd["min_lrs"][group]),
            f"max_lrs[{group}]": (c.max_lr, sd["max_lrs"][group]),
        },
        "",
    )
    if sd["smooth"]:
        raise ValueError(
            "GreedyLR with smooth=True keeps its streaming-average window outside its "
            "state_dict; it cannot be resumed exactly"
        )
    dtype = template.best.dtype
    i32 = lambda key: jnp.asarray(sd[key], jnp.int32)
    return template._replace(
        learning_rate=jnp.asarray(lr, template.learning_rate.dtype),
        best=jnp.asarray(sd["best"], dtype),
        num_bad_epochs=i32("num_bad_epochs"),
        num_good_epochs=i32("num_good_epochs"),
        cooldown_counter=i32("cooldown_counter"),
        warmup_counter=i32("warmup_counter"),
        reset_countdown=i32("reset_start"),
        count=i32("last_epoch"),
    )


def _with_count(link_state: Any, count: int) -> Any:
    if isinstance(link_state, tuple) and "count" in getattr(link_state, "_fields", ()):
        old: Any = link_state
        return old._replace(count=jnp.asarray(count, old.count.dtype))
    return link_state


def _learning_rate_link(template, group: Mapping, group_index, step, sched_count, sd):
    lr = group.get("lr")
    if isinstance(template, ReduceLROnPlateauState):
        if sd is None:
            raise ValueError("tx uses optlib.reduce_lr_on_plateau: pass scheduler_state_dict")
        return _plateau_state(template, sd, group_index, lr)
    if isinstance(template, GreedyLRState):
        if sd is None:
            raise ValueError("tx uses optlib.greedy_lr: pass scheduler_state_dict")
        return _greedy_state(template, sd, group_index, lr)
    if sd is not None and (_is_plateau(sd) or _is_greedy(sd)):
        raise ValueError(
            "scheduler_state_dict is a metric-driven scheduler's (ReduceLROnPlateau / GreedyLR) "
            "but tx's learning rate is a step schedule or a constant; build tx with "
            "optlib.reduce_lr_on_plateau(...) / optlib.greedy_lr(...) as its learning_rate"
        )
    if isinstance(template, ScaleByRelativeStepSizeState):
        rate = relative_step_size(bool(group.get("warmup_init", False)))(max(step - 1, 0))
        return template._replace(
            count=jnp.asarray(step, jnp.int32),
            learning_rate=jnp.asarray(rate, template.learning_rate.dtype),
        )
    if isinstance(template, ScaleByLearningRateState):
        rate = (
            template.learning_rate if lr is None else jnp.asarray(lr, template.learning_rate.dtype)
        )
        return template._replace(count=jnp.asarray(sched_count, jnp.int32), learning_rate=rate)
    return _with_count(template, sched_count)


def _chain_from_torch(chain, entry, group_index, group, parameters, state, treedef, sd):
    members = [p for p in parameters if p.group == group_index]
    by_leaf = {p.leaf: p for p in members}
    step = _step_of(entry, state, members)
    sched_count = _scheduler_count(sd)
    if sched_count is None:
        sched_count = step
    new = dict(chain)
    for field in entry.fields:
        template = _field_tree(chain, field)
        present = any(field.key in (state.get(p.torch_id) or {}) for p in members)
        if template is None:
            if present and field.kind not in ("row", "col", "full"):
                raise ValueError(
                    f"the torch state has {field.key!r} but tx's optlib.{entry.name} keeps none "
                    "(a different option: amsgrad, momentum, centered, beta1?)"
                )
            continue
        if field.kind == "scalar":
            values = [
                float(_numpy(state[p.torch_id][field.key]))
                for p in members
                if field.key in (state.get(p.torch_id) or {})
            ]
            value = jnp.asarray(values[0] if values else template, template.dtype)
        else:
            value = _fill_field(entry, field, template, treedef, members, state, by_leaf)
        new[field.link] = new[field.link]._replace(**{field.attribute: value})
    if entry.buffer_flag is not None:
        link, key = entry.buffer_flag
        if hasattr(new.get(link), "has_buffer"):
            held = any(key in (state.get(p.torch_id) or {}) for p in members)
            new[link] = new[link]._replace(has_buffer=jnp.asarray(held))
        elif any(key in (state.get(p.torch_id) or {}) for p in members):
            raise ValueError(
                f"the torch state has {key!r} but tx's optlib.{entry.name} has no momentum "
                "(momentum=0?)"
            )
    for key, fn in entry.derived.items():
        for p in members:
            held = (state.get(p.torch_id) or {}).get(key)
            expected = fn(step, group)
            if held is not None and not math.isclose(float(_numpy(held)), expected, rel_tol=1e-6):
                raise ValueError(
                    f"torch parameter {p.torch_id}: {entry.reference}'s {key!r} is "
                    f"{float(_numpy(held))!r} but step {step} and the param group give "
                    f"{expected!r}"
                )
    for link, link_state in new.items():
        if entry.rate == (link,):
            new[link] = _learning_rate_link(link_state, group, group_index, step, sched_count, sd)
        elif link in entry.step_links:
            new[link] = _with_count(link_state, step)
        else:
            new[link] = _with_count(link_state, sched_count)
    for link, attribute in entry.step_counters:
        counter = getattr(new[link], attribute)
        new[link] = new[link]._replace(**{attribute: jnp.asarray(step, counter.dtype)})
    if len(entry.rate) > 1:
        rate = _learning_rate_link(
            _rate_state(new, entry), group, group_index, step, sched_count, sd
        )
        new = _with_rate_state(new, entry, rate)
    return new


def _check_learning_rates(tx, params, opt_state, groups, assigned, scheduled: bool) -> None:
    """``tx``'s learning rate must give torch's current lr at the resumed count.

    Each step-schedule link at count ``c >= 1`` is set one step back and ``tx.update`` runs
    once on zero gradients: the rate the link then records is ``schedule(c)``, compared with
    torch's ``group['lr']`` (a schedule of another type or other hyperparameters, a constant
    rate against a scheduled run, a wrong base lr: all differ there).
    """
    checked = []

    def back(chain, entry):
        state = _rate_state(chain, entry)
        ok = type(state) is ScaleByLearningRateState and int(state.count) >= 1
        checked.append(ok)
        if not ok:
            return chain
        return _with_rate_state(chain, entry, _with_count(state, int(state.count) - 1))

    probe = _map_chains(opt_state, back)
    if not any(checked):
        return
    zeros = jax.tree.map(jnp.zeros_like, params)
    _, stepped = jax.jit(tx.update)(zeros, probe, params)
    chains = _chains(stepped)
    for (chain, entry), group_index, ok in zip(chains, assigned, checked, strict=True):
        lr = groups[group_index].get("lr")
        if not ok or lr is None:
            continue
        ours = float(_rate_state(chain, entry).learning_rate)
        if not math.isclose(ours, float(lr), rel_tol=1e-5, abs_tol=1e-12):
            count = int(_rate_state(chain, entry).count)
            what = (
                f"after last_epoch={count} scheduler steps"
                if scheduled
                else f"after {count} steps (no scheduler_state_dict given)"
            )
            raise ValueError(
                f"tx's learning rate does not match the torch run: torch's lr of param group "
                f"{group_index} {what} is {float(lr)!r}, tx's gives {ours!r} (another "
                "scheduler type or other hyperparameters, or a missing scheduler_state_dict?)"
            )


def from_torch_state_dict(
    tx: optax.GradientTransformation,
    params: Any,
    optimizer_state_dict: Mapping,
    scheduler_state_dict: Mapping | None = None,
    *,
    param_paths: Any = None,
    layouts: Any = None,
) -> Any:
    """The optlib state that continues a torch run exactly where its ``state_dict`` stopped.

    ``tx`` is the optlib twin of the torch optimizer (``optlib.adamw(schedule, ...)`` for
    ``torch.optim.AdamW`` + a scheduler, ``optlib.param_groups({...}, labels)`` for several
    param groups, or either inside ``optax.chain``), built with the same hyperparameters; the
    result is ``tx.init(params)`` with torch's statistics, step counts and scheduler position
    filled in (see ``TORCH_STATE_LAYOUTS`` for which torch key goes where). Continuing with
    ``tx.update`` then reproduces torch's continuation.

    Counters: the statistics links count torch's ``step``; the learning-rate link (and a
    cycled momentum) counts scheduler steps, ``scheduler_state_dict['last_epoch']``
    (torch's ``step`` without a scheduler state), so a schedule of optax's count resumes at
    torch's position. A step schedule is checked: it must give torch's current lr at that
    count. ReduceLROnPlateau / GreedyLR states take ``best``, ``num_bad_epochs``,
    ``cooldown_counter``, ... and the current lr; their hyperparameters are checked against
    ``tx``'s.

    Args:
      tx: the optlib optimizer.
      params: the parameters (a pytree; shapes and dtypes of the state come from it).
      optimizer_state_dict: ``torch_optimizer.state_dict()`` (or loaded from a file).
      scheduler_state_dict: ``torch_scheduler.state_dict()``, or ``None``.
      param_paths: the key path in ``params`` of each torch parameter, in torch's order (the
        order of the integer ids in the param groups): a list of ``"a/b"`` strings or key
        tuples. When the state dict has ``param_names`` (an optimizer built from
        ``model.named_parameters()``), a ``{torch_name: path}`` mapping or a callable
        ``torch_name -> path`` may be given instead; ``None`` then maps ``"a.b"`` to ``a/b``.
      layouts: ``{path: layout}`` (or a callable ``path -> layout``) for parameters whose
        JAX layout differs from torch's: ``"transpose"`` (reverse the axes: torch
        ``Linear.weight`` (out, in) against a Flax ``Dense`` kernel (in, out)) or a
        permutation ``perm`` with ``jax = torch.permute(perm)``. Identity by default.

    Returns:
      The optax state for ``tx``.

    Raises:
      ImportError: torch is not installed.
      ValueError: a state dict of another optimizer, a scheduler state of another kind than
        ``tx``'s learning rate (or another schedule), missing / extra / mis-shaped
        parameters; each message names what does not match.
      TypeError: ``optimizer_state_dict`` is no torch optimizer state dict.
    """
    require_torch()
    template = tx.init(params)
    if find_states(template, ScaleByTorchLbfgsState):
        groups = _lbfgs_groups(optimizer_state_dict)
        parameters = _torch_parameters(groups, params, param_paths, layouts)
        gather = _lbfgs_gather(parameters, len(jax.tree.leaves(params)))
        records = optimizer_state_dict["state"]
        record = records.get(groups[0]["params"][0], {}) if groups[0]["params"] else {}
        count = _scheduler_count(scheduler_state_dict)
        return jax.tree.map(
            lambda x: (
                _lbfgs_from_torch(x, groups[0], record, gather, count or 0) if _is_lbfgs(x) else x
            ),
            template,
            is_leaf=_is_lbfgs,
        )
    chains = _chains(template)
    if not chains:
        names = ", ".join(entry.name for entry in TORCH_STATE_LAYOUTS)
        raise ValueError(
            f"tx holds no optlib optimizer with a torch twin ({names}); build it with one of "
            "those (optionally in optlib.param_groups or optax.chain)"
        )
    entry = chains[0][1]
    groups = _check_optimizer_dict(entry, optimizer_state_dict)
    parameters = _torch_parameters(groups, params, param_paths, layouts)
    treedef = jax.tree.structure(params)
    assigned = _assign_groups(chains, groups, parameters, treedef)
    state = optimizer_state_dict["state"]
    groups_iter = iter(assigned)

    def fill(chain, chain_entry):
        group_index = next(groups_iter)
        return _chain_from_torch(
            chain,
            chain_entry,
            group_index,
            groups[group_index],
            parameters,
            state,
            treedef,
            scheduler_state_dict,
        )

    new_state = _map_chains(template, fill)
    _check_learning_rates(tx, params, new_state, groups, assigned, scheduler_state_dict is not None)
    return new_state


# --------------------------------------------------------------------------- optlib -> torch


class TorchStateDicts(NamedTuple):
    """What ``to_torch_state_dict`` returns.

    Attributes:
      optimizer: for ``torch_optimizer.load_state_dict``.
      scheduler: for ``torch_scheduler.load_state_dict``; ``None`` when ``tx``'s learning
        rate has no scheduler state (HF Adafactor's relative step).
    """

    optimizer: dict
    scheduler: dict | None


def _scalar(x) -> float:
    return float(np.asarray(x))


def _torch_step(torch, step: int, integer: bool):
    if integer:
        return step
    dtype = torch.get_default_dtype()
    return torch.tensor(
        float(step), dtype=dtype if dtype in (torch.float32, torch.float64) else torch.float32
    )


def _chain_to_torch(torch, chain, entry, group, members, treedef, params_leaves, out_state):
    count = 0
    for link in (*entry.step_links, "learning_rate"):
        if hasattr(chain.get(link), "count"):
            count = int(chain[link].count)
            break
    has_buffer = True
    if entry.buffer_flag is not None:
        link, _ = entry.buffer_flag
        has_buffer = bool(getattr(chain.get(link), "has_buffer", False))
    for param in members:
        param_state: dict = {}
        ndim = len(param.shape)
        for field in entry.fields:
            tree = _field_tree(chain, field)
            if tree is None:
                continue
            if (
                entry.buffer_flag is not None
                and field.key == entry.buffer_flag[1]
                and not has_buffer
            ):
                continue
            if field.kind == "scalar":
                param_state[field.key] = torch.tensor(
                    _scalar(tree), dtype=torch.get_default_dtype()
                )
                continue
            value = np.asarray(treedef.flatten_up_to(tree)[param.leaf])
            key, layout = field.key, param.layout
            if field.kind in ("row", "col"):
                if ndim < 2:
                    continue
                which, layout = param.layout.factored(field.kind, ndim)
                torch_field = _factored_field(entry, which)
                key = torch_field.key
                value = layout.to_torch(value)
                if torch_field.keepdim:
                    value = np.expand_dims(value, _kept_axis(which))
            elif field.kind == "full" and ndim >= 2:
                continue
            else:
                value = layout.to_torch(value)
            param_state[key] = torch.from_numpy(np.array(field.sign * value, order="C"))
        if entry.name == "adafactor":
            leaf = np.asarray(params_leaves[param.leaf], np.float64)
            param_state["RMS"] = torch.tensor(
                float(np.sqrt(np.mean(leaf**2))) if leaf.size else 0.0
            )
        for key, fn in entry.derived.items():
            param_state[key] = torch.tensor(fn(count, group), dtype=torch.get_default_dtype())
        if entry.has_step:
            param_state["step"] = _torch_step(torch, count, entry.integer_step)
        if param_state:
            out_state[param.torch_id] = param_state


def _learning_rate_of_chain(chain, entry) -> Any:
    state = _rate_state(chain, entry)
    rate = getattr(state, "learning_rate", None)
    return None if rate is None else _scalar(rate)


def _scheduler_out(chains, template: Mapping | None, lrs: list) -> dict | None:
    state = _rate_state(*chains[0])
    if isinstance(state, ReduceLROnPlateauState):
        c: Any = state.config
        maximize = bool(c.maximize)
        return {
            "factor": _scalar(c.factor),
            "default_min_lr": _scalar(c.min_lr),
            "min_lrs": [_scalar(_rate_state(ch, e).config.min_lr) for ch, e in chains],
            "patience": int(c.patience),
            "cooldown": int(c.cooldown),
            "eps": _scalar(c.eps),
            "last_epoch": int(state.count),
            "_last_lr": lrs,
            "mode_worse": -math.inf if maximize else math.inf,
            "mode": "max" if maximize else "min",
            "threshold": _scalar(c.threshold),
            "threshold_mode": "rel" if bool(c.relative) else "abs",
            "best": _scalar(state.best),
            "cooldown_counter": int(state.cooldown_counter),
            "num_bad_epochs": int(state.num_bad_epochs),
        }
    if isinstance(state, GreedyLRState):
        c = state.config
        return {
            "factor": _scalar(c.factor),
            "min_lrs": [_scalar(_rate_state(ch, e).config.min_lr) for ch, e in chains],
            "max_lrs": [_scalar(_rate_state(ch, e).config.max_lr) for ch, e in chains],
            "patience": int(c.patience),
            "verbose": bool(c.verbose),
            "cooldown": int(c.cooldown),
            "warmup": int(c.warmup),
            "cooldown_counter": int(state.cooldown_counter),
            "warmup_counter": int(state.warmup_counter),
            "mode": "max" if bool(c.maximize) else "min",
            "threshold": _scalar(c.threshold),
            "threshold_mode": "rel" if bool(c.relative) else "abs",
            "best": _scalar(state.best),
            "num_bad_epochs": int(state.num_bad_epochs),
            "num_good_epochs": int(state.num_good_epochs),
            "eps": _scalar(c.eps),
            "last_epoch": int(state.count),
            "smooth": bool(c.smooth),
            "window_size": int(state.window.shape[0]),
            "reset_start": int(state.reset_countdown),
            "reset_start_original": int(c.reset_start),
            "_last_lr": lrs,
            "_init_lrs": [
                _scalar(_rate_state(ch, e).config.initial_learning_rate) for ch, e in chains
            ],
        }
    if not isinstance(state, ScaleByLearningRateState):
        return None
    count = int(state.count)
    out = copy.deepcopy(dict(template)) if template is not None else {}
    _step_scheduler_dict(out, count, lrs)
    return out


def _step_scheduler_dict(out: dict, count: int, lrs: list) -> None:
    """Sets a (template) torch scheduler state dict to ``count`` scheduler steps."""
    subs = out.get("_schedulers")
    if subs is not None and "_milestones" in out:  # SequentialLR
        milestones = list(out["_milestones"])
        active = bisect.bisect_right(milestones, count)
        starts = [0, *milestones]
        for index, sub in enumerate(subs):
            if index < active:
                _step_scheduler_dict(sub, milestones[index] - starts[index], lrs)
            elif index == active:
                _step_scheduler_dict(sub, count - starts[index], lrs)
    elif subs is not None:  # ChainedScheduler
        for sub in subs:
            _step_scheduler_dict(sub, count, lrs)
    if subs is None or "_milestones" in out:
        out["last_epoch"] = count
    if subs is None:
        out["_step_count"] = count + 1
        out["_is_initial"] = False
    out["_last_lr"] = list(lrs)


def _current_momenta(tx, opt_state, params) -> list[float | None]:
    """Each chain's momentum / ``beta1`` at its current count (``None``: it keeps none).

    The average named by the table's ``momentum`` is set to 1 and ``tx.update`` runs once on
    zero gradients and zero parameters: ``b <- mu * b + 0`` (SGD, RMSprop) and
    ``m <- lerp(m, 0, 1 - beta1)`` (Adam family) then hold the factor the next update uses,
    including one a ``MomentumSchedule`` cycles.
    """
    treedef: Any = jax.tree.structure(params)  # jax has no type for PyTreeDef
    probed: list[bool] = []

    def ones(chain, entry):
        if (
            entry.momentum is None
            or getattr(chain.get(entry.momentum[0]), entry.momentum[1], None) is None
        ):
            probed.append(False)
            return chain
        link, attribute, _ = entry.momentum
        leaves = treedef.flatten_up_to(getattr(chain[link], attribute))
        filled = [
            leaf if isinstance(leaf, optax.MaskedNode) else jnp.ones_like(leaf) for leaf in leaves
        ]
        replaced = chain[link]._replace(**{attribute: treedef.unflatten(filled)})
        if hasattr(replaced, "has_buffer"):
            replaced = replaced._replace(has_buffer=jnp.asarray(True))
        probed.append(True)
        return {**chain, link: replaced}

    probe = _map_chains(opt_state, ones)
    if not any(probed):
        return [None] * len(probed)
    zeros = jax.tree.map(jnp.zeros_like, params)
    _, stepped = jax.jit(tx.update)(zeros, probe, zeros)
    momenta: list[float | None] = []
    for (chain, entry), ok in zip(_chains(stepped), probed, strict=True):
        if not ok:
            momenta.append(None)
            continue
        link, attribute, _ = entry.momentum  # type: ignore[misc]
        real = [
            leaf
            for leaf in treedef.flatten_up_to(getattr(chain[link], attribute))
            if not isinstance(leaf, optax.MaskedNode) and np.size(leaf)
        ]
        momenta.append(float(np.asarray(real[0]).reshape(-1)[0]) if real else None)
    return momenta


def _set_momentum(group: dict, key: str, value: float | None) -> None:
    """``group[key]`` (``betas[0]`` for ``"betas"``) := ``value`` unless equal to rounding."""
    if value is None or key not in group:
        return
    current = group[key][0] if key == "betas" else group[key]
    if math.isclose(float(current), value, rel_tol=1e-12, abs_tol=1e-15):
        return
    group[key] = (value, *group[key][1:]) if key == "betas" else value


def to_torch_state_dict(
    tx: optax.GradientTransformation,
    opt_state: Any,
    params: Any,
    *,
    param_paths: Any,
    layouts: Any = None,
    param_groups: Sequence[Mapping] | None = None,
    scheduler_state_dict: Mapping | None = None,
) -> TorchStateDicts:
    """torch ``state_dict``s of an optlib state: hand a run back to torch.

    The inverse of ``from_torch_state_dict``: ``TorchStateDicts(optimizer, scheduler)``, for
    ``torch_optimizer.load_state_dict(optimizer)`` and ``torch_scheduler.load_state_dict
    (scheduler)``, after which torch continues as optlib would.

    torch's ``Optimizer.load_state_dict`` replaces each param group's hyperparameters by the
    dict's, and an optlib optimizer does not keep its constructor's arguments in its state; so
    give ``param_groups=torch_optimizer.state_dict()["param_groups"]`` of a torch optimizer
    built with the same hyperparameters: its groups are copied, with ``lr`` (and
    ``initial_lr`` under a scheduler) set from the optlib state, and the momentum /
    ``betas[0]`` that OneCycleLR / CyclicLR cycle set to the value the next update uses (read
    from ``tx`` by one update on zeros). Without it, each group holds only ``params`` and
    ``lr``: torch's ``load_state_dict`` would then drop the group's other hyperparameters.

    The scheduler dict of a step schedule sets ``last_epoch``, ``_step_count`` and ``_last_lr``
    (enough for ``load_state_dict`` of any single torch scheduler); for SequentialLR /
    ChainedScheduler pass ``scheduler_state_dict=torch_scheduler.state_dict()`` of a freshly
    built one, whose members are then set too. ReduceLROnPlateau / GreedyLR dicts are
    complete.

    Args:
      tx: the optlib optimizer whose state ``opt_state`` is.
      opt_state: the state.
      params: the parameters.
      param_paths: as in ``from_torch_state_dict`` (a list, in torch's order; the id of the
        parameter at position ``i`` is ``i``, groups in the order of ``param_groups``).
      layouts: as in ``from_torch_state_dict``.
      param_groups: torch param groups to copy the hyperparameters from (see above).
      scheduler_state_dict: a torch scheduler state dict to update (see above).

    Returns:
      ``TorchStateDicts(optimizer, scheduler)``.
    """
    torch = require_torch()
    found = find_states(opt_state, ScaleByTorchLbfgsState)
    if found:
        paths = list(param_paths.values()) if isinstance(param_paths, Mapping) else param_paths
        groups = [dict(param_groups[0])] if param_groups else [{}]
        groups[0]["params"] = list(range(len(paths)))
        parameters = _torch_parameters(groups, params, paths, layouts)
        gather = _lbfgs_gather(parameters, len(jax.tree.leaves(params)))
        groups[0]["lr"] = _scalar(found[0].learning_rate)
        scheduler = None
        if scheduler_state_dict is not None or param_groups is not None:
            scheduler = copy.deepcopy(dict(scheduler_state_dict or {}))
            _step_scheduler_dict(scheduler, int(found[0].count), [groups[0]["lr"]])
        optimizer = {"state": {0: _lbfgs_to_torch(torch, found[0], gather)}, "param_groups": groups}
        return TorchStateDicts(optimizer, scheduler)
    chains = _chains(opt_state)
    if not chains:
        raise ValueError("opt_state holds no optlib optimizer with a torch twin")
    if param_groups is None:
        paths = (
            list(param_paths)
            if not isinstance(param_paths, Mapping)
            else list(param_paths.values())
        )
        if len(chains) == 1:
            groups = [{"params": list(range(len(paths)))}]
        else:
            treedef = jax.tree.structure(params)
            leaves = jax.tree_util.tree_flatten_with_path(params)[0]
            leaf_of = {tuple(_key_name(k) for k in p): i for i, (p, _) in enumerate(leaves)}
            groups = []
            for chain, entry in chains:
                held = set(_members(chain, entry, treedef) or [])
                groups.append(
                    {
                        "params": [
                            i
                            for i, path in enumerate(paths)
                            if leaf_of.get(_normalize_path(path, "param_paths")) in held
                        ]
                    }
                )
    else:
        groups = [dict(group) for group in param_groups]
    parameters = _torch_parameters(groups, params, param_paths, layouts)
    treedef = jax.tree.structure(params)
    assigned = _assign_groups(chains, groups, parameters, treedef)
    params_leaves = jax.tree.leaves(params)
    state: dict = {}
    lrs: list = [None] * len(groups)
    scheduled = isinstance(_rate_state(*chains[0]), ScaleByLearningRateState) and (
        scheduler_state_dict is not None or param_groups is not None
    )
    momenta = _current_momenta(tx, opt_state, params) if param_groups is not None else None
    for index, ((chain, entry), group_index) in enumerate(zip(chains, assigned, strict=True)):
        members = [p for p in parameters if p.group == group_index]
        _chain_to_torch(
            torch, chain, entry, groups[group_index], members, treedef, params_leaves, state
        )
        if momenta is not None and entry.momentum is not None:
            _set_momentum(groups[group_index], entry.momentum[2], momenta[index])
        lr = _learning_rate_of_chain(chain, entry)
        if isinstance(_rate_state(chain, entry), ScaleByRelativeStepSizeState):
            lr = groups[group_index].get("lr")
        lrs[group_index] = lr
        groups[group_index]["lr"] = lr
        if scheduled and "initial_lr" not in groups[group_index]:
            base = (scheduler_state_dict or {}).get("base_lrs")
            if base is not None:
                groups[group_index]["initial_lr"] = base[group_index]
    state = {p.torch_id: state[p.torch_id] for p in parameters if p.torch_id in state}
    optimizer = {"state": state, "param_groups": groups}
    return TorchStateDicts(optimizer, _scheduler_out(chains, scheduler_state_dict, lrs))
