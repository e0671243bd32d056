"""Test-wide settings: float64 on, and strict dtype promotion so a stray float32 or an
implicit int/float mix fails loudly instead of silently changing precision."""

import importlib.util

import jax
import pytest
from data_fixtures import PREPARE_DATA

import zorb.core  # noqa: F401  (turns on jax_enable_x64)

jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(1234)


@pytest.fixture(scope="module")
def prepare_data():
    """``scripts/prepare_data.py`` loaded as a module (it is a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("prepare_data", PREPARE_DATA)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
