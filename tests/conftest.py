"""Shared fixtures. The reference packages (torch, transformers) are the parity oracle."""

from __future__ import annotations

import os
import sys

# Eight CPU devices for the sharding tests (a 2x4 mesh). XLA reads the flag when jax
# initialises its CPU backend, so it must be set before jax is imported; single-device code
# is unaffected (jit still runs on device 0), and the suite measured no slower with it.
_DEVICES_FLAG = "--xla_force_host_platform_device_count"
if _DEVICES_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_DEVICES_FLAG}=8".strip()

import jax  # noqa: E402  (after XLA_FLAGS)
import pytest  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))  # lets tests import the `parity` harness


@pytest.fixture
def x64():
    """Runs the test body with ``jax_enable_x64`` on, restoring the previous setting after."""
    with jax.enable_x64(True):
        yield
