"""Beam's private FnApiRunner construction (``beaconflow.pipelines.fnapi``) still works as expected.

pyproject.toml bounds apache-beam to the versions this suite ran with; before widening the
bound, this test must pass on the new version (it fails loudly, naming what changed). Its
counterpart for aiohttp is tests/delivery/test_aiohttp_internals.py.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

from beaconflow.pipelines.fnapi import fnapi_runner
from beaconflow.pipelines.runners import local_runner


def test_fnapi_runner_gets_the_pipelines_options() -> None:
    options = PipelineOptions(["--direct_num_workers=3", "--direct_running_mode=multi_threading"])
    runner = fnapi_runner(options)
    assert isinstance(runner, FnApiRunner)
    encoded = runner._provision_info.provision_info.pipeline_options
    assert str(encoded["beam:option:direct_num_workers:v1"]) == "3"
    assert encoded["beam:option:direct_running_mode:v1"] == "multi_threading"
    assert isinstance(local_runner(PipelineOptions(["--runner=DirectRunner"])), FnApiRunner)
    assert local_runner(PipelineOptions(["--runner=PortableRunner"])) is None
