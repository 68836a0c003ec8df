"""Adaptive sending against a flaky service: random failures that are not a rate limit.

Sends N KISSmetrics requests through a :class:`~beaconflow.delivery.sender.BulkSender`
(adaptive, as a backfill sends) to the sandbox collector answering a share ``--error-rate`` of
requests with 500 or 503 at random (half each; 503 counts as push-back), and prints every 5
seconds how many are done and where the adaptive rate and concurrency stand. It stops after
``--seconds`` if it has not finished. Run::

    python -m benchmarks.flaky --requests 20000 --error-rate 0 0.06 0.1
    python -m benchmarks.flaky --requests 20000 --error-rate 0.06 --fixed-concurrency

Measured on a 2-core machine (README, "Sending"): with no errors 20,000 requests take about
5 s; with 3% random 503s the adaptive rate falls to a few requests per second and the run
crawls, because both limits are cut for every push-back, whatever its cause; with
``--fixed-concurrency`` (nothing adapts) it takes about as long as with no errors.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from beaconflow.delivery.retry import RetryPolicy
from beaconflow.delivery.sender import BulkSender, Request, SenderConfig
from beaconflow.model.message import Message
from beaconflow.sandbox.collector import Collector, Faults


def once(
    requests: int, error_rate: float, seconds: float, concurrency: int, adaptive: bool = True
) -> None:
    """One run against a collector failing ``error_rate`` of requests at random."""
    with Collector(faults=Faults(error_rate=error_rate, seed=1)) as collector:
        config = SenderConfig(
            concurrency=concurrency,
            timeout=10,
            retry=RetryPolicy(max_attempts=25),
            adaptive=adaptive,
        )
        batch = [
            Request(
                Message("kissmetrics", "e", (("n", str(n)),)),
                f"{collector.base_url}/e?_k=k&_p=u{n}&_n=x&_t=1750000000&_d=1",
            )
            for n in range(requests)
        ]
        started = reported = time.monotonic()
        done = 0
        with BulkSender(config) as sender:
            for start in range(0, requests, 32):
                sender.submit_many(batch[start : start + 32])
                done += len(sender.take_finished())
                now = time.monotonic()
                if now - reported >= 5:
                    reported = now
                    print(
                        f"  {now - started:5.0f} s  {done:6d} done  rate "
                        f"{sender.adaptive_rates()}  concurrency {sender.concurrency_limits()}"
                    )
                if now - started > seconds:
                    print(f"  stopped after {seconds:.0f} s with {done} of {requests} done")
                    return
            done += len(sender.flush())
        elapsed = time.monotonic() - started
        print(f"  all {done} done in {elapsed:.1f} s, {done / elapsed:.0f}/s")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--error-rate", type=float, nargs="+", default=[0.0, 0.06, 0.1])
    parser.add_argument("--seconds", type=float, default=60.0, help="stop a run after this")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--fixed-concurrency", action="store_true", help="do not adapt")
    args = parser.parse_args(argv)
    for error_rate in args.error_rate:
        print(f"error rate {error_rate:.0%} (503 on half of them)")
        once(args.requests, error_rate, args.seconds, args.concurrency, not args.fixed_concurrency)


if __name__ == "__main__":
    main()
