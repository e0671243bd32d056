"""Damaged and crafted network files: ``zorb.load`` (and so ``init_file``) answers every one
with a ``ZorbError`` naming the file, never another exception, never numpy's pickle advice,
and never runs code carried by the file."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
import tempfile
from pathlib import Path

import numpy as np
import pytest

import zorb
from zorb import baselines
from zorb.errors import ZorbError

PWNED = Path(tempfile.gettempdir()) / "zorb-fuzz-pwned"  # what a crafted header would create

SPECS = [{"type": "dense", "units": 6}, {"type": "sigmoid"}, {"type": "dense", "units": 3}, {"type": "softmax"}]


class Payload:
    """Unpickling this touches ``Payload.target``: the proof that code ran."""

    target = ""

    def __reduce__(self):
        return (Path.touch, (Path(Payload.target),))


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A fitted network (weights and activation state) saved by ``zorb.save``."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4))
    y = np.eye(3)[rng.integers(0, 3, 40)]
    network = zorb.build_network(SPECS, (4,), output_dim=3, seed=0)
    trained, _ = zorb.fit(network, x, y)
    path = tmp_path_factory.mktemp("saved") / "net.npz"
    zorb.save(trained, path)
    return path


def members(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def write_npz(path: Path, arrays: dict[str, np.ndarray], *, allow_pickle: bool = False) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=allow_pickle)
            archive.writestr(f"{name}.npy", buffer.getvalue())
    return path


def with_header(arrays: dict[str, np.ndarray], header) -> dict[str, np.ndarray]:
    return {**arrays, "__zorb__": np.array(json.dumps(header))}


def header_edits(header: dict) -> list:
    """Crafted headers: missing keys, wrong types, unknown layers and options, huge sizes."""
    edits = []
    for key in list(header):
        edits.append({k: v for k, v in header.items() if k != key})
        for value in (None, 3, "x", [], {}, [1, 2], -1, 1e308, True, [[1]]):
            edits.append({**header, key: value})
    for index in range(len(header["layers"])):
        layer = header["layers"][index]
        for change in ({"type": "no_such_layer"}, {"type": 7}, {"type": None}, {"units": 10 ** 12},
                       {"units": -3}, {"units": "6"}, {"units": 0}, {"secret": 1}, {"eps": "tiny"},
                       {"eps": -1.0}, {"bias": "yes"}, {"type": "conv2d"}, {"type": "dense"},
                       {"filters": 2, "kernel_size": 10 ** 9}):
            layers = [dict(spec) for spec in header["layers"]]
            layers[index] = {**layer, **change}
            edits.append({**header, "layers": layers})
        layers = [dict(spec) for spec in header["layers"]]
        del layers[index]["type"]
        edits.append({**header, "layers": layers})
        edits.append({**header, "layers": header["layers"][:index] + header["layers"][index + 1:]})
    edits += [{**header, "input_shape": [10 ** 12]}, {**header, "input_shape": [4, 0]},
              {**header, "input_shape": [2 ** 40, 2 ** 40]}, {**header, "dtype": "object"},
              {**header, "dtype": "int64"}, {**header, "dtype": "float32"}, {**header, "version": 2},
              {**header, "layers": header["layers"] * 3}, [header], "header", None]
    return edits


def array_edits(arrays: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Arrays of the wrong shape, dtype or kind, missing or extra."""
    edits = []
    for name, array in arrays.items():
        if name == "__zorb__":
            continue
        edits.append({k: v for k, v in arrays.items() if k != name})
        for replacement in (array[:1], array.astype(np.float32), array.astype(np.int64), array.T.copy()[None],
                            np.zeros(()), np.array(["text"]), np.zeros((3, 0)), array.astype(np.complex128)):
            edits.append({**arrays, name: replacement})
    edits.append({**arrays, "layer9.weights": np.zeros((2, 2))})
    edits.append({**arrays, "__zorb__": np.array([1.0])})
    edits.append({**arrays, "__zorb__": np.array("{not json")})
    edits.append({**arrays, "__zorb__": np.array("[" * 100000 + "]" * 100000)})
    edits.append({k: v for k, v in arrays.items() if k != "__zorb__"})
    return edits


def npy_header_edits(path: Path, tmp: Path) -> list[Path]:
    """Archives whose .npy headers lie: huge shapes, object and structured dtypes, bad syntax."""
    raw = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            raw[info.filename] = archive.read(info)
    name = next(n for n in raw if n.startswith("layer1.weights"))
    header_end = raw[name].index(b"\n") + 1
    body = raw[name][header_end:]
    fakes = ["{'descr': '<f8', 'fortran_order': False, 'shape': (10000000000000, 8), }",
             "{'descr': '<f8', 'fortran_order': False, 'shape': (2**62, 2**62), }",
             "{'descr': '|O', 'fortran_order': False, 'shape': (5, 8), }",
             "{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (5, 8), }",
             "{'descr': '<f8', 'fortran_order': False, 'shape': (-5, 8), }",
             "{'descr': '<f8', 'fortran_order': 'yes', 'shape': (5, 8), }",
             "{'descr': '<f8', 'shape': (5, 8), }",
             f"__import__('os').system('touch {PWNED}')",
             "{'descr': '<f8', 'fortran_order': False, 'shape': (5, 8), 'extra': 1}",
             "{'descr': 'V8', 'fortran_order': False, 'shape': (5, 8), }",
             "{'descr': '<f8', 'fortran_order': True, 'shape': (40,), }",
             "(" * 5000 + ")" * 5000]
    paths = []
    for number, fake in enumerate(fakes):
        text = fake.encode("latin1")
        text += b" " * (-(10 + len(text) + 1) % 64) + b"\n"
        member = b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + body
        if len(text) > 65535:
            member = b"\x93NUMPY\x02\x00" + len(text).to_bytes(4, "little") + text + body
        target = tmp / f"npy{number}.npz"
        with zipfile.ZipFile(target, "w") as archive:
            for other, data in raw.items():
                archive.writestr(other, member if other == name else data)
        paths.append(target)
    return paths


def damaged_files(saved: Path, tmp: Path) -> list[Path]:
    data = saved.read_bytes()
    rng = np.random.default_rng(18)
    paths = []

    def write(content: bytes) -> None:
        path = tmp / f"case{len(paths)}.npz"
        path.write_bytes(content)
        paths.append(path)

    write(b"")
    for cut in np.unique(np.linspace(1, len(data) - 1, 120).astype(int)):  # truncation
        write(data[:cut])
    for _ in range(220):  # bit flips, one to eight per file
        flipped = bytearray(data)
        for position in rng.integers(0, len(data), rng.integers(1, 9)):
            flipped[position] ^= 1 << int(rng.integers(0, 8))
        write(bytes(flipped))
    write(b"\x00" * len(data))
    write(pickle.dumps(Payload()))  # a bare pickle named .npz
    arrays = members(saved)
    header = json.loads(str(arrays["__zorb__"]))
    for edit in header_edits(header):
        paths.append(write_npz(tmp / f"header{len(paths)}.npz", with_header(arrays, edit)))
    for edit in array_edits(arrays):
        paths.append(write_npz(tmp / f"array{len(paths)}.npz", edit))
    # an object array carrying a pickle that would touch the target if it were ever loaded
    evil = {**arrays, "layer1.weights": np.array([Payload()], dtype=object)}
    paths.append(write_npz(tmp / "object.npz", evil, allow_pickle=True))
    paths += npy_header_edits(saved, tmp)
    return paths


def test_every_damaged_or_crafted_file_is_one_clean_error(saved, tmp_path):
    Payload.target = str(tmp_path / "pwned")
    paths = damaged_files(saved, tmp_path)
    assert len(paths) >= 500
    loaded = 0
    for path in paths:
        try:
            network = zorb.load(path)
        except ZorbError as error:
            message = str(error)
            assert message.startswith(str(path)), message
            assert "\n" not in message and "pickle" not in message.lower(), message
            continue
        # a flip can land in bytes that change nothing read (zip timestamps, padding): such a
        # file must then be the saved network, array for array
        loaded += 1
        reference = zorb.load(saved)
        assert [np.asarray(w).tobytes() for w in network.weights] == \
               [np.asarray(w).tobytes() for w in reference.weights], path
    assert not Path(Payload.target).exists()
    assert not PWNED.exists()
    assert loaded < len(paths) // 4  # the cases really are damaged: most are refused


def test_initial_weights_file_errors_name_the_file(saved, tmp_path):
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    network = zorb.build_network(SPECS, (4,), output_dim=3, seed=0)
    with pytest.raises(ZorbError, match=f"^{empty} is not a usable zorb network file: it is not a NumPy"):
        baselines.load_initial_weights(network, empty)
    arrays = members(saved)
    header = json.loads(str(arrays["__zorb__"]))
    header["layers"][0]["type"] = "lstm"
    crafted = write_npz(tmp_path / "crafted.npz", with_header(arrays, header))
    with pytest.raises(ZorbError, match="layer 1 has type 'lstm', not one of dense, conv2d"):
        baselines.load_initial_weights(network, crafted)
