"""scripts/prepare_data.py: idempotent, offline parts only (downloads: test_data_download.py)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
from data_fixtures import PREPARE_DATA as SCRIPT
from data_fixtures import write_tiny_cifar, write_tiny_mnist

from zorb.data import images as images_module
from zorb.data import load_dataset



def test_present_files_are_skipped(prepare_data, tmp_path, capsys):
    write_tiny_mnist(tmp_path)
    write_tiny_cifar(tmp_path, kind="cifar100")
    assert prepare_data.main(["mnist", "cifar100", "iris", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mnist: already present" in out and "cifar100: already present" in out
    assert "iris: nothing to fetch" in out


def test_damaged_files_reported_not_fetched(prepare_data, tmp_path, capsys):
    written = write_tiny_mnist(tmp_path)
    path = written["paths"]["train_labels"]
    path.write_bytes(path.read_bytes()[:-3])
    assert prepare_data.main(["mnist", "--data-dir", str(tmp_path)]) == 1
    assert "truncated" in capsys.readouterr().err


def test_from_debian_copies_into_layout(prepare_data, tmp_path, monkeypatch, capsys):
    debian = write_tiny_mnist(tmp_path / "pkg", gz=True, name="fm")
    monkeypatch.setattr(images_module, "DEBIAN_FASHION_MNIST_DIR", str(debian["dir"]))
    data_dir = tmp_path / "data"
    args = ["fashion_mnist", "--from-debian", "--data-dir", str(data_dir)]
    assert prepare_data.main(args) == 0
    assert "copied from the Debian package" in capsys.readouterr().out
    raw = data_dir / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(
        f"{stem}.gz" for stem in images_module.IDX_FILES.values()
    )
    # Without the Debian folder the copied files are what load_dataset reads.
    monkeypatch.setattr(images_module, "DEBIAN_FASHION_MNIST_DIR", str(tmp_path / "none"))
    ds = load_dataset("fashion_mnist", data_dir=data_dir)
    np.testing.assert_array_equal(ds.labels_train, debian["labels_train"])
    assert prepare_data.main(args) == 0
    assert "already present" in capsys.readouterr().out


def test_from_debian_without_package(prepare_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(images_module, "DEBIAN_FASHION_MNIST_DIR", str(tmp_path / "none"))
    assert prepare_data.main(["fashion_mnist", "--from-debian", "--data-dir", str(tmp_path)]) == 1
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err


def test_download_needs_torchvision(prepare_data, tmp_path, capsys):
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed; this test checks the message when it is not")
    assert prepare_data.main(["cifar10", "--with", "torchvision", "--data-dir", str(tmp_path)]) == 1
    assert ".[vision]" in capsys.readouterr().err


def test_runs_as_a_script(tmp_path):
    """python scripts/prepare_data.py works from any directory (repository root on path)."""
    write_tiny_mnist(tmp_path)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "mnist", "sinc", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "mnist: already present" in done.stdout
