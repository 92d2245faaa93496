"""Shared fixtures. The reference packages (torch, transformers) are the parity oracle."""

from __future__ import annotations

import os
import sys

import jax
import pytest

sys.path.insert(0, os.path.dirname(__file__))  # lets tests import the `parity` harness


@pytest.fixture
def x64():
    """Runs the test body with ``jax_enable_x64`` on, restoring the previous setting after."""
    with jax.enable_x64(True):
        yield
