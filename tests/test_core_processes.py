"""One fit across processes: ``scripts/fit_processes.py`` in two or three local processes
(``jax.distributed`` with gloo CPU collectives), each reading its own share of the rows,
gives the weights of one process fitting all rows."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import zorb

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "fit_processes.py"
NETWORK = """\
rcond: 1e-10
layers:
  - {type: dense, units: 12}
  - {type: sigmoid}
  - {type: dense, units: 9}
  - {type: relu}
  - {type: dense, units: 7}
  - {type: tanh}
  - {type: dense, units: outputs}
  - {type: softmax}
"""
SPECS = [{"type": "dense", "units": 12}, {"type": "sigmoid"}, {"type": "dense", "units": 9}, {"type": "relu"},
         {"type": "dense", "units": 7}, {"type": "tanh"}, {"type": "dense", "units": "outputs"}, {"type": "softmax"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("processes")
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(301, 6))
    y = np.eye(4)[(x[:, :4] ** 2).argmax(axis=1)]
    np.save(folder / "x.npy", x)
    np.save(folder / "y.npy", y)
    (folder / "net.yaml").write_text(NETWORK)
    return folder, x, y


def run_processes(folder: Path, count: int, *options: str) -> list[dict]:
    """``fit_processes.py`` as ``count`` local processes; their printed summaries."""
    coordinator = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    common = [sys.executable, str(SCRIPT), "--x", str(folder / "x.npy"), "--y", str(folder / "y.npy"),
              "--network", str(folder / "net.yaml"), "--seed", "2", "--coordinator", coordinator,
              "--processes", str(count), "--out", str(folder / "model.npz"), *options]
    running = [subprocess.Popen([*common, "--process-id", str(k)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for k in range(count)]
    outputs = [p.communicate(timeout=500) for p in running]
    for p, (out, err) in zip(running, outputs):
        assert p.returncode == 0, err[-3000:]
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]


def relative(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


@pytest.mark.parametrize("count, solver, rcond, options, shares", [
    (3, "qr", 1e-10, [], [(0, 100), (100, 201), (201, 301)]),
    (2, "gram", 1e-6, ["--chunk-rows", "40"], [(0, 150), (150, 301)]),
], ids=["qr_3_processes", "gram_2_processes_chunks"])
def test_processes_give_one_process_weights(data, count, solver, rcond, options, shares):
    folder, x, y = data
    summaries = run_processes(folder, count, "--solver", solver, "--rcond", str(rcond), *options)
    # consecutive, disjoint shares covering every row
    assert sorted(tuple(s["rows"]) for s in summaries) == shares
    net = zorb.build_network(SPECS, (6,), output_dim=4, seed=2)
    one, report = zorb.fit(net, x, y, solver=solver, rcond=rcond, seed=2)
    many = zorb.load(folder / "model.npz")
    assert max(relative(a, b) for a, b in zip(many.weights, one.weights)) < 1e-8
    assert all(s["ranks"] == [layer.rank for layer in report.layers] for s in summaries)
    # the trained networks predict the same
    assert relative(zorb.predict(many, x), zorb.predict(one, x)) < 1e-8
