"""The links that optimizer chains share, and the named chain that holds them.

Every optlib optimizer is ``named_chain(link, link, ...)``: ``optax.named_chain`` of
``(name, transform)`` pairs, so its state is a mapping and each statistic is reachable by
name (``opt_state["adam"].mu``, ``opt_state["learning_rate"].count``) instead of by position.
A link that an option switches off (``maximize=False``, the unused kind of weight decay) is
``None`` and leaves no placeholder in the state. Names used across optimizers:

* ``"maximize"``: ``negate_gradients()`` (torch's ``maximize=True``), first;
* ``"weight_decay"``: coupled L2 on the gradient, before any statistics;
* the algorithm's own statistics (``"adam"``, ``"momentum"``, ``"adagrad"``, ...);
* ``"decoupled_weight_decay"``: decay added to the finished update;
* ``"learning_rate"``: ``apply_learning_rate``, last.

Only Python-level switches (bools, ``None``) remove a link; a numeric hyperparameter never
does, since ``optax.inject_hyperparams`` passes it as an array and the state's structure
must not depend on its value.

``named_chain`` also gives every optimizer torch's handling of parameter leaves: a complex
leaf is optimized as the pair of reals ``torch.view_as_real`` gives (its statistics are real
arrays of shape ``(..., 2)``), or rejected where the reference does not treat complex
parameters that way; an integer or bool leaf is rejected (torch: "Only Tensors of floating
point and complex dtype can require gradients"); a Python float leaf is taken as a
0-d array, as optax does.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import weakref
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optlib._numerics import DEFAULT_STATISTICS_DTYPE, rounds_like_torch
from optlib._validation import check_bool, check_non_negative
from optlib.transforms.learning_rate import (
    LearningRate,
    apply_learning_rate,
    resolve_learning_rate,
    torch_parameter_step,
)
from optlib.transforms.moments import check_betas
from optlib.transforms.regularization import (
    add_decoupled_weight_decay,
    add_weight_decay,
    negate_gradients,
)

__all__ = [
    "ChainRecord",
    "Link",
    "chain_record",
    "check_parameter_leaves",
    "cycled_betas",
    "learning_rate_link",
    "maximize_link",
    "momentum_from",
    "named_chain",
    "recorded_optimizer",
    "reject_momentum_schedule",
    "weight_decay_links",
]

Link = tuple[str, optax.GradientTransformation]
"""One named step of an optimizer's chain."""


@dataclasses.dataclass(frozen=True)
class ChainRecord:
    """What an optimizer chain was built from (read by ``optlib.describe``).

    Attributes:
      optimizer: the public optimizer function that built it (``"adamw"``), or ``None``.
      arguments: that call's arguments, by name.
      links: the names of the chain's links, in order.
    """

    optimizer: str | None
    arguments: dict[str, Any]
    links: tuple[str, ...]


_RECORDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def chain_record(tx: Any) -> ChainRecord | None:
    """The ``ChainRecord`` of an optimizer built by ``named_chain``, else ``None``."""
    update = getattr(tx, "update", None)
    try:
        return _RECORDS.get(update)
    except TypeError:  # not weak-referenceable: not ours
        return None


_P = ParamSpec("_P")
_T = TypeVar("_T")


def recorded_optimizer(optimizer: Callable[_P, _T]) -> Callable[_P, _T]:
    """Decorates a public optimizer function: the chain it returns records its name and the
    arguments of the call (defaults filled in), which ``optlib.describe`` prints.

    An optimizer built from another (``adamw`` calls ``adam``) is recorded under the outer
    one: the outer call finishes last. The wrapper keeps the function's name, docstring and
    signature (no ``__wrapped__``: the public object is the optimizer itself).
    """
    signature = inspect.signature(optimizer)

    @functools.wraps(optimizer)
    def build(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        tx = optimizer(*args, **kwargs)
        record = chain_record(tx)
        if record is not None:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            _RECORDS[tx.update] = dataclasses.replace(  # type: ignore[attr-defined]
                record, optimizer=optimizer.__name__, arguments=dict(bound.arguments)
            )
        return tx

    del build.__wrapped__
    build.__signature__ = signature  # type: ignore[attr-defined]
    return build


def _leaf_dtype(leaf: Any) -> np.dtype | None:
    """The dtype of an array leaf, that of the array a Python scalar becomes, else ``None``."""
    dtype = getattr(leaf, "dtype", None)
    if dtype is not None:
        return np.dtype(dtype)
    if isinstance(leaf, (bool, int, float, complex)):
        return np.dtype(jnp.asarray(leaf).dtype)
    return None


def _is_complex(dtype: np.dtype | None) -> bool:
    return dtype is not None and np.issubdtype(dtype, np.complexfloating)


def check_parameter_leaves(params: optax.Params, complex_unsupported: str | None = None) -> None:
    """Raises ``TypeError`` naming the first leaf that the optimizer cannot optimize.

    Integer and bool leaves are refused as torch refuses them; complex leaves only where
    ``complex_unsupported`` (the reason, naming the reference) is given.
    """
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        dtype = _leaf_dtype(leaf)
        name = jax.tree_util.keystr(path) or "params"
        if dtype is None or jnp.issubdtype(dtype, jnp.inexact):
            if complex_unsupported is not None and _is_complex(dtype):
                raise TypeError(
                    f"parameter {name} is complex ({dtype}): "
                    f"{complex_unsupported}; optimize its real and imaginary parts as two real "
                    "parameters instead"
                )
            continue
        raise TypeError(
            f"parameter {name} has dtype {dtype}: optimizers need "
            "floating-point (or complex) parameters (torch: 'Only Tensors of floating point "
            "and complex dtype can require gradients'); leave it out of the optimized tree "
            "(optax.masked, optlib.param_groups) or cast it to a float dtype"
        )


def _as_array(leaf: Any) -> Any:
    """A Python scalar leaf as a strongly typed 0-d array (optax accepts them too)."""
    if isinstance(leaf, (float, complex)):
        return jnp.asarray(leaf, dtype=jnp.result_type(leaf))
    return leaf


def _real_view(leaf: Any) -> Any:
    """A complex leaf as the real ``(..., 2)`` array of ``torch.view_as_real``."""
    leaf = _as_array(leaf)
    if leaf is not None and _is_complex(_leaf_dtype(leaf)):
        return jnp.stack([jnp.real(leaf), jnp.imag(leaf)], axis=-1)
    return leaf


def _from_real_view(original: Any, update: Any) -> Any:
    if _is_complex(_leaf_dtype(original)):
        return jax.lax.complex(update[..., 0], update[..., 1])
    return update


def _needs_view(tree: Any) -> bool:
    """Whether ``tree`` has a Python scalar or complex leaf (else it passes through as is,
    which keeps tracing large trees as cheap as a plain ``optax.named_chain``)."""
    return any(
        isinstance(leaf, (float, complex)) or _is_complex(_leaf_dtype(leaf))
        for leaf in jax.tree.leaves(tree)
    )


def _viewed(tree: Any) -> Any:
    return jax.tree.map(_real_view, tree) if tree is not None and _needs_view(tree) else tree


def named_chain(
    *links: Link | None, complex_unsupported: str | None = None
) -> optax.GradientTransformationExtraArgs:
    """``optax.named_chain`` of the links that are not ``None``, with a plain ``dict`` state.

    optax's ``named_chain`` already does the chaining (and passes extra arguments such as
    ``value`` to every link); this drops the links an option switched off, and gives the
    state as a ``dict`` (same keys, same order) instead of optax's ``OrderedDict``, which
    ``flax.serialization`` (msgpack checkpoints, ``TrainState``) cannot serialise. The
    link names are recorded for ``optlib.describe`` (the optimizer and its arguments too, by
    ``recorded_optimizer``).

    Parameter leaves are checked at ``init`` (``check_parameter_leaves``). A complex leaf
    (``complex_unsupported=None``) goes through the chain as torch's ``view_as_real(p)``, a
    real array with a last axis ``(real, imag)``, and its update comes back complex: the
    arithmetic of torch's Adam, AdamW, Adagrad, RMSprop, Adadelta, NAdam, RAdam, Adamax,
    Rprop and SGD on complex parameters. The gradient is torch's ``p.grad``; note that
    ``jax.grad`` of a real loss gives its complex conjugate.

    Args:
      *links: ``(name, transform)`` pairs, or ``None`` for a link switched off.
      complex_unsupported: the reason the reference does not optimize complex parameters as
        pairs of reals; ``init`` then raises ``TypeError`` for a complex leaf.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.
    """
    kept = [link for link in links if link is not None]
    chained = optax.named_chain(*kept)

    def init_fn(params):
        check_parameter_leaves(params, complex_unsupported)
        return dict(chained.init(_viewed(params)))

    def update_fn(updates, state, params=None, **extra_args):
        if not _needs_view(updates):
            updates, state = chained.update(updates, state, _viewed(params), **extra_args)
            return updates, dict(state)
        original = updates
        updates, state = chained.update(_viewed(updates), state, _viewed(params), **extra_args)
        return jax.tree.map(_from_real_view, original, updates), dict(state)

    _RECORDS[update_fn] = ChainRecord(None, {}, tuple(name for name, _ in kept))
    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def maximize_link(maximize: bool) -> Link | None:
    """torch's ``maximize=True`` (negate the gradient first), or no link."""
    return ("maximize", negate_gradients()) if check_bool("maximize", maximize) else None


def weight_decay_links(
    weight_decay: float,
    decoupled_weight_decay: bool,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> tuple[Link | None, Link | None]:
    """``(coupled, decoupled)`` weight-decay links; the kind not in use is ``None``.

    The coupled link goes before the statistics (torch's ``grad + weight_decay * p``), the
    decoupled one right before the learning rate (torch's ``p * (1 - lr * weight_decay)``).
    With ``statistics_dtype=None`` (or bf16/fp16, see ``rounds_like_torch``) the decoupled
    decay is the learning-rate link's
    (``learning_rate_link(..., decoupled_weight_decay=...)``: torch's rounding of the
    parameter), so there is no decoupled link.
    """
    if check_bool("decoupled_weight_decay", decoupled_weight_decay):
        if rounds_like_torch(statistics_dtype):
            check_non_negative("weight_decay", weight_decay)
            return None, None
        return None, ("decoupled_weight_decay", add_decoupled_weight_decay(weight_decay))
    return ("weight_decay", add_weight_decay(weight_decay)), None


def learning_rate_link(
    learning_rate: LearningRate,
    *,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
    rate_rounded: bool = False,
    decoupled_weight_decay: Any = None,
) -> Link:
    """The last link: multiply by ``-lr`` (see ``apply_learning_rate``).

    With ``statistics_dtype=None`` (torch's low-precision storage; or bf16/fp16, see
    ``rounds_like_torch``) it is
    ``torch_parameter_step``: the rate rounded to the parameters' dtype where torch's step is
    ``p.add_(u, alpha=-lr)`` (``rate_rounded``), and the decoupled decay, if any, applied to
    the parameter as torch's ``p.mul_(1 - lr * wd)`` rounds it.
    """
    if rounds_like_torch(statistics_dtype) and (rate_rounded or decoupled_weight_decay is not None):
        return (
            "learning_rate",
            torch_parameter_step(
                learning_rate,
                rate_rounded=rate_rounded,
                decoupled_weight_decay=decoupled_weight_decay,
            ),
        )
    return ("learning_rate", apply_learning_rate(learning_rate))


def momentum_from(learning_rate: LearningRate, momentum: Any) -> Any:
    """The momentum (or ``beta1``) an optimizer uses, given its ``learning_rate``.

    torch's ``OneCycleLR`` / ``CyclicLR`` with ``cycle_momentum=True`` overwrite the
    optimizer's ``momentum`` (SGD, RMSprop) or ``betas[0]`` (Adam family) at every scheduler
    step. optlib's equivalent is a ``MomentumSchedule`` passed as ``learning_rate``: its
    ``.momentum`` schedule then replaces the constructor's value, exactly as in torch.

    Args:
      learning_rate: the optimizer's ``learning_rate``.
      momentum: the constructor's momentum / ``beta1`` (float or schedule).

    Returns:
      ``learning_rate.momentum`` for a ``MomentumSchedule``, else ``momentum``.
    """
    scheduled = resolve_learning_rate(learning_rate).momentum
    return momentum if scheduled is None else scheduled


def cycled_betas(learning_rate: LearningRate, betas) -> tuple:
    """``betas`` checked as torch does, with ``betas[0]`` from a ``MomentumSchedule``."""
    beta1, beta2 = check_betas(betas)
    return momentum_from(learning_rate, beta1), beta2


def reject_momentum_schedule(learning_rate: LearningRate, name: str) -> None:
    """torch's ``cycle_momentum`` raises for optimizers with neither momentum nor betas."""
    if resolve_learning_rate(learning_rate).momentum is not None:
        raise ValueError(
            f"{name} has no momentum or beta1 for a momentum-cycling learning_rate to drive "
            "(torch: 'optimizer must support momentum or beta1 with `cycle_momentum` option "
            "enabled'); build the schedule with cycle_momentum=False or pass "
            "learning_rate.learning_rate"
        )
