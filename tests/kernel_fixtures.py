"""Helpers the kernel tests share: what a jitted function lowers to, and code in a fresh
interpreter (its own OpenBLAS state and environment)."""

import os
import subprocess
import sys

import jax


def custom_calls(fn, *args) -> int:
    """How many of zorb's native kernels ``jax.jit(fn)(*args)`` calls on this CPU."""
    return jax.jit(fn).lower(*args).compile().as_text().count('custom_call_target="zorb_')


def run_python(code: str, timeout: float = 120, **env) -> list[str]:
    """``code`` in a fresh interpreter with ``env`` added to the environment; its printed words."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=timeout,
                          env={**os.environ, **env}).stdout.split()
