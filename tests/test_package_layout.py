"""The package's architecture, checked from its source: the algorithm (zorb.core) imports
nothing of the runner, the data or the baselines; the kernels import nothing of zorb above
them; and importing zorb leaves the process as it found it."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "zorb"

# For each part: the zorb modules it may import (prefixes), and the outside packages it may not.
RULES = {
    "core": ({"zorb.core", "zorb.kernels", "zorb.errors"}, {"mlflow", "hydra", "omegaconf", "matplotlib"}),
    "kernels": ({"zorb.kernels", "zorb.errors"}, {"mlflow", "hydra", "omegaconf", "matplotlib", "optax"}),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports (absolute and relative, at any depth), with its line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module
            # `from zorb import x` imports the module zorb.x when x is one
            names = [f"{module}.{a.name}" for a in node.names] if module == "zorb" else [module]
            found += [(node.lineno, name) for name in names]
    return found


def allowed(module: str, prefixes: set[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("part", sorted(RULES))
def test_part_imports_only_what_lies_below_it(part):
    zorb_allowed, outside_forbidden = RULES[part]
    files = sorted((PACKAGE / part).rglob("*.py"))
    assert files, f"zorb/{part} has no modules"
    offences = []
    for path in files:
        for line, module in imported_modules(path):
            top = module.split(".")[0]
            if top == "zorb" and not allowed(module, zorb_allowed):
                offences.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
            if top in outside_forbidden:
                offences.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    assert not offences, "\n".join(offences)


def test_the_checker_sees_a_forbidden_import(tmp_path):
    """The rule above must be able to fail: a file that imports the runner is reported."""
    bad = PACKAGE / "core" / "_layout_probe.py"
    bad.write_text("from zorb.runner import tracking\nfrom ..data import load_dataset\n")
    try:
        modules = [m for _, m in imported_modules(bad)]
    finally:
        bad.unlink()
    assert modules == ["zorb.runner", "zorb.data"]
    assert not allowed("zorb.runner", RULES["core"][0]) and not allowed("zorb.data", RULES["core"][0])


PROBE = r"""
import ctypes, json, os, sys
before = dict(os.environ)
import zorb
after_import = dict(os.environ)
heavy = sorted(m for m in ("jax", "numpy", "mlflow", "hydra", "matplotlib", "sklearn", "optax") if m in sys.modules)
import zorb.core  # the algorithm: turns on 64-bit mode, nothing else
import jax.numpy as jnp
from zorb.kernels import allocator
# glibc hands a freed 200 MiB block back at once unless zorb's allocator tuning is on.
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
size = 200 * 2 ** 20
block = libc.malloc(size)
ctypes.memset(block, 1, size)
held = rss()
libc.free(block)
returned = held - rss()
print(json.dumps({"env_changed": sorted(k for k in set(before) | set(dict(os.environ))
                                        if before.get(k) != os.environ.get(k)),
                  "env_changed_by_import": sorted(k for k in set(before) | set(after_import)
                                                  if before.get(k) != after_import.get(k)),
                  "heavy_after_import": heavy, "x64": jnp.ones(1).dtype.name,
                  "allocator_applied": allocator.applied(), "freed_mib": returned / 2 ** 20}))
"""


def run_probe(code: str, env_extra: dict | None = None) -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZORB_", "OPENBLAS_CORETYPE"))}
    env.update(env_extra or {})
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_changes_nothing_but_64_bit_mode():
    result = run_probe(PROBE)
    assert result["env_changed"] == [] and result["env_changed_by_import"] == []
    assert result["heavy_after_import"] == []  # `import zorb` loads nothing until it is used
    assert result["x64"] == "float64"
    assert result["allocator_applied"] is False
    assert result["freed_mib"] > 150  # the freed block went back to the kernel: malloc untouched


def test_tune_process_is_what_changes_the_process():
    """The same probe after the explicit call: the freed block stays in the process."""
    code = "from zorb.kernels.tuning import tune_process\ntune_process()\n" + PROBE
    result = run_probe(code)
    assert result["allocator_applied"] is True
    assert result["freed_mib"] < 50
