"""Which runner, how many processes send (``beaconflow.pipelines.runners``), from Beam's options.

Whole runs on each runner are in tests/e2e/test_portability.py.
"""

from __future__ import annotations

import os

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

from beaconflow.pipelines.runners import local_runner, rate_split_warning, worker_processes

MULTI_PROCESSING = ("--direct_running_mode=multi_processing", "--direct_num_workers=2")


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--runner=DirectRunner"],
        ["--runner=direct"],
        ["--runner=directrunner"],
        ["--runner=apache_beam.runners.direct.direct_runner.DirectRunner"],
        ["--runner=SwitchingDirectRunner"],
        ["--runner=FnApiRunner"],
    ],
)
def test_direct_runs_use_fn_api_runner_never_prism(args: list[str]) -> None:
    assert isinstance(local_runner(PipelineOptions(args)), FnApiRunner)


@pytest.mark.parametrize(
    "runner",
    ["PortableRunner", "portable", "FlinkRunner", "SparkRunner", "DataflowRunner",
     "BundleBasedDirectRunner"],
)  # fmt: skip
def test_other_runners_are_left_to_beam(runner: str) -> None:
    assert local_runner(PipelineOptions([f"--runner={runner}"])) is None


@pytest.mark.parametrize(
    ("args", "processes"),
    [
        ([], 1),
        (list(MULTI_PROCESSING), 2),
        (["--runner=directrunner", "--direct_running_mode=multi_processing",
          "--direct_num_workers=3"], 3),
        (["--direct_running_mode=multi_processing", "--direct_num_workers=0"], os.cpu_count()),
        (["--direct_running_mode=multi_threading", "--direct_num_workers=4"], 1),
        # Beam's job service runs one SDK worker per job whatever direct_num_workers says
        (["--runner=PortableRunner"], 1),
        (["--runner=PortableRunner", *MULTI_PROCESSING], 1),
        (["--runner=PortableRunner", "--sdk_worker_parallelism=0"], 1),
        (["--runner=FlinkRunner", "--num_workers=3", "--sdk_worker_parallelism=2"], 6),
        (["--runner=SparkRunner", "--sdk_worker_parallelism=4"], 4),
        (["--runner=DataflowRunner", "--num_workers=2", "--max_num_workers=5"], 5),
        (["--runner=DataflowRunner", "--sdk_worker_parallelism=4"], 1),
    ],
)  # fmt: skip
def test_worker_processes_divide_max_rps(args: list[str], processes: int) -> None:
    assert worker_processes(PipelineOptions(args)) == processes


@pytest.mark.parametrize(
    ("args", "warns"),
    [
        ([], None),
        (["--direct_running_mode=multi_processing", "--direct_num_workers=2"], None),
        (["--runner=DataflowRunner", "--max_num_workers=4"], "no_use_multiple_sdk_containers"),
        (["--runner=DataflowRunner", "--experiments=no_use_multiple_sdk_containers"],
         "give --max_num_workers"),
        (["--runner=DataflowRunner", "--max_num_workers=4",
          "--experiments=no_use_multiple_sdk_containers"], None),
        (["--runner=PortableRunner", "--job_endpoint=localhost:8099"], None),
        (["--runner=FlinkRunner", "--flink_master=jm:8081"], "--sdk_worker_parallelism"),
        (["--runner=PortableRunner", "--job_endpoint=jobs.internal:8099", "--num_workers=3",
          "--sdk_worker_parallelism=2"], None),
    ],
)  # fmt: skip
def test_a_rate_split_the_options_cannot_tell_is_warned(args: list[str], warns: str | None) -> None:
    warning = rate_split_warning(PipelineOptions(args))
    if warns is None:
        assert warning is None
    else:
        assert warning is not None and warns in warning


@pytest.mark.parametrize(
    ("flags", "given", "expected"),
    [
        ([], None, os.cpu_count() or 1),
        (["--direct_running_mode=multi_threading"], None, 0),
        (["--direct_running_mode=multi_processing", "--direct_num_workers=2"], None, 0),
        (["--runner=PortableRunner", "--job_endpoint=localhost:1"], None, 0),
        (["--runner=DataflowRunner"], None, 0),
        ([], 3, 3),
        (["--runner=DataflowRunner"], 1, 1),
    ],
)
def test_sender_processes_by_runner(flags: list[str], given: int | None, expected: int) -> None:
    from apache_beam.options.pipeline_options import PipelineOptions

    from beaconflow.pipelines.runners import send_processes

    assert send_processes(PipelineOptions(flags), given) == expected
