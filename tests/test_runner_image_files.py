"""`python run.py dataset=mnist data_dir=...` on MNIST files in torchvision's layout.

Tiny IDX files (plain and gzipped) are written by the test in the real format; the real CLI
reads them through zorb.data, fits conv_dense and records the run. With dataset.download=true
the CLI fetches them through pooch from a server on 127.0.0.1 and checks the published md5s.
"""

import functools
import http.server
import threading

import pytest
from data_fixtures import write_tiny_cifar, write_tiny_mnist
from runner_fixtures import cli_env, run_cli, runs_of, store, template_store  # noqa: F401


@pytest.mark.slow
@pytest.mark.parametrize("gz", [False, True], ids=["idx", "idx.gz"])
def test_cli_runs_mnist_from_standard_files(store, tmp_path, gz):
    data_dir = tmp_path / "data"
    written = write_tiny_mnist(data_dir, n_train=60, n_test=20, gz=gz)
    result = run_cli("dataset=mnist", f"data_dir={data_dir}", "network=conv_dense", f"tracking.uri={store}",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [run] = runs_of(store)
    assert run.info.status == "FINISHED"
    assert run.data.params["dataset.name"] == "mnist"
    assert run.data.metrics["train_samples"] == len(written["labels_train"]) == 60
    assert run.data.metrics["test_samples"] == 20
    assert 0 <= run.data.metrics["test_accuracy"] <= 1


@pytest.mark.slow
def test_cli_missing_files_say_where_and_how(store, tmp_path):
    result = run_cli("dataset=mnist", f"data_dir={tmp_path / 'empty'}", f"tracking.uri={store}", cwd=tmp_path)
    assert result.returncode != 0
    assert "MNIST/raw" in result.stderr and "prepare_data.py" in result.stderr
    assert "Traceback" not in result.stderr
    [run] = runs_of(store)
    assert run.info.status == "FAILED"


@pytest.mark.slow
def test_cli_runs_cifar10_conv1_from_standard_files(store, tmp_path):
    data_dir = tmp_path / "data"
    write_tiny_cifar(data_dir, kind="cifar10", n_train=30, n_test=10)
    result = run_cli("dataset=cifar10", f"data_dir={data_dir}", "dataset.train_samples=20",
                     f"tracking.uri={store}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [run] = runs_of(store)
    assert run.data.params["network.name"] == "conv1" and run.data.metrics["train_samples"] == 20


@pytest.mark.slow
def test_cli_download_refuses_files_that_are_not_the_published_ones(store, tmp_path):
    """dataset.download=true fetches through pooch from ZORB_DATA_URL and checks the published
    md5s: tiny MNIST files served from 127.0.0.1 are refused, the run ends FAILED."""
    source = tmp_path / "mirror"
    write_tiny_mnist(source, gz=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(source))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        mirror = f"http://127.0.0.1:{httpd.server_address[1]}/"
        result = run_cli("dataset=mnist", "dataset.download=true", f"data_dir={tmp_path / 'data'}",
                         f"tracking.uri={store}", cwd=tmp_path, env=cli_env(ZORB_DATA_URL=mirror))
        httpd.shutdown()
    assert result.returncode != 0
    assert (f"the MNIST/raw/train-images-idx3-ubyte.gz that {mirror}MNIST/raw/"
            "train-images-idx3-ubyte.gz sent has md5 ") in result.stderr
    assert "where f68b3c2dcbeaaa9fbdd348bbdeb94873 was expected, so it was not kept" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").exists()
    [run] = runs_of(store)
    assert run.info.status == "FAILED"
