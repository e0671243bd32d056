"""`python run.py dataset=mnist data_dir=...` on MNIST files in torchvision's layout.

Tiny IDX files (plain and gzipped) are written by the test in the real format; the real CLI
reads them through zorb.data, fits conv_dense and records the run.
"""

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
