"""Progress: the hooks the algorithm calls (zorb.fit's, train_adam's, predict's) and what the
runner makes of them: a line before each layer's solve, tqdm bars that become periodic log
lines (no carriage returns) when the output is not a terminal."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import zorb
from zorb.baselines import train_adam
from zorb.runner import progress as runner_progress

from runner_fixtures import run_cli, store, template_store  # noqa: F401

DENSE = [{"type": "dense", "units": 6}, {"type": "sigmoid"}, {"type": "dense", "units": 5}, {"type": "tanh"},
         {"type": "dense", "units": "outputs"}, {"type": "softmax"}]


def data(rng, n=103, classes=3):
    x = rng.uniform(size=(n, 4))
    return x, np.eye(classes)[(x[:, :classes] ** 2).argmax(axis=1)]


class Recorder:
    """A progress hook and a callback writing one event list, in the order the fit calls them."""

    def __init__(self):
        self.events: list = []

    def progress(self, start):
        self.events.append(("start", start))
        return lambda blocks: self.events.append(("blocks", start.index, blocks))

    def callback(self, report):
        self.events.append(("solved", report))


@pytest.mark.parametrize("chunk_rows", [None, 25])
def test_fit_announces_each_layer_before_its_solve(rng, chunk_rows):
    x, y = data(rng)
    net = zorb.build_network(DENSE, (4,), output_dim=3, seed=0)
    seen = Recorder()
    _, report = zorb.fit(net, x, y, solver="qr", chunk_rows=chunk_rows, progress=seen.progress,
                         callback=seen.callback)
    starts = [event[1] for event in seen.events if event[0] == "start"]
    assert [s.index for s in starts] == [r.index for r in report.layers] == [1, 3, 5]
    assert [s.design_shape for s in starts] == [r.design_shape for r in report.layers]
    assert all(s.solver == "qr" and s.kind == "dense" for s in starts)
    kinds = [event[0] for event in seen.events]
    for start in starts:  # every layer: its start, then its blocks, then its report
        begin = seen.events.index(("start", start))
        solved = next(i for i, e in enumerate(seen.events) if e[0] == "solved" and e[1].index == start.index)
        assert begin < solved and "start" not in kinds[begin + 1:solved]
        blocks = sum(e[2] for e in seen.events[begin:solved] if e[0] == "blocks")
        if chunk_rows is None:
            assert start.blocks == 1 and blocks == 0
        else:  # 5 chunks of rows, each pass over them
            assert start.blocks == 5 and blocks == start.blocks * start.passes
    if chunk_rows is not None:  # softmax's observation pass, one per Sigmoid/Tanh above, the solve
        assert [s.passes for s in starts] == [4, 3, 2]


def test_adam_and_predict_report_their_work(rng):
    x, y = data(rng)
    net = zorb.build_network(DENSE, (4,), output_dim=3, seed=0)
    steps = []
    train_adam(net, x, y, learning_rate=1e-2, steps=23, eval_every=5, progress=steps.append)
    assert steps == [5, 5, 5, 5, 3]
    rows = []
    out = zorb.predict(net, x, batch_size=40, progress=rows.append)
    assert rows == [40, 40, 23]
    np.testing.assert_allclose(out, zorb.predict(net, x), rtol=1e-12)


def test_off_a_terminal_a_bar_is_log_lines_with_rate_and_eta(monkeypatch, caplog):
    monkeypatch.setattr(runner_progress, "LOG_INTERVAL", 0.0)
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    with caplog.at_level(logging.INFO, logger="zorb.runner.progress"):
        with runner_progress.bar(4, "adam", "steps") as steps:
            for _ in range(4):
                steps.update(1)
    lines = [record.getMessage() for record in caplog.records]
    assert lines and all("\r" not in line for line in lines)
    assert lines[-1].startswith("adam: 4/4 steps (100%)") and "ETA" in lines[-1] and "/s" in lines[-1]


@pytest.mark.slow
def test_cli_progress_lines_in_order_and_no_carriage_returns(store, tmp_path):
    result = run_cli("dataset=iris", "network=iris", "solver.chunk_rows=30", "eval_batch_size=20",
                     f"tracking.uri={store}", f"cache.dir={tmp_path / 'cache'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "\r" not in output
    lines = output.splitlines()

    def first(text):
        return next(i for i, line in enumerate(lines) if text in line)

    order = [first("layer 1 (dense): solving [A, 1] 105 x 5 with qr, 4 blocks of rows x 3 passes"),
             first("layer 1 (dense, 1/2): [A, 1] 105 x 5, solve"),
             first("layer 3 (dense): solving [A, 1] 105 x 9 with qr, 4 blocks of rows x 2 passes"),
             first("layer 3 (dense, 2/2): [A, 1] 105 x 9, solve"),
             first("done: train_accuracy")]
    assert order == sorted(order)
