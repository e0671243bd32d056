"""`make ui` serves the MLflow UI for a store on 127.0.0.1 and lists the runs in it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from runner_fixtures import ROOT, cli_env, compose, runs_of, store, template_store  # noqa: F401

from zorb.runner import job as runner

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def request(url: str, body: dict | None = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if body is not None else {}
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=10) as reply:
        return reply.status, reply.read()


def test_make_ui_lists_the_runs(store, tmp_path):
    runner.main(compose("dataset=iris", f"tracking.uri={store}", "tracking.log_model=false"))
    [run] = runs_of(store)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with open(tmp_path / "ui.log", "w") as log:
        # its own process group, so the server and the workers it starts stop together
        server = subprocess.Popen(["make", "-s", "ui", f"UI_PORT={port}", f"STORE={store}"], cwd=ROOT,
                                  env=cli_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "ui.log").read_text()
            try:
                status, page = request(base + "/")
                break
            except (urllib.error.URLError, ConnectionError, socket.timeout):
                assert time.monotonic() < deadline, (tmp_path / "ui.log").read_text()
                time.sleep(0.5)
        assert status == 200 and b"<html" in page.lower()
        status, body = request(base + "/ajax-api/2.0/mlflow/runs/search",
                               {"experiment_ids": [run.info.experiment_id], "max_results": 10})
        listed = json.loads(body)["runs"]
        assert [r["info"]["run_id"] for r in listed] == [run.info.run_id]
        assert listed[0]["info"]["status"] == "FINISHED"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
