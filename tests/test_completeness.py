"""Every exported optimizer and registered scheduler is tested everywhere, or this fails.

The lists come from one place each: ``optlib.optimizers.__all__`` and
``optlib.scheduler_names()``. A new optimizer needs a parity row (``parity.PARITY_MODULES``
naming the module whose table compares it with its reference), a property-suite row
(``reliability_cases.OPTIMIZER_CASES``: validation-free suites such as non-finite, low
precision, no retrace, differentiable), a validation row (tests/test_validation_properties.py
checks its own table), rows in the checkpoint and sharding suites, and ``@recorded_optimizer``
(``optlib.describe`` names it). A new scheduler needs an
example configuration in ``reliability_cases.schedule_kwargs``, which the property, validation
and long-horizon suites read.
"""

from __future__ import annotations

import pathlib
import re

import pytest
from parity import PARITY_MODULES
from reliability_cases import OPTIMIZER_CASES, schedule_kwargs

import optlib

TESTS = pathlib.Path(__file__).parent
EXAMPLES = TESTS.parent / "examples"
OPTIMIZERS = list(optlib.optimizers.__all__)


def _builds(path: pathlib.Path, name: str) -> bool:
    return re.search(rf"\boptlib\.{name}\b(?!_)", path.read_text()) is not None


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_exported_optimizer_has_a_parity_table(name):
    assert name in PARITY_MODULES, f"optlib.{name}: no parity row in tests/parity.py"
    module = TESTS / f"{PARITY_MODULES[name]}.py"
    assert module.exists(), f"optlib.{name}: {module.name} does not exist"
    assert _builds(module, name), f"optlib.{name}: {module.name} never builds it"


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_exported_optimizer_has_a_property_suite_row(name):
    # a case may wrap the optimizer (Muon on the matrices only): ``__wrapped__`` names it
    factories = {getattr(case.factory, "__wrapped__", case.factory) for case in OPTIMIZER_CASES}
    assert getattr(optlib, name) in factories, (
        f"optlib.{name}: no OptimizerCase in tests/reliability_cases.py OPTIMIZER_CASES "
        "(non-finite, low-precision, no-retrace and differentiable suites)"
    )


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_exported_optimizer_is_checkpointed_and_sharded(name):
    assert _builds(TESTS / "test_checkpoints.py", name), (
        f"optlib.{name}: no row in tests/test_checkpoints.py"
    )
    sharded = _builds(TESTS / "test_sharding.py", name) or _builds(
        EXAMPLES / "sharded_train.py", name
    )
    assert sharded, f"optlib.{name}: no row in examples/sharded_train.py OPTIMIZERS"


@pytest.mark.parametrize("name", optlib.scheduler_names())
def test_every_registered_scheduler_has_an_example_configuration(name):
    try:
        schedule_kwargs(name)
    except KeyError:
        pytest.fail(f"{name}: no configuration in tests/reliability_cases.py schedule_kwargs")


def test_no_test_module_imports_another():
    for path in TESTS.glob("test_*.py"):
        for line in path.read_text().splitlines():
            words = line.split()
            imported = words[1] if words[:1] in (["import"], ["from"]) and len(words) > 1 else ""
            assert not imported.startswith("test_"), f"{path.name} imports {imported}"


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_exported_optimizer_records_its_recipe_for_describe(name):
    # the required arguments of the references without a default (StableAdamW's lr)
    required = {"stable_adamw": {"learning_rate": 1e-3}}
    text = optlib.describe(getattr(optlib, name)(**required.get(name, {})))
    assert text.startswith(f"optimizer: optlib.{name}("), (
        f"optlib.{name}: describe does not name it; decorate it with @recorded_optimizer\n{text}"
    )
