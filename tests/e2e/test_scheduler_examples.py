"""examples/airflow and examples/systemd: the DAG compiles and behaves, the units verify.

Airflow is not installed here: the DAG file is parsed and compiled, then run against small
stand-ins of the three Airflow names it imports, to check what it gives Airflow (retries,
the wrapper's no-retry status as ``skip_on_exit_code``, the skip turned into a failure
without retry). The systemd units are checked with ``systemd-analyze verify`` (skipped only
where it is not installed); ``verify`` wants ExecStart's program to exist, so the service is
rendered into a temporary folder with this virtualenv's ``beaconflow`` in place of
``/srv/beaconflow/.venv/bin/beaconflow``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from beaconflow.pipelines.wrap import DEFAULT_FINAL_STATUS, EX_TEMPFAIL
from tests.conftest import debian_program

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DAG_FILE = EXAMPLES / "airflow" / "beaconflow_nightly.py"
INSTALLED = "/srv/beaconflow/.venv/bin/beaconflow"


def test_the_dag_file_parses_and_compiles() -> None:
    source = DAG_FILE.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(DAG_FILE))
    compile(tree, str(DAG_FILE), "exec")
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert {"airflow", "airflow.exceptions", "airflow.operators.bash"} <= imported


class _Skip(Exception):
    pass


class _Fail(Exception):
    pass


class _Bash:
    """BashOperator's part the DAG relies on: a status in skip_on_exit_code is a skip."""

    made: ClassVar[list[_Bash]] = []
    status = 0

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        _Bash.made.append(self)

    def execute(self, context: Any) -> Any:
        if self.status in {self.kwargs["skip_on_exit_code"]}:
            raise _Skip(f"Bash command returned exit code {self.status}. Skipping.")
        if self.status:
            raise RuntimeError(f"Bash command failed. The command returned {self.status}.")
        return "summary"


class _Dag:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs

    def __enter__(self) -> _Dag:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.fixture
def airflow_stand_ins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    airflow = types.ModuleType("airflow")
    airflow.DAG = _Dag  # type: ignore[attr-defined]
    exceptions = types.ModuleType("airflow.exceptions")
    exceptions.AirflowSkipException = _Skip  # type: ignore[attr-defined]
    exceptions.AirflowFailException = _Fail  # type: ignore[attr-defined]
    operators = types.ModuleType("airflow.operators")
    bash = types.ModuleType("airflow.operators.bash")
    bash.BashOperator = _Bash  # type: ignore[attr-defined]
    for name, module in (("airflow", airflow), ("airflow.exceptions", exceptions),
                         ("airflow.operators", operators), ("airflow.operators.bash", bash)):  # fmt: skip
        monkeypatch.setitem(sys.modules, name, module)
    _Bash.made = []
    yield


def test_the_dag_retries_on_75_and_fails_without_retry_on_3_and_4(
    airflow_stand_ins: None,
) -> None:
    namespace: dict[str, Any] = {"__name__": "beaconflow_nightly"}
    exec(compile(DAG_FILE.read_text(encoding="utf-8"), str(DAG_FILE), "exec"), namespace)
    dag = namespace["dag"]
    assert dag.kwargs["default_args"]["retries"] > 0
    assert dag.kwargs["default_args"]["on_failure_callback"] is namespace["alert"]
    [task] = _Bash.made
    # the wrapper's "do not retry" status is the one BashOperator skips on
    assert task.kwargs["skip_on_exit_code"] == namespace["NO_RETRY_STATUS"]
    command = task.kwargs["bash_command"]
    assert "-m beaconflow.pipelines.wrap --final-status 99 -- " in command
    assert namespace["NO_RETRY_STATUS"] == DEFAULT_FINAL_STATUS
    assert "--date {{ ds }}" in command
    assert "_FILE" in " ".join(task.kwargs["env"])  # keys from files, not in the DAG
    task.status = 0
    assert task.execute({}) == "summary"
    task.status = EX_TEMPFAIL  # an ordinary failure: Airflow retries it
    with pytest.raises(RuntimeError):
        task.execute({})
    task.status = DEFAULT_FINAL_STATUS  # beaconflow said 2, 3 or 4
    with pytest.raises(_Fail, match="a retry does not mend"):
        task.execute({})


@pytest.fixture
def systemd_analyze() -> Path:
    """systemd-analyze: skips without it, fails when CI requires it (BEACONFLOW_REQUIRE_SYSTEMD)."""
    return debian_program(Path("/usr/bin/systemd-analyze"), "systemd", "BEACONFLOW_REQUIRE_SYSTEMD")


def test_the_systemd_units_pass_systemd_analyze_verify(
    tmp_path: Path, systemd_analyze: Path
) -> None:
    service = (EXAMPLES / "systemd" / "beaconflow.service").read_text(encoding="utf-8")
    timer = (EXAMPLES / "systemd" / "beaconflow.timer").read_text(encoding="utf-8")
    assert INSTALLED in service
    assert "Persistent=true" in timer and "OnCalendar=" in timer
    assert "RestartForceExitStatus=75" in service
    for name in ("kontagent_api_key", "kontagent_secret", "kissmetrics_api_key"):
        assert f"LoadCredential={name}:" in service
    beaconflow = Path(sys.executable).parent / "beaconflow"
    assert beaconflow.exists()
    (tmp_path / "beaconflow.service").write_text(service.replace(INSTALLED, str(beaconflow)))
    (tmp_path / "beaconflow.timer").write_text(timer)
    done = subprocess.run(
        [systemd_analyze, "verify", "--man=no", "./beaconflow.service", "./beaconflow.timer"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr


def test_systemd_analyze_verify_does_catch_a_bad_unit(
    tmp_path: Path, systemd_analyze: Path
) -> None:
    """The check above is not vacuous: a oneshot with RestartForceExitStatus= is refused."""
    service = (EXAMPLES / "systemd" / "beaconflow.service").read_text(encoding="utf-8")
    beaconflow = str(Path(sys.executable).parent / "beaconflow")
    bad = service.replace(INSTALLED, beaconflow).replace("Type=exec", "Type=oneshot")
    (tmp_path / "beaconflow.service").write_text(bad)
    done = subprocess.run(
        [systemd_analyze, "verify", "--man=no", "./beaconflow.service"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "oneshot" in done.stderr
