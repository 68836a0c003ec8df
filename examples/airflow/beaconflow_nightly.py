"""An Airflow 2 DAG: beaconflow every night over the day before (examples/airflow/README.md).

Exit 75 (the day's logs have not landed, the previous night's run still holds the ledger)
and an interrupted run are retried; 2, 3 and 4 (a usage error, more errors than
--max-errors, a run stopped early) fail at once, without a retry, and alert. Airflow retries
any failed task, so the command runs under ``python -m beaconflow.pipelines.wrap``, which
exits 0, 75 (retry) or 99 (fail, do not retry); BashOperator turns 99 into a skip
(``skip_on_exit_code``), and :class:`BeaconflowOperator` turns that skip into
``AirflowFailException``, Airflow's failure without retry, which runs the failure callback.

Copy this file into the DAGs folder and adapt the paths; the keys come from files named by
the ``*_FILE`` variables (or set the variables from an Airflow connection).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from airflow import DAG
from airflow.exceptions import AirflowFailException, AirflowSkipException
from airflow.operators.bash import BashOperator

#: The virtualenv beaconflow is installed in, on every worker.
VENV = "/srv/beaconflow/.venv"
#: The wrapper's status for "failed, do not retry" (BashOperator's skip_on_exit_code).
NO_RETRY_STATUS = 99

COMMAND = (
    f"{VENV}/bin/python -m beaconflow.pipelines.wrap --final-status {NO_RETRY_STATUS} -- "
    f"{VENV}/bin/beaconflow --date {{{{ ds }}}}"
    " --input 's3://game-logs/dt={date}/*.jsonl.gz' --lookback 1"
    " --ledger /var/lib/beaconflow/ledger"
    " --report /var/log/beaconflow/{date}/report.json"
    " --dead-letter /var/log/beaconflow/{date}/dead-letter.jsonl"
    " --max-rps 500 --max-errors 100 --deadline 20h"
)

log = logging.getLogger(__name__)


class BeaconflowOperator(BashOperator):
    """A BashOperator whose "skip" status is a failure without retry."""

    def execute(self, context: Any) -> Any:
        try:
            return super().execute(context)
        except AirflowSkipException:
            raise AirflowFailException(
                "beaconflow failed in a way a retry does not mend (exit 2, 3 or 4: see the "
                "log above, the report and the dead letter)"
            ) from None


def alert(context: Any) -> None:
    """Tell a person: replace with your paging or chat hook."""
    instance = context["task_instance"]
    log.error(
        "beaconflow %s failed for %s: see %s", instance.task_id, context["ds"], instance.log_url
    )


with DAG(
    dag_id="beaconflow_nightly",
    # 02:15 UTC: the day's last logs have time to land; --date {{ ds }} is the day before
    schedule="15 2 * * *",
    start_date=datetime(2025, 6, 1),
    catchup=False,
    max_active_runs=1,
    default_args={
        # 75 (not landed yet, ledger in use) and interrupted runs: try again
        "retries": 6,
        "retry_delay": timedelta(minutes=30),
        "on_failure_callback": alert,
    },
) as dag:
    BeaconflowOperator(
        task_id="beaconflow",
        bash_command=COMMAND,
        skip_on_exit_code=NO_RETRY_STATUS,
        env={
            "KONTAGENT_API_KEY_FILE": "/etc/beaconflow/kontagent_api_key",
            "KONTAGENT_SECRET_FILE": "/etc/beaconflow/kontagent_secret",
            "KISSMETRICS_API_KEY_FILE": "/etc/beaconflow/kissmetrics_api_key",
        },
        append_env=True,
        # beaconflow needs --timeout (10 s) after SIGTERM to finish what is in flight
        execution_timeout=timedelta(hours=21),
    )
