"""Bad input costs no fit: every setting and the store are checked before the fit starts;
degenerate data is said out loud; only zorb's own Hydra callbacks run; runs whose process is
gone are reaped."""

from __future__ import annotations

import functools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from runner_fixtures import compose, runs_of, store, template_store  # noqa: F401

import zorb
from zorb.errors import ZorbError
from zorb.runner import callbacks, job, lifecycle
from zorb.runner import methods as runner_methods
from zorb.runner import store as zorb_store
from zorb.runner import tracking


@pytest.fixture
def fit_calls(monkeypatch) -> list[str]:
    """Every method's fit function, spied on: the names of those called."""
    calls: list[str] = []
    for name, function in list(runner_methods.METHODS.items()):
        @functools.wraps(function)
        def spy(*args, _name=name, _function=function, **kwargs):
            calls.append(_name)
            return _function(*args, **kwargs)
        monkeypatch.setitem(runner_methods.METHODS, name, spy)
    return calls


def bad_settings(tmp_path) -> list[tuple[list[str], str]]:
    """(overrides, a fragment of the sentence) for each key a run reads, given a bad value."""
    folder = tmp_path / "a_folder"
    folder.mkdir()
    return [
        (["seed=-1"], "seed must be an integer >= 0"),
        (["seed=abc"], "seed must be an integer >= 0"),
        (["dtype=float16"], "dtype must be one of float64, float32"),
        (["threads=0"], "threads must be 'auto' or a positive integer"),
        (["eval_batch_size=0"], "eval_batch_size must be a positive integer or null"),
        (["eval_batch_size=many"], "eval_batch_size must be a positive integer or null"),
        (["data_dir=null"], "data_dir must be a folder name"),
        ([f"init_file={tmp_path / 'missing.npz'}"], "does not exist: write it first"),
        (["init_out=/proc/zorb/init.npz"], "init_out=/proc/zorb/init.npz cannot be written"),
        ([f"init_out={folder}"], "cannot be written (it is a folder)"),
        (["validation_fraction=1.5"], "validation_fraction must be a number in [0, 1)"),
        (["limits.width=0"], "limits.width must be a positive integer or null"),
        (["+limits.depth=2"], "limits has no key 'depth'"),
        (["solver.name=lu"], "unknown solver 'lu'"),
        (["solver.rcond=-1"], "rcond must be >= 0"),
        (["solver.u_rcond=2"], "u_rcond must be < 1"),
        (["solver.ridge=-1"], "ridge must be a number >= 0"),
        (["solver.chunk_rows=0"], "solver.chunk_rows must be a positive integer or null"),
        (["solver.devices=99"], "solver.devices=99 but JAX sees"),
        (["+solver.per_layer.x.rcond=1e-3"], "solver.per_layer keys are 1-based layer positions"),
        (["+solver.per_layer.2.rcond=1e-3"], "per_layer names layer 2, which is not a dense/conv2d layer"),
        (["method.name=sgd"], "unknown method 'sgd'"),
        (["+method.momentum=0.9"], "method zorb has no option 'momentum'"),
        (["network.layers=[]"], "network.layers must be a non-empty list"),
        (["network.layers.0.units=-3"], "units must be a positive integer"),
        (["+network.layers.0.secret=1"], "secret"),
        (["dataset.name=nope"], "nope"),
        (["+dataset.colour=red"], "dataset has no option 'colour'"),
        (["tracking.enabled=maybe"], "tracking.enabled must be true or false"),
        (["tracking.experiment=''"], "tracking.experiment must be a non-empty name"),
        (["tracking.uri=foo://bar"], "whose scheme 'foo' MLflow cannot open: use sqlite:///<file>"),
        (["tracking.uri=http://127.0.0.1:9"], "the MLflow tracking server http://127.0.0.1:9 does not answer"),
        (["tracking.uri=sqlite:////proc/zorb/mlflow.db"], "cannot write the MLflow store /proc/zorb/mlflow.db"),
    ]


def test_every_bad_setting_is_refused_before_the_fit(store, tmp_path, fit_calls, caplog):  # noqa: F811
    caplog.set_level(logging.INFO)
    cases = bad_settings(tmp_path)
    for overrides, fragment in cases:
        caplog.clear()
        cfg = compose("dataset=iris", "network=iris", f"tracking.uri={store}", f"data_dir={tmp_path}/data",
                      *overrides)
        with pytest.raises(ZorbError) as raised:
            job.run(cfg)
        message = str(raised.value)
        assert fragment in message, (overrides, message)
        assert "\n" not in message, (overrides, message)
        assert fit_calls == [], overrides
        assert not any(r.getMessage().startswith("fitting") for r in caplog.records), overrides
    # a run that was opened before its bad setting was found ends FAILED with the sentence
    runs = runs_of(store)
    assert runs and all(r.info.status == "FAILED" and r.data.tags["error"] for r in runs)
    # and the same config without the bad value fits
    job.run(compose("dataset=iris", "network=iris", f"tracking.uri={store}", f"data_dir={tmp_path}/data"))
    assert fit_calls == ["zorb"]


def test_unsupported_scheme_lists_the_supported_ones():
    with pytest.raises(ZorbError) as raised:
        zorb_store.check("foo://bar", write=True)
    assert str(raised.value) == (
        "tracking.uri (or $MLFLOW_TRACKING_URI) is 'foo://bar', whose scheme 'foo' MLflow cannot open: use "
        "sqlite:///<file>, http(s)://<host>:<port>, file:///<folder>, or a postgresql://, mysql://, mssql:// "
        "or databricks URI")


def test_a_server_that_accepts_but_never_answers_fails_after_the_probe_timeout():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes connections; nothing ever reads or replies
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(ZorbError, match=f"^the MLflow tracking server {uri} does not answer \\(timed out\\)"):
            zorb_store.check(uri, write=True)


def test_a_server_that_answers_passes_the_probe():
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        zorb_store.check(f"http://127.0.0.1:{server.server_port}", write=True)
    finally:
        server.shutdown()


def test_degenerate_training_data_is_a_warning_and_a_tag(store, tmp_path, caplog):  # noqa: F811
    caplog.set_level(logging.WARNING)
    from zorb.runner.experiment import degenerate_data

    data = zorb.data.load_dataset("iris", data_dir=str(tmp_path), seed=0)
    specs = [{"type": "dense", "units": 8}, {"type": "sigmoid"}, {"type": "dense", "units": 3},
             {"type": "softmax"}]
    network = zorb.build_network(specs, data.input_shape, output_dim=3, seed=0)
    assert degenerate_data(network, data) == {}
    import dataclasses

    one_class = dataclasses.replace(data, y_train=np.tile(np.eye(3)[1], (len(data.y_train), 1)))
    assert set(degenerate_data(network, one_class)) == {"single_class"}
    constant = dataclasses.replace(data, x_train=np.ones_like(data.x_train))
    assert set(degenerate_data(network, constant)) == {"constant_inputs"}
    few = dataclasses.replace(data, x_train=data.x_train[:3], y_train=data.y_train[:3])
    assert "interpolation" in degenerate_data(network, few)  # 3 rows for 5 weights per unit

    metrics = job.run(compose("dataset=iris", "network=iris", f"tracking.uri={store}", f"data_dir={tmp_path}",
                              "limits.train_samples=3"))
    assert metrics["train_samples"] == 3
    run = runs_of(store)[-1]
    assert run.info.status == "FINISHED"
    assert "interpolates the training data" in run.data.tags["zorb.warning.interpolation"]
    assert any("interpolates the training data" in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING)


def test_evaluate_refuses_non_finite_predictions():
    network = zorb.build_network([{"type": "dense", "units": 2}], (3,), output_dim=2, seed=0)
    x, y = np.ones((4, 3)), np.eye(2)[[0, 1, 0, 1]]
    assert set(zorb.evaluate(network, x, y)) == {"error", "mse", "accuracy", "log_loss"}
    broken = network.with_weights([np.full_like(np.asarray(network.weights[0]), np.nan)])
    with pytest.raises(zorb.FitError, match="^8 of the 8 predictions are not finite"):
        zorb.evaluate(broken, x, y)
    with pytest.raises(zorb.FitError, match="^1 of the 2 predictions are not finite"):
        zorb.core.metrics.scores(np.array([[np.inf], [0.0]]), np.array([[1.0], [0.0]]))


def test_only_zorbs_own_callbacks_are_accepted():
    from omegaconf import OmegaConf
    from runner_fixtures import CONF

    ours = OmegaConf.load(CONF / "config.yaml").hydra.callbacks
    assert len(ours) == 2 and callbacks.foreign_callback(ours) is None
    refusal = callbacks.foreign_callback({"x": {"_target_": "builtins.open", "file": "f", "mode": "w"}})
    assert refusal.startswith("hydra.callbacks.x asks Hydra to instantiate 'builtins.open'")
    nested = {"data_check": {"_target_": callbacks.ZORB_CALLBACKS[0], "x": {"_target_": "builtins.print"}}}
    assert "with options" in callbacks.foreign_callback(nested)


def test_reap_closes_this_hosts_runs_whose_process_is_gone(store):  # noqa: F811
    client = tracking.client(store)
    experiment = tracking.experiment_id(client, store, "zorb")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = tracking.start_run(client, experiment, run_name="alive", tags=lifecycle.process_tags())
    gone = tracking.start_run(client, experiment, run_name="gone",
                              tags={**lifecycle.process_tags(), lifecycle.PID: str(dead.pid)})
    reused = tracking.start_run(client, experiment, run_name="reused",  # our pid, but an older process
                                tags={**lifecycle.process_tags(), lifecycle.PROCESS_START: "1000.00"})
    stale = tracking.start_run(client, experiment, run_name="stale",
                               tags={**lifecycle.process_tags(), lifecycle.HOST: "elsewhere",
                                     lifecycle.HEARTBEAT: f"{time.time() - 3600:.0f}"})
    fresh = tracking.start_run(client, experiment, run_name="fresh",
                               tags={**lifecycle.process_tags(), lifecycle.HOST: "elsewhere"})
    untagged = tracking.start_run(client, experiment, run_name="untagged")

    planned = lifecycle.reap(client, [experiment], dry_run=True)
    assert {v.run_name: v.status for v in planned} == {"gone": "KILLED", "reused": "KILLED", "stale": "FAILED"}
    assert all(client.get_run(r.run_id).info.status == "RUNNING" for r in (gone, reused, stale))
    # a sweep's start closes only this host's dead runs; the rest goes to scripts/runs.py reap
    assert sorted(v.run_name for v in lifecycle.reap(client, [experiment], this_host_only=True)) == ["gone", "reused"]
    assert [v.run_name for v in lifecycle.reap(client, [experiment])] == ["stale"]
    status = {r.info.run_name: r.info.status for r in runs_of(store)}
    assert status == {"alive": "RUNNING", "gone": "KILLED", "reused": "KILLED", "stale": "FAILED",
                      "fresh": "RUNNING", "untagged": "RUNNING"}
    assert client.get_run(gone.run_id).data.tags[lifecycle.REAPED] == \
        f"process {dead.pid} on {socket.gethostname()} is gone"
    assert client.get_run(stale.run_id).data.tags[lifecycle.REAPED].startswith("stale: no heartbeat from elsewhere")
    for recorder in (alive, fresh, untagged):
        recorder.terminate("FINISHED")


def test_heartbeat_refreshes_its_tag(store):  # noqa: F811
    client = tracking.client(store)
    experiment = tracking.experiment_id(client, store, "zorb")
    recorder = tracking.start_run(client, experiment, run_name="beating",
                                  tags={**lifecycle.process_tags(), lifecycle.HEARTBEAT: "0"})
    beat = lifecycle.Heartbeat(recorder, seconds=0.05)
    deadline = time.time() + 30
    while client.get_run(recorder.run_id).data.tags[lifecycle.HEARTBEAT] == "0" and time.time() < deadline:
        time.sleep(0.05)
    beat.stop()
    assert abs(float(client.get_run(recorder.run_id).data.tags[lifecycle.HEARTBEAT]) - time.time()) < 60
    recorder.terminate("FINISHED")
    assert os.getpid() == int(client.get_run(recorder.run_id).data.tags[lifecycle.PID])


def test_sigterm_raises_stopped_and_an_ignored_sighup_stays_ignored():
    import signal

    before = signal.getsignal(signal.SIGTERM)
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup starts a process
    try:
        with lifecycle.catch_signals():
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.1)  # still here: ignored
            with pytest.raises(lifecycle.Stopped) as raised:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
        assert (raised.value.name, raised.value.exit_status, str(raised.value)) == \
            ("SIGTERM", 143, "stopped by SIGTERM")
        assert lifecycle.stop_reason(raised.value) == "SIGTERM"
        assert lifecycle.stop_reason(KeyboardInterrupt()) == "SIGINT"
        assert lifecycle.stop_reason(ValueError()) is None
        assert signal.getsignal(signal.SIGTERM) is before  # restored after the block
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


STOPPED_IN_A_WEAKREF_CALLBACK = """
import os, signal, sys, time, weakref
from zorb.runner import lifecycle

signum = signal.Signals[sys.argv[1]]

class Lock:  # as importlib's module locks: a weakref callback runs when one is freed
    pass

def callback(_):
    os.kill(os.getpid(), signum)
    for _ in range(100000):  # the handler runs at one of these bytecodes: inside the callback
        pass
    print("callback done", flush=True)

hook = sys.unraisablehook
try:
    with lifecycle.catch_signals():
        lock = Lock()
        ref = weakref.ref(lock, callback)
        del lock
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pass
        print("went on as if no signal had come", flush=True)
except (lifecycle.Stopped, KeyboardInterrupt) as stopped:
    print("stopped by", lifecycle.stop_reason(stopped), flush=True)
assert sys.unraisablehook is hook
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_stop_raised_where_python_ignores_exceptions_is_raised_again(signum):
    # In a sweep's worker, the SIGTERM sent when the launcher is gone once arrived while the
    # main thread ran a weakref callback of importlib; the Stopped it raised was printed and
    # dropped, and the job went on fitting. Ctrl-C's KeyboardInterrupt can be dropped so too.
    result = subprocess.run([sys.executable, "-c", STOPPED_IN_A_WEAKREF_CALLBACK, signum.name], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"stopped by {signum.name}"], result.stdout
    assert "Exception ignored" not in result.stderr and "Traceback" not in result.stderr, result.stderr
