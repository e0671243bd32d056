"""`make ui` serves the MLflow UI for a store on 127.0.0.1 and lists the runs in it; in a
headless Chromium the experiment's page (the link `make ui` prints) shows the runs table, not
MLflow's GenAI overview."""

from __future__ import annotations

import json
import os
import shutil
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


def chromium(*arguments: str, profile) -> subprocess.CompletedProcess:
    """Debian's Chromium, headless, with a fresh profile; ``--virtual-time-budget`` lets the
    page's scripts fetch and render before the DOM is dumped or the screenshot taken."""
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           f"--user-data-dir={profile}", "--window-size=1400,900", "--virtual-time-budget=30000",
                           *arguments], capture_output=True, text=True, timeout=180, check=False)


CHROMIUM = shutil.which("chromium")


def test_make_ui_lists_the_runs(store, tmp_path):
    runner.main(compose("dataset=iris", f"tracking.uri={store}"))
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
        status, body = request(base + f"/ajax-api/2.0/mlflow/experiments/get?experiment_id={run.info.experiment_id}")
        tags = {t["key"]: t["value"] for t in json.loads(body)["experiment"]["tags"]}
        assert tags["mlflow.experimentKind"] == "custom_model_development"

        if CHROMIUM is None:
            pytest.skip("no chromium on PATH (.ci/run installs Debian's): the page itself is not checked")
        # the link `make ui` prints for an experiment: MLflow 3.17's UI picks its mode from this
        # parameter (or the GenAI / Model training switch it remembers), defaulting to GenAI
        page = f"{base}/#/experiments/{run.info.experiment_id}?workflowType=machine_learning"
        dom = chromium("--dump-dom", page, profile=tmp_path / "profile")
        assert dom.returncode == 0, dom.stderr
        assert run.info.run_name in dom.stdout  # a row of the runs table
        assert "iris-train" in dom.stdout  # its dataset input, in the table's Dataset column
        assert "Run Name" in dom.stdout  # the table's first column
        assert "No data available" not in dom.stdout  # the GenAI overview's empty trace charts
        screenshot = tmp_path / "experiment.png"
        shot = chromium(f"--screenshot={screenshot}", page, profile=tmp_path / "profile")
        assert shot.returncode == 0, shot.stderr
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        print(f"screenshot of the experiment page: {screenshot}")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
