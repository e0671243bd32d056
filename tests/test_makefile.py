"""The Makefile's install step: redone only when pyproject.toml, setup.py or the C++ sources
are newer than its stamp, so `make run` on an installed tree starts the run at once."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def planned(venv: Path, target: str) -> str:
    """The commands ``make -n <target>`` would run with the virtual environment ``venv``."""
    done = subprocess.run(["make", "-n", "-C", str(ROOT), f"VENV={venv}", target], capture_output=True,
                          text=True, check=True, timeout=60)
    return done.stdout


@pytest.fixture
def venv(tmp_path) -> Path:
    """A stand-in virtual environment: its python exists, as after `make install`."""
    folder = tmp_path / "venv"
    (folder / "bin").mkdir(parents=True)
    (folder / "bin" / "python").write_text("")
    return folder


def test_run_on_an_installed_tree_does_not_call_pip(venv):
    (venv / ".installed").touch()  # newer than every build input
    commands = planned(venv, "run")
    assert "pip" not in commands
    assert f"{venv}/bin/python run.py" in commands


def test_install_reruns_when_a_build_input_is_newer(venv):
    stamp = venv / ".installed"
    stamp.touch()
    inputs = [ROOT / "pyproject.toml", ROOT / "setup.py", *sorted((ROOT / "zorb" / "kernels").glob("*.cc"))]
    oldest_input = min(path.stat().st_mtime for path in inputs)
    os.utime(stamp, (oldest_input - 60, oldest_input - 60))
    commands = planned(venv, "run")
    assert "pip install --quiet -e '.[test]'" in commands
    assert commands.index("pip install") < commands.index("run.py")


def test_install_without_a_stamp_installs(venv):
    assert "pip install" in planned(venv, "install")
