"""Rows split over a mesh of 4 (CPU) devices give the one-device weights.

JAX fixes its device count when it starts, so the check runs in a fresh interpreter with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json
    import jax
    import numpy as np
    import zorb

    assert len(jax.devices()) == 4, jax.devices()
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(203, 6))
    y = np.eye(4)[(x[:, :4] ** 2).argmax(axis=1)]
    specs = [{"type": "dense", "units": 12}, {"type": "sigmoid"}, {"type": "dense", "units": 9}, {"type": "relu"},
             {"type": "dense", "units": 7}, {"type": "tanh"}, {"type": "dense", "units": "outputs"},
             {"type": "softmax"}]
    net = zorb.build_network(specs, (6,), output_dim=4, seed=1)

    def relative(a, b):
        return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))

    out = {}
    for solver, rcond in (("qr", 1e-10), ("gram", 1e-6)):
        one, _ = zorb.fit(net, x, y, solver=solver, rcond=rcond, seed=2)
        for name, kwargs in (("devices", dict(devices=4)), ("devices_chunks", dict(devices="all", chunk_rows=30))):
            many, report = zorb.fit(net, x, y, solver=solver, rcond=rcond, seed=2, **kwargs)
            out[f"{solver}_{name}"] = max(relative(a, b) for a, b in zip(many.weights, one.weights))
            out[f"{solver}_{name}_devices"] = len(report.devices)
    print(json.dumps(out))
""")


@pytest.mark.slow
def test_four_device_mesh_gives_one_device_weights():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    print(done.stdout)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["qr_devices"] < 1e-8 and result["qr_devices_chunks"] < 1e-8
    assert result["gram_devices"] < 1e-6 and result["gram_devices_chunks"] < 1e-6
    assert all(result[f"{s}_{n}_devices"] == 4 for s in ("qr", "gram") for n in ("devices", "devices_chunks"))
