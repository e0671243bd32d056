"""Test-wide settings: float64 on, and strict dtype promotion so a stray float32 or an
implicit int/float mix fails loudly instead of silently changing precision."""

import jax
import pytest

import zorb.core  # noqa: F401  (turns on jax_enable_x64)

jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(1234)
