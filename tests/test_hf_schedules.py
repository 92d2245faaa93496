"""Parity of every step-based Hugging Face schedule with ``transformers.get_scheduler``.

Each row of ``CONFIGS`` is one reference case: a ``SchedulerType`` name and the arguments of
``get_scheduler``. The same arguments build HF's ``LambdaLR`` (driven by a real torch loop) and
optlib's schedule (one jitted vmap), and the traces are compared step by step, past
``num_training_steps``. Randomized rows come from a seeded generator.
"""

from __future__ import annotations

import inspect
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from parity import RTOL_F64, assert_trace_close, make_torch_optimizer, optlib_trace, torch_trace
from reliability_cases import HF_NAMES

import optlib

transformers = pytest.importorskip("transformers", reason="HF parity needs transformers")
from transformers import optimization as hf_optimization  # noqa: E402

INT32_MAX = 2**31 - 1
FUNCTIONS = {  # HF SchedulerType -> the function name shared by transformers and optlib
    name: hf_optimization.TYPE_TO_SCHEDULER_FUNCTION[transformers.SchedulerType(name)].__name__
    for name in HF_NAMES
}


def test_the_registry_has_every_step_based_scheduler_type_of_transformers():
    metric_driven = {"reduce_lr_on_plateau", "greedy"}
    assert set(HF_NAMES) == {kind.value for kind in transformers.SchedulerType} - metric_driven


# --------------------------------------------------------------------------- configurations


def _specific(name: str, rng: np.random.Generator, lr: float, warmup: int, total: int) -> dict:
    """Random ``scheduler_specific_kwargs`` for ``name`` (HF's own keywords)."""
    cycles = float(rng.choice([0.5, 1.0, 1.5, round(float(rng.uniform(0.2, 2.0)), 3)]))
    if name == "cosine":
        return {"num_cycles": cycles}
    if name == "cosine_with_restarts":
        return {"num_cycles": int(rng.integers(1, 6))}
    if name == "polynomial":
        return {"lr_end": lr * float(rng.uniform(0.0, 0.5)), "power": float(rng.uniform(0.5, 3.0))}
    if name == "inverse_sqrt":
        return {} if rng.random() < 0.5 else {"timescale": int(rng.integers(1, 400))}
    if name in ("cosine_with_min_lr", "cosine_warmup_with_min_lr"):
        floor = float(rng.uniform(0.0, 0.5))
        kwargs = {"num_cycles": cycles}
        kwargs.update({"min_lr": lr * floor} if rng.random() < 0.5 else {"min_lr_rate": floor})
        if name == "cosine_warmup_with_min_lr" and rng.random() < 0.5:
            kwargs["warmup_lr_rate"] = float(rng.uniform(0.0, 0.5))
        return kwargs
    if name == "warmup_stable_decay":
        kwargs = {
            "num_decay_steps": int(rng.integers(0, max(1, total - warmup) + 1)),
            "warmup_type": str(rng.choice(["linear", "cosine", "1-sqrt"])),
            "decay_type": str(rng.choice(["linear", "cosine", "1-sqrt"])),
            "min_lr_ratio": float(rng.choice([0.0, rng.uniform(0.0, 0.3)])),
            "num_cycles": cycles,
        }
        if rng.random() < 0.3:
            kwargs["num_stable_steps"] = int(rng.integers(0, 100))
        return kwargs
    return {}


PER_NAME = 3  # random configurations per SchedulerType


def _random_configs(per_name: int = PER_NAME, seed: int = 1234) -> list[dict]:
    rng = np.random.default_rng(seed)
    configs = []
    for name in HF_NAMES:
        for _ in range(per_name):
            lr = float(10.0 ** rng.uniform(-5, 0))
            warmup = int(rng.choice([0, 1, rng.integers(2, 80)]))
            total = warmup + int(rng.integers(1, 260))
            specific = _specific(name, rng, lr, warmup, total)
            if name == "warmup_stable_decay" and "num_stable_steps" in specific:
                total = None  # HF's other calling form: stable steps instead of the total
            configs.append(dict(name=name, lr=lr, warmup=warmup, total=total, specific=specific))
    return configs


EDGE_CONFIGS = [  # hand-picked corners HF handles in its own way
    dict(name="linear", lr=0.1, warmup=50, total=50, specific={}),  # T == w
    dict(name="linear", lr=0.1, warmup=60, total=40, specific={}),  # T < w: 0 after warm-up
    dict(name="cosine", lr=0.1, warmup=0, total=1, specific={"num_cycles": 0.5}),
    dict(name="cosine", lr=1e-3, warmup=10, total=100, specific={"num_cycles": 3.25}),
    dict(name="cosine_with_restarts", lr=0.1, warmup=0, total=300, specific={"num_cycles": 7}),
    dict(name="cosine_with_restarts", lr=0.1, warmup=5, total=125, specific={"num_cycles": 3}),
    dict(name="polynomial", lr=0.1, warmup=0, total=30, specific={"power": 0.0}),
    dict(name="polynomial", lr=0.1, warmup=40, total=20, specific={}),  # T < w
    dict(name="inverse_sqrt", lr=0.1, warmup=0, total=None, specific={}),  # timescale 10_000
    dict(
        name="cosine_warmup_with_min_lr",
        lr=0.1,
        warmup=1,
        total=50,
        specific={"min_lr_rate": 0.1, "warmup_lr_rate": 0.2},
    ),
    dict(name="cosine_warmup_with_min_lr", lr=0.1, warmup=0, total=50, specific={"min_lr": 0.01}),
    dict(
        name="warmup_stable_decay",
        lr=0.1,
        warmup=0,
        total=100,
        specific={"num_decay_steps": 0, "min_lr_ratio": 0.1},
    ),
    dict(
        name="warmup_stable_decay",
        lr=0.1,
        warmup=20,
        total=100,
        specific={"num_decay_steps": 30, "decay_type": "cosine", "num_cycles": 1.75},
    ),
]
CONFIGS = _random_configs() + EDGE_CONFIGS


def _config_id(config: dict) -> str:
    return f"{config['name']}-w{config['warmup']}-T{config['total']}-{config['specific']}"


def _steps(config: dict) -> int:
    total = config["total"] if config["total"] is not None else config["warmup"] + 200
    return max(300, total + 100)


def _hf_trace(config: dict, steps: int) -> np.ndarray:
    def build(optimizer):
        return transformers.get_scheduler(
            config["name"],
            optimizer,
            num_warmup_steps=config["warmup"],
            num_training_steps=config["total"],
            scheduler_specific_kwargs=dict(config["specific"]),
        )

    return torch_trace(build, config["lr"], steps)


def _optlib_schedule(config: dict):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # wsd with both totals warns, as in HF
        return optlib.get_scheduler(
            config["name"],
            learning_rate=config["lr"],
            num_warmup_steps=config["warmup"],
            num_training_steps=config["total"],
            scheduler_specific_kwargs=dict(config["specific"]),
        )


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("config", CONFIGS, ids=_config_id)
def test_float32_trace_matches_transformers_get_scheduler(config):
    steps = _steps(config)
    reference = _hf_trace(config, steps)
    schedule = _optlib_schedule(config)
    assert schedule(jnp.int32(3)).dtype == jnp.float32
    assert_trace_close(optlib_trace(schedule, steps), reference, label=_config_id(config))


X64_CONFIGS = CONFIGS[: len(HF_NAMES) * PER_NAME : PER_NAME]  # first random row of every name


@pytest.mark.parametrize("config", X64_CONFIGS, ids=_config_id)
def test_float64_trace_matches_transformers_to_1e_12(config, x64):
    steps = _steps(config)
    reference = _hf_trace(config, steps)
    schedule = _optlib_schedule(config)
    assert schedule(3).dtype == jnp.float64
    assert_trace_close(
        optlib_trace(schedule, steps),
        reference,
        rtol=RTOL_F64,
        atol_peak=1e-15,
        label=_config_id(config),
    )


LONG_HORIZON = INT32_MAX - 7  # num_training_steps near 2**31
LONG_CONFIGS = [
    dict(name="linear", lr=3e-4, warmup=1000, total=LONG_HORIZON, specific={}),
    dict(name="cosine", lr=3e-4, warmup=1000, total=LONG_HORIZON, specific={}),
    dict(name="cosine", lr=3e-4, warmup=0, total=LONG_HORIZON // 3, specific={"num_cycles": 1.5}),
    dict(
        name="cosine_with_restarts",
        lr=3e-4,
        warmup=10,
        total=LONG_HORIZON,
        specific={"num_cycles": 4},
    ),
    dict(
        name="polynomial",
        lr=3e-4,
        warmup=1000,
        total=LONG_HORIZON,
        specific={"lr_end": 1e-6, "power": 2.0},
    ),
    dict(name="inverse_sqrt", lr=3e-4, warmup=1000, total=None, specific={}),
    dict(
        name="cosine_with_min_lr",
        lr=3e-4,
        warmup=1000,
        total=LONG_HORIZON,
        specific={"min_lr_rate": 0.1},
    ),
    dict(
        name="cosine_warmup_with_min_lr",
        lr=3e-4,
        warmup=0,
        total=LONG_HORIZON,
        specific={"min_lr": 3e-5},
    ),
    dict(
        name="warmup_stable_decay",
        lr=3e-4,
        warmup=1000,
        total=LONG_HORIZON,
        specific={"num_decay_steps": LONG_HORIZON // 2, "decay_type": "linear"},
    ),
    dict(
        name="warmup_stable_decay",
        lr=3e-4,
        warmup=1000,
        total=LONG_HORIZON,
        specific={"num_decay_steps": LONG_HORIZON - 2000, "decay_type": "1-sqrt"},
    ),
]


def _long_horizon_steps(config: dict) -> np.ndarray:
    total = config["total"] or INT32_MAX
    marks = [0, 1, config["warmup"], 2**20 + 3, 2**30 + 1, total // 3, total // 2, total - 1]
    near_end = list(range(total - 40, min(total + 8, INT32_MAX) + 1))
    return np.unique(np.clip(np.array(marks + near_end + [INT32_MAX], np.int64), 0, INT32_MAX))


@pytest.mark.parametrize("config", LONG_CONFIGS, ids=_config_id)
def test_long_horizon_near_2_to_the_31_matches_float64_formula(config):
    steps = _long_horizon_steps(config)
    optimizer = make_torch_optimizer(config["lr"])
    scheduler = transformers.get_scheduler(
        config["name"],
        optimizer,
        num_warmup_steps=config["warmup"],
        num_training_steps=config["total"],
        scheduler_specific_kwargs=dict(config["specific"]),
    )
    # HF's own lambda in Python float64, times the base lr, as LambdaLR computes it.
    reference = np.array([config["lr"] * scheduler.lr_lambdas[0](int(k)) for k in steps])
    schedule = _optlib_schedule(config)
    ours = np.asarray(jax.jit(jax.vmap(schedule))(jnp.asarray(steps, jnp.int32)), np.float64)
    assert_trace_close(ours, reference, label=_config_id(config))


# --------------------------------------------------------------------------- names and calling


@pytest.mark.parametrize("name", HF_NAMES)
def test_hf_function_names_and_keywords_match_transformers(name):
    """Same function name, same keywords and defaults (minus optimizer/last_epoch)."""
    function = FUNCTIONS[name]
    theirs = inspect.signature(getattr(hf_optimization, function)).parameters
    ours = dict(inspect.signature(getattr(optlib, function)).parameters)
    if "last_epoch" in theirs:  # HF's keyword, accepted with its meaning
        assert ours.pop("last_epoch").default == -1, name
    expected = [
        (p.name, p.default) for p in theirs.values() if p.name not in ("optimizer", "last_epoch")
    ]
    assert next(iter(ours)) == "learning_rate"
    assert [(p.name, p.default) for p in list(ours.values())[1:]] == expected
    entry = optlib._registry.scheduler_entry(name)
    assert (entry.family, entry.reference) == ("hf", f"transformers.{function}")


@pytest.mark.parametrize("name", HF_NAMES)
@pytest.mark.parametrize("missing", ["num_warmup_steps", "num_training_steps"])
def test_get_scheduler_missing_argument_errors_like_transformers(name, missing):
    arguments = {"num_warmup_steps": 10, "num_training_steps": 100, missing: None}
    specific = {
        "polynomial": {},
        "cosine_with_min_lr": {"min_lr_rate": 0.1},
        "cosine_warmup_with_min_lr": {"min_lr_rate": 0.1},
        "warmup_stable_decay": {"num_decay_steps": 20},
    }.get(name, {})
    optimizer = make_torch_optimizer(0.1)
    try:
        transformers.get_scheduler(
            name, optimizer, scheduler_specific_kwargs=dict(specific), **arguments
        )
    except ValueError as error:
        message = str(error)
        fragment = message[message.index("requires") :] if "requires" in message else message
        with pytest.raises(ValueError, match=fragment.replace("`", ".").split(",")[0]):
            optlib.get_scheduler(
                name, learning_rate=0.1, scheduler_specific_kwargs=specific, **arguments
            )
    else:  # HF builds it (the argument is not needed): so does optlib
        optlib.get_scheduler(
            name, learning_rate=0.1, scheduler_specific_kwargs=specific, **arguments
        )


@pytest.mark.parametrize("name", HF_NAMES)
def test_get_scheduler_rejects_unknown_keyword_naming_it(name):
    with pytest.raises(TypeError, match="bogus"):
        optlib.get_scheduler(
            name,
            learning_rate=0.1,
            num_warmup_steps=10,
            num_training_steps=100,
            scheduler_specific_kwargs={"bogus": 1},
        )


def test_get_scheduler_accepts_hf_scheduler_type_enum_and_flat_keywords():
    schedule = optlib.get_scheduler(
        transformers.SchedulerType.COSINE_WITH_RESTARTS,
        learning_rate=0.1,
        num_warmup_steps=5,
        num_training_steps=60,
        num_cycles=2,
    )
    reference = torch_trace(
        lambda opt: hf_optimization.get_cosine_with_hard_restarts_schedule_with_warmup(
            opt, 5, 60, 2
        ),
        0.1,
        80,
    )
    assert_trace_close(optlib_trace(schedule, 80), reference)


def test_learning_rate_may_be_a_schedule_multiplied_like_chained_lambdas():
    base = optlib.get_linear_schedule_with_warmup(0.2, 0, 100)
    schedule = optlib.get_cosine_schedule_with_warmup(base, 10, 100)
    product = optlib_trace(base, 120) * optlib_trace(
        optlib.get_cosine_schedule_with_warmup(1.0, 10, 100), 120
    )
    np.testing.assert_allclose(optlib_trace(schedule, 120), product, rtol=1e-6, atol=1e-9)


# --------------------------------------------------------------------------- invalid arguments

# (SchedulerType, warmup, total, specific, parameter our message names): HF raises too
HF_RAISES = [
    ("polynomial", 10, 100, {"lr_end": 0.1}, "lr_end"),  # lr_end >= lr (lr = 0.1)
    ("polynomial", 10, 100, {"lr_end": 0.5}, "lr_end"),
    ("cosine_with_min_lr", 10, 100, {"min_lr": 0.01, "min_lr_rate": 0.1}, "min_lr_rate"),
    ("cosine_with_min_lr", 10, 100, {}, "min_lr_rate"),
    ("cosine_warmup_with_min_lr", 10, 100, {"min_lr": 0.01, "min_lr_rate": 0.1}, "min_lr_rate"),
    ("warmup_stable_decay", 10, None, {"num_decay_steps": 10}, "num_stable_steps"),
    ("warmup_stable_decay", 10, 100, {"num_decay_steps": 10, "warmup_type": "foo"}, "warmup_type"),
    ("warmup_stable_decay", 10, 100, {"num_decay_steps": 10, "decay_type": "exp"}, "decay_type"),
]


@pytest.mark.parametrize("name,warmup,total,specific,parameter", HF_RAISES)
def test_invalid_arguments_raise_value_error_where_transformers_does(
    name, warmup, total, specific, parameter
):
    optimizer = make_torch_optimizer(0.1)
    with pytest.raises(ValueError):
        transformers.get_scheduler(name, optimizer, warmup, total, dict(specific))
    with pytest.raises(ValueError, match=parameter):
        optlib.get_scheduler(
            name,
            learning_rate=0.1,
            num_warmup_steps=warmup,
            num_training_steps=total,
            scheduler_specific_kwargs=specific,
        )


OPTLIB_RAISES = [  # inputs HF accepts but that fail later or give nonsense: raised at construction
    (optlib.get_linear_schedule_with_warmup, (0.1, -1, 100), {}, ValueError, "num_warmup_steps"),
    (optlib.get_cosine_schedule_with_warmup, (0.1, 10, -5), {}, ValueError, "num_training_steps"),
    (
        optlib.get_linear_schedule_with_warmup,
        (0.1, 10, 2**31),
        {},
        ValueError,
        "num_training_steps",
    ),
    (optlib.get_linear_schedule_with_warmup, (0.1, 2.5, 100), {}, TypeError, "num_warmup_steps"),
    (optlib.get_constant_schedule, (-0.1,), {}, ValueError, "learning_rate"),
    (
        optlib.get_polynomial_decay_schedule_with_warmup,
        (0.1, 10, 10),
        {},
        ValueError,
        "num_training_steps",
    ),
    (
        optlib.get_polynomial_decay_schedule_with_warmup,
        (0.1, 10, 100),
        {"power": -1.0},
        ValueError,
        "power",
    ),
    (
        optlib.get_polynomial_decay_schedule_with_warmup,
        (0.1, 10, 100),
        {"lr_end": -1e-3},
        ValueError,
        "lr_end",
    ),
    (optlib.get_inverse_sqrt_schedule, (0.1, 10), {"timescale": 0}, ValueError, "timescale"),
    (
        optlib.get_cosine_with_min_lr_schedule_with_warmup,
        (0.1, 10, 100),
        {"min_lr": 0.2},
        ValueError,
        "min_lr",
    ),
    (
        optlib.get_cosine_with_min_lr_schedule_with_warmup,
        (0.0, 10, 100),
        {"min_lr": 0.0},
        ValueError,
        "learning_rate",
    ),
    (
        optlib.get_cosine_with_min_lr_schedule_with_warmup,
        (0.1, 10, 100),
        {"min_lr_rate": 1.5},
        ValueError,
        "min_lr_rate",
    ),
    (
        optlib.get_cosine_with_min_lr_schedule_with_warmup_lr_rate,
        (0.1, 10, 100),
        {"min_lr_rate": 0.1, "warmup_lr_rate": -0.5},
        ValueError,
        "warmup_lr_rate",
    ),
    (
        optlib.get_cosine_with_hard_restarts_schedule_with_warmup,
        (0.1, 10, 100),
        {"num_cycles": -2},
        ValueError,
        "num_cycles",
    ),
    (
        optlib.get_wsd_schedule,
        (0.1, 10, 100),
        {"num_training_steps": 50},
        ValueError,
        "num_decay_steps",
    ),
    (
        optlib.get_wsd_schedule,
        (0.1, 10, 20),
        {"num_stable_steps": 5, "min_lr_ratio": 2.0},
        ValueError,
        "min_lr_ratio",
    ),
    (
        optlib.get_wsd_schedule,
        (0.1, 10, 20),
        {"num_stable_steps": 5, "warmup_type": "foo"},
        ValueError,
        "warmup_type",
    ),
]


@pytest.mark.parametrize(
    "factory,args,kwargs,error,fragment",
    OPTLIB_RAISES,
    ids=[f"{r[0].__name__}-{r[4]}-{i}" for i, r in enumerate(OPTLIB_RAISES)],
)
def test_invalid_arguments_raise_at_construction_naming_the_parameter(
    factory, args, kwargs, error, fragment
):
    with pytest.raises(error, match=fragment):
        factory(*args, **kwargs)


def test_wsd_with_both_totals_warns_and_uses_stable_steps_like_transformers():
    with pytest.warns(UserWarning, match="num_stable_steps will be used"):
        schedule = optlib.get_wsd_schedule(0.1, 10, 20, num_training_steps=1000, num_stable_steps=5)
    reference = torch_trace(
        lambda opt: hf_optimization.get_wsd_schedule(
            opt, 10, 20, num_training_steps=1000, num_stable_steps=5
        ),
        0.1,
        60,
    )
    assert_trace_close(optlib_trace(schedule, 60), reference)


def test_schedules_trace_once_under_jit_and_keep_batch_shape():
    schedule = optlib.get_wsd_schedule(1.0, 10, 20, num_training_steps=50)
    traces = []

    def counted(step):
        traces.append(None)
        return schedule(step)

    jitted = jax.jit(counted)
    values = [float(jitted(jnp.int32(k))) for k in range(5)]
    assert len(traces) == 1 and values[0] == 0.0
    assert jax.vmap(schedule)(jnp.arange(6).reshape(2, 3)).shape == (2, 3)
