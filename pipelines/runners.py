"""Which runner, and how many processes send: sizing a run for --max-rps and sender processes.

Beam's options say which runner runs the pipeline and how many worker processes it starts;
:func:`worker_processes` turns them into the number that divides ``--max-rps``,
:func:`send_processes` into the default ``--send-processes``, and :func:`local_runner` makes
DirectRunner mean FnApiRunner, so that a local run never waits on Prism's download.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions


def quiet_workers(beam_args: Sequence[str]) -> list[str]:
    """Beam's args, with SDK worker processes logging errors only unless the user says.

    Worker processes (DirectRunner multi_processing, portable runners) log channel set-up
    and shutdown at INFO straight to stderr; beaconflow's own progress lines are kept.
    """
    args = list(beam_args)
    given = {arg.split("=", 1)[0] for arg in args}
    if "--default_sdk_harness_log_level" not in given:
        args.append("--default_sdk_harness_log_level=ERROR")
    if "--sdk_harness_log_level_overrides" not in given:
        args.append('--sdk_harness_log_level_overrides={"beaconflow": "INFO"}')
    return args


#: Runner names (see :func:`_runner_name`) that run here, on FnApiRunner.
LOCAL_RUNNERS = ("direct", "switchingdirect", "fnapi")
#: Runners that submit to a Beam job service, whose SDK worker processes they start.
PORTABLE_RUNNERS = ("portable", "flink", "spark", "prism", "kafkastreams")


def runner_name(options: PipelineOptions) -> str:
    """The runner's name as Beam matches it: any case, no module path, no ``Runner`` suffix."""
    runner = options.view_as(StandardOptions).runner
    return str(runner or "direct").rpartition(".")[2].lower().removesuffix("runner")


def _worker_nodes(all_options: dict[str, Any]) -> int | None:
    """--max_num_workers, else --num_workers, else None (not given)."""
    nodes = all_options.get("max_num_workers") or all_options.get("num_workers")
    return int(nodes) if nodes else None


def local_runner(options: PipelineOptions) -> Any:
    """FnApiRunner for DirectRunner: the local run must not try Prism's download.

    None (Beam creates the runner) for every other runner: PortableRunner, Flink, Spark,
    Dataflow, BundleBasedDirectRunner. Names are matched as Beam does: any case, with or
    without the ``Runner`` suffix or the module path.
    """
    if runner_name(options) not in LOCAL_RUNNERS:
        return None
    from beaconflow.pipelines.fnapi import fnapi_runner

    return fnapi_runner(options)


def worker_processes(options: PipelineOptions) -> int:
    """How many processes send at once, to divide --max-rps among them.

    The threads of one process share one rate limiter; each process has its own and sends at
    ``max_rps / worker_processes``. Too high a count only slows the run; too low a one lets
    the run exceed --max-rps.

    - DirectRunner (FnApiRunner): ``--direct_num_workers`` processes (0: one per CPU) in
      ``multi_processing`` mode, else 1.
    - Portable runners (PortableRunner, Flink, Spark, Prism): the runner starts the SDK worker
      processes and the options do not tell how many. Counted as the nodes
      (``--max_num_workers`` or ``--num_workers``, else 1) times the SDK processes per node
      (``--sdk_worker_parallelism``; 0, "the runner chooses", counts as 1). Beam's own job
      service (``local_job_service_main``, ``--job_endpoint embed``) starts one SDK worker
      per job whatever the options say, so the default 1 is exact there; on a cluster, give
      both flags or --max-rps holds per SDK process only.
    - Other runners (Dataflow): ``--max_num_workers`` or ``--num_workers`` when given, else 1.
    """
    direct = options.view_as(DirectOptions)
    name = runner_name(options)
    if name in LOCAL_RUNNERS:
        if direct.direct_running_mode == "multi_processing":
            return max(1, direct.direct_num_workers or os.cpu_count() or 1)
        return 1
    all_options = options.get_all_options()
    nodes = max(1, int(_worker_nodes(all_options) or 1))
    if name in PORTABLE_RUNNERS:
        return nodes * max(1, int(all_options.get("sdk_worker_parallelism") or 1))
    return nodes


def send_processes(options: PipelineOptions, given: int | None) -> int:
    """How many sender processes each worker starts (``--send-processes``, when ``given``).

    By default one per CPU on DirectRunner's in-memory mode, where one process does all of
    Beam's work and sending from it would leave the other cores idle; 0 (send from the
    worker's own process) on every other runner and mode: multi_processing and the
    distributed runners start a worker process per core already; multi_threading was not
    measured with sender processes (the flag turns them on there too).
    """
    if given is not None:
        return given
    return (os.cpu_count() or 1) if runs_in_memory(options) else 0


def rate_split_warning(options: PipelineOptions) -> str | None:
    """Why --max-rps may not hold on this runner as configured, or None when it will."""
    name = runner_name(options)
    all_options = options.get_all_options()
    sized = _worker_nodes(all_options)
    if name == "dataflow":
        experiments = all_options.get("experiments") or []
        if "no_use_multiple_sdk_containers" not in experiments:
            return (
                "Dataflow runs one SDK process per vCPU of each worker, and --max-rps is divided "
                "by the number of workers only: add --experiments no_use_multiple_sdk_containers"
            )
        if not sized:
            return "give --max_num_workers so that --max-rps is divided among the workers"
    elif name in PORTABLE_RUNNERS:
        job_endpoint = str(all_options.get("job_endpoint") or "")
        local = job_endpoint == "embed" or job_endpoint.startswith(("localhost:", "127.0.0.1:"))
        if not local and not (sized and all_options.get("sdk_worker_parallelism")):
            return (
                "the runner chooses how many SDK processes send: give --num_workers (nodes) and "
                "--sdk_worker_parallelism (processes per node) so --max-rps is divided among them"
            )
    return None


def runs_in_process(options: PipelineOptions) -> bool:
    """Whether the workers run in this process (DirectRunner in memory or in threads)."""
    direct = options.view_as(DirectOptions)
    in_process = direct.direct_running_mode in ("in_memory", "multi_threading")
    return runner_name(options) in LOCAL_RUNNERS and in_process


def runs_in_memory(options: PipelineOptions) -> bool:
    """Whether all of Beam's work runs in this process, one element at a time (in_memory)."""
    direct = options.view_as(DirectOptions)
    return runner_name(options) in LOCAL_RUNNERS and direct.direct_running_mode == "in_memory"
