"""Beam's private FnApiRunner construction, in one place.

A local run uses FnApiRunner directly: Beam 2.77's DirectRunner first tries the Prism runner,
which downloads a binary from the internet. FnApiRunner only honours the pipeline's options
(``--direct_num_workers``, ``--direct_running_mode``, the SDK harness log levels) when they
reach it through an ``ExtendedProvisionInfo`` built from the encoded options, which is how
Beam's own DirectRunner builds it: private API. pyproject.toml bounds apache-beam to the
version the suite ran with, and ``tests/pipelines/test_fnapi.py`` fails loudly when an
upgrade changes it.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.runners.portability.portable_runner import JobServiceHandle


def fnapi_runner(options: PipelineOptions) -> fn_runner.FnApiRunner:
    """An FnApiRunner that runs with ``options`` as DirectRunner would hand them over."""
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    info = fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
    )
    return fn_runner.FnApiRunner(provision_info=info)
