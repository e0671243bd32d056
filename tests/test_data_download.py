"""Downloads through pooch (zorb.data.download, scripts/prepare_data.py), from a local server.

An http.server on 127.0.0.1 serves tiny files in the real formats (gzipped IDX, CIFAR's
python-version tar.gz) at the paths a mirror uses; the tests pass their checksums in place
of the published ones, fetch, read the files back through zorb.data, and check that a
damaged transfer is refused and not kept.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import PREPARE_DATA as SCRIPT
from data_fixtures import write_tiny_cifar, write_tiny_mnist

from zorb.data import download, load_dataset
from zorb.data.download import RETRIES, StandardFile



class FileServer:
    """Serves ``files`` (URL path without the leading slash -> bytes) and records the path
    of every GET in ``requests``; anything else is a 404."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.lstrip("/")
                server.requests.append(path)
                body = server.files.get(path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"


@pytest.fixture
def server():
    served = FileServer()
    thread = threading.Thread(target=served.httpd.serve_forever, daemon=True)
    thread.start()
    yield served
    served.httpd.shutdown()
    served.httpd.server_close()
    thread.join()


def md5(content: bytes) -> str:
    return hashlib.md5(content).hexdigest()


def publish(name: str, server: FileServer, tmp_path: Path, monkeypatch) -> dict:
    """Generate tiny files of ``name`` in their published form, serve them at their mirror
    paths and put their checksums (and their URLs on the server) in the registry.

    Returns the fixture's dict (labels_train, x_train, ...) and ``served`` (path -> bytes).
    """
    source = tmp_path / "source"
    if name in ("mnist", "fashion_mnist"):
        folder = "MNIST" if name == "mnist" else "FashionMNIST"
        written = write_tiny_mnist(source, gz=True, name=folder, seed=3)
        served = {p.relative_to(source).as_posix(): p.read_bytes()
                  for p in written["paths"].values()}
    else:
        written = write_tiny_cifar(source, kind=name, seed=3)
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w:gz") as tar:
            tar.add(written["dir"], arcname=written["dir"].name)  # the folder, then its batches
        served = {download.STANDARD_FILES[name][0].path: archive.getvalue()}
    server.files.update(served)
    registry = tuple(StandardFile(path, server.url + path, f"md5:{md5(body)}")
                     for path, body in served.items())
    assert sorted(f.path for f in registry) == sorted(f.path for f in download.STANDARD_FILES[name])
    monkeypatch.setitem(download.STANDARD_FILES, name, registry)
    monkeypatch.delenv(download.DATA_URL_ENV, raising=False)
    return {**written, "served": served}


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "cifar100"])
def test_prepare_fetches_reads_back_and_then_skips(prepare_data, server, tmp_path, monkeypatch,
                                                   capsys, name):
    published = publish(name, server, tmp_path, monkeypatch)
    data_dir = tmp_path / "data"
    assert prepare_data.main([name, "--data-dir", str(data_dir)]) == 0
    assert f"{name}: downloaded into" in capsys.readouterr().out
    assert sorted(server.requests) == sorted(published["served"])  # each file once

    ds = load_dataset(name, data_dir=data_dir)
    np.testing.assert_array_equal(ds.labels_train, published["labels_train"])
    np.testing.assert_array_equal(ds.labels_test, published["labels_test"])
    # The fixtures' images hold 0 and 255, so the min-max scaling is a division by 255.
    np.testing.assert_array_equal(np.rint(ds.x_train * 255),
                                  published["x_train"].reshape(ds.x_train.shape))

    requests_made = len(server.requests)
    assert prepare_data.main([name, "--data-dir", str(data_dir)]) == 0
    assert f"{name}: already present" in capsys.readouterr().out
    assert len(server.requests) == requests_made


@pytest.mark.parametrize("damage", ["flipped", "truncated"])
def test_damaged_transfer_is_refused_and_not_kept(prepare_data, server, tmp_path, monkeypatch,
                                                  capsys, damage):
    published = publish("mnist", server, tmp_path, monkeypatch)
    path = "MNIST/raw/train-labels-idx1-ubyte.gz"
    good = published["served"][path]
    bad = bytes(b ^ 0xFF for b in good[:12]) + good[12:] if damage == "flipped" else good[:-5]
    server.files[path] = bad
    data_dir = tmp_path / "data"
    args = ["mnist", "--data-dir", str(data_dir), "--base-url", server.url]
    assert prepare_data.main(args) == 1
    err = capsys.readouterr().err
    assert f"mnist: the {path} that {server.url}{path} sent has md5 {md5(bad)} where " \
           f"{md5(good)} was expected, so it was not kept; run the command again" in err
    assert "Traceback" not in err
    assert server.requests.count(path) == 1 + RETRIES
    # The file before it was checked and kept; nothing of the damaged one (nor a temporary).
    assert sorted(p.name for p in (data_dir / "MNIST" / "raw").iterdir()) == [
        "train-images-idx3-ubyte.gz"]

    server.files[path] = good  # the next attempt fetches only what is missing
    server.requests.clear()
    assert prepare_data.main(args) == 0
    assert sorted(server.requests) == sorted(set(published["served"]) - {
        "MNIST/raw/train-images-idx3-ubyte.gz"})


def test_missing_file_on_the_mirror(prepare_data, server, tmp_path, monkeypatch, capsys):
    publish("cifar10", server, tmp_path, monkeypatch)
    server.files.clear()
    assert prepare_data.main(["cifar10", "--data-dir", str(tmp_path / "data"),
                              "--base-url", server.url]) == 1
    err = capsys.readouterr().err
    assert f"could not download {server.url}cifar-10-python.tar.gz" in err and "404" in err
    assert f"check that {server.url} serves the original files" in err


def test_download_true_uses_the_mirror_from_the_environment(server, tmp_path, monkeypatch):
    published = publish("cifar10", server, tmp_path, monkeypatch)
    monkeypatch.setenv(download.DATA_URL_ENV, server.url)
    data_dir = tmp_path / "data"
    ds = load_dataset("cifar10", data_dir=data_dir, download=True, flatten=True)
    np.testing.assert_array_equal(ds.labels_train, published["labels_train"])
    assert ds.x_train.shape == (20, 32 * 32 * 3)
    assert (data_dir / "cifar-10-python.tar.gz").read_bytes() == published["served"][
        "cifar-10-python.tar.gz"]  # kept, so data_dir can serve as a mirror itself

    # A batch deleted later comes back from the kept archive, without a request.
    (data_dir / "cifar-10-batches-py" / "test_batch").unlink()
    server.requests.clear()
    ds = load_dataset("cifar10", data_dir=data_dir, download=True)
    np.testing.assert_array_equal(ds.labels_test, published["labels_test"])
    assert server.requests == []


def test_script_checks_the_published_checksums(server, tmp_path):
    """The real registry: a tiny file served in place of MNIST's is refused by its md5."""
    source = tmp_path / "source"
    written = write_tiny_mnist(source, gz=True)
    server.files.update({p.relative_to(source).as_posix(): p.read_bytes()
                         for p in written["paths"].values()})
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "mnist", "--data-dir", str(tmp_path / "data"),
         "--base-url", server.url],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert done.returncode == 1
    served = written["paths"]["train_images"].read_bytes()
    assert (f"has md5 {md5(served)} where f68b3c2dcbeaaa9fbdd348bbdeb94873 was expected, "
            "so it was not kept") in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data" / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").exists()


def test_base_url_is_for_pooch_only(prepare_data, capsys):
    with pytest.raises(SystemExit) as exit_:
        prepare_data.main(["mnist", "--with", "torchvision", "--base-url", "http://127.0.0.1:1/"])
    assert exit_.value.code == 2
    assert "--base-url names a mirror for pooch" in capsys.readouterr().err
