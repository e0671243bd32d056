"""Builds zorb's one native piece, ``zorb.kernels._blas`` (XLA FFI handlers that call BLAS; see
zorb/blas.py). Everything else is in pyproject.toml. The handlers compile against the XLA FFI
headers that jaxlib ships, so jaxlib is a build requirement. If the compile fails the install
still succeeds and zorb runs its products through XLA instead (``zorb.kernels.blas.NATIVE`` is False)."""

import importlib.util
import os

from setuptools import Extension, setup


def jaxlib_include() -> str:
    spec = importlib.util.find_spec("jaxlib")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("building zorb needs jaxlib (its XLA FFI headers): pip install jaxlib")
    return os.path.join(list(spec.submodule_search_locations)[0], "include")


setup(ext_modules=[Extension(
    "zorb.kernels._blas", sources=["zorb/kernels/_blas.cc"], include_dirs=[jaxlib_include()], language="c++",
    extra_compile_args=["-std=c++17", "-O3", "-ffp-contract=off", "-fno-trapping-math", "-Wno-attributes", "-Wno-return-type"],
    extra_link_args=["-pthread"], optional=True)])
