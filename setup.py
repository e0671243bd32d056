"""Builds zorb's one native piece, the extension ``zorb.kernels._native``: XLA FFI handlers
for the fit's products, solves, inverses and conv passes, one ``.cc`` file per kernel family
beside its Python wrapper (``products``, ``solve``, ``squash``, ``conv``), the worker pool
they share (``pool``) and the Python module (``module``). Everything else is in
pyproject.toml. The handlers compile against the XLA FFI headers that jaxlib ships, so jaxlib
is a build requirement. If the compile fails the install still succeeds and zorb runs every
kernel's pure-JAX equivalent instead (``zorb.kernels.native.NATIVE`` is False)."""

import importlib.util
import os

from setuptools import Extension, setup

KERNELS = ["pool", "products", "solve", "squash", "conv", "module"]


def jaxlib_include() -> str:
    spec = importlib.util.find_spec("jaxlib")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("building zorb needs jaxlib (its XLA FFI headers): pip install jaxlib")
    return os.path.join(list(spec.submodule_search_locations)[0], "include")


setup(ext_modules=[Extension(
    "zorb.kernels._native", sources=[f"zorb/kernels/{name}.cc" for name in KERNELS],
    depends=["zorb/kernels/pool.h", "zorb/kernels/kernels.h"], include_dirs=[jaxlib_include()], language="c++",
    extra_compile_args=["-std=c++17", "-O3", "-ffp-contract=off", "-fno-trapping-math", "-Wno-attributes", "-Wno-return-type"],
    extra_link_args=["-pthread"], optional=True)])
