"""Streaming the rows in chunks gives the in-memory fit's weights."""

import numpy as np
import pytest

import zorb

DENSE = [{"type": "dense", "units": 12}, {"type": "sigmoid"}, {"type": "dense", "units": 9}, {"type": "tanh"},
         {"type": "dense", "units": 7}, {"type": "relu"}, {"type": "dense", "units": 8}, {"type": "sigmoid"},
         {"type": "dense", "units": "outputs"}, {"type": "softmax"}]
CONV = [{"type": "conv2d", "filters": 3, "kernel_size": 3}, {"type": "tanh"},
        {"type": "conv2d", "filters": 4, "kernel_size": 2, "stride": 2}, {"type": "sigmoid"}, {"type": "flatten"},
        {"type": "dense", "units": "outputs"}, {"type": "softmax"}]


def relative(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def classification(rng, shape, n=503, classes=4):
    x = rng.uniform(size=(n, *shape))
    labels = (x.reshape(n, -1)[:, :classes] ** 2).argmax(axis=1)  # learnable, so the solves are not noise
    return x, np.eye(classes)[labels]


@pytest.mark.parametrize("chunk_rows", [77, 502])
def test_chunked_qr_fit_equals_in_memory_fit(chunk_rows, rng):
    x, y = classification(rng, (6,))
    net = zorb.build_network(DENSE, (6,), output_dim=4, seed=1)
    whole, whole_report = zorb.fit(net, x, y, solver="qr", rcond=1e-10, seed=3)
    chunked, chunked_report = zorb.fit(net, x, y, solver="qr", rcond=1e-10, seed=3, chunk_rows=chunk_rows)
    for a, b in zip(chunked.weights, whole.weights):
        assert relative(a, b) < 1e-8
    for a, b in zip(chunked_report.layers, whole_report.layers):
        assert a.design_shape == b.design_shape and a.rank == b.rank
        np.testing.assert_allclose(a.spectrum, b.spectrum, rtol=1e-8, atol=1e-12 * b.spectrum[0])
    for a, b in zip(chunked.layers, whole.layers):  # ranges and softmax normalisers too
        for name, value in b.arrays().items():
            assert relative(a.arrays()[name], value) < 1e-8
    np.testing.assert_allclose(zorb.predict(chunked, x), zorb.predict(whole, x), rtol=1e-7, atol=1e-9)


def test_chunked_conv_fit_and_gram_route(rng):
    x, y = classification(rng, (7, 7, 2), n=61, classes=3)
    net = zorb.build_network(CONV, (7, 7, 2), output_dim=3, seed=0)
    whole, _ = zorb.fit(net, x, y, solver="qr", rcond=1e-10)
    chunked, _ = zorb.fit(net, x, y, solver="qr", rcond=1e-10, chunk_rows=13)
    for a, b in zip(chunked.weights, whole.weights):
        assert relative(a, b) < 1e-8
    whole_gram, _ = zorb.fit(net, x, y, solver="gram", rcond=1e-6)
    chunked_gram, _ = zorb.fit(net, x, y, solver="gram", rcond=1e-6, chunk_rows=13)
    assert relative(chunked_gram.weights[0], whole_gram.weights[0]) < 1e-8


def test_chunked_fit_reads_memmaps_and_refuses_svd(tmp_path, rng):
    x, y = classification(rng, (6,), n=150)
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    net = zorb.build_network(DENSE, (6,), output_dim=4, seed=1)
    from_disk, _ = zorb.fit(net, mapped, y, solver="qr", rcond=1e-10, chunk_rows=40)
    in_memory, _ = zorb.fit(net, x, y, solver="qr", rcond=1e-10, chunk_rows=40)
    for a, b in zip(from_disk.weights, in_memory.weights):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(zorb.ConfigError, match="use solver=qr"):
        zorb.fit(net, x, y, solver="svd", chunk_rows=40)
    with pytest.raises(zorb.ConfigError, match="chunk_rows must be a positive integer"):
        zorb.fit(net, x, y, solver="qr", chunk_rows=0)
