"""One import root: everything is ``beaconflow.…``, and a user's own packages cannot shadow it.

Beam projects often have a ``transforms/`` (or ``pipelines/``) package of their own, and the
public index has packages of both names. beaconflow installs neither name, and its sender
processes start with ``-P``, so a working directory holding packages of those names (or a
``beaconflow/`` of its own) cannot replace the code a child runs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _shadowing_project(where: Path) -> Path:
    """A folder with its own transforms/, pipelines/ and beaconflow/ that fail on import."""
    for name in ("transforms", "pipelines", "beaconflow"):
        package = where / name
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(f"raise ImportError('the user project {name}')\n")
        (package / "sendproc.py").write_text("raise ImportError('shadowed')\n")
    return where


def test_no_top_level_transforms_or_pipelines_is_installed(tmp_path: Path) -> None:
    for name in ("transforms", "pipelines"):
        done = subprocess.run(
            [sys.executable, "-c", f"import {name}"], cwd=tmp_path, capture_output=True, text=True
        )
        assert done.returncode == 1 and "ModuleNotFoundError" in done.stderr, name
    done = subprocess.run(
        [sys.executable, "-c", "import beaconflow.transforms.send, beaconflow.pipelines.backfill"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def test_a_send_with_sender_processes_from_a_folder_with_packages_of_those_names(
    tmp_path: Path,
) -> None:
    project = _shadowing_project(tmp_path / "project")
    out = tmp_path / "out"
    done = subprocess.run(
        [
            str(BIN / "beaconflow"),
            "--sandbox",
            f"--input={ROOT / 'sample_data'}/game_events*",
            "--max-errors=3",
            "--send-processes=2",
            f"--report={out / 'report.json'}",
            f"--dead-letter={out / 'dead.jsonl'}",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "messages: 1087 built, 1087 delivered" in done.stdout
    assert "(2 sender processes)" in done.stderr
    assert "the user project" not in done.stderr and "shadowed" not in done.stderr


def test_importing_configures_nothing(tmp_path: Path) -> None:
    # a host application's logging.basicConfig() must still work after importing beaconflow
    code = (
        "import logging, pkgutil, importlib, beaconflow\n"
        "for m in pkgutil.walk_packages(beaconflow.__path__, 'beaconflow.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "assert logging.getLogger().handlers == [], logging.getLogger().handlers\n"
        "logging.basicConfig(format='host: %(message)s')\n"
        "logging.getLogger('x').warning('configured')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "host: configured" in done.stderr


def test_the_command_says_nothing_of_beams_import() -> None:
    done = subprocess.run([str(BIN / "beaconflow"), "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stderr == "", "Beam's import-time warnings stay out of the command's output"
