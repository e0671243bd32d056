"""The ZORB algorithm in pure JAX: layers, networks, the least-squares solvers, the fit, its
metrics and the network file format. Nothing here touches MLflow, Hydra or the process; the
native kernels (``zorb.kernels``) are an accelerator it calls, never a requirement.

Importing it turns on JAX's 64-bit mode: the algorithm works in float64 unless a network is
built with ``dtype="float32"``."""

import jax

jax.config.update("jax_enable_x64", True)
