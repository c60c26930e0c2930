"""How the jobs restart after a failure: Flink restart-strategy options, set per job.

The cluster's strategy (``flink-conf.yaml``) retries forever with an exponential delay from 1 s
to 10 s: right for the shared jobs (enrich, join, archive), which must come back after any
outage. A scoring job gets the same fast first restart, so one lost TaskManager costs it about
a second, but gives up after ``SCORING_ATTEMPTS`` restarts in a row without a minute of running
in between: a model that cannot load (a module that is missing, a registry URI that does not
resolve) then ends FAILED with its cause in the exception history, instead of loading and
failing every 10 s forever. The attempts span about a minute of delays, so a registry or
broker that is away for less than that does not stop a job.

Flink counts failures that arrive while a restart is pending (every task of a job lost with
its TaskManager) as one attempt, and resets the count and the delay once a job has run
``reset-backoff-threshold`` since its last restart.

Pure: option names and values only; ``jobs.common.environment`` applies them.
"""

from __future__ import annotations

SCORING_ATTEMPTS = 10

# Keys of Flink 2.3's RestartStrategyOptions. A job's own restart-strategy.type replaces the
# cluster's strategy with every option of it (unset ones take Flink's defaults, not the
# cluster's), so the delays the cluster sets are repeated here.
SCORING: dict[str, str] = {
    "restart-strategy.type": "exponential-delay",
    "restart-strategy.exponential-delay.initial-backoff": "1 s",
    "restart-strategy.exponential-delay.max-backoff": "10 s",
    "restart-strategy.exponential-delay.backoff-multiplier": "1.5",
    "restart-strategy.exponential-delay.jitter-factor": "0.1",
    "restart-strategy.exponential-delay.reset-backoff-threshold": "1 min",
    "restart-strategy.exponential-delay.attempts-before-reset-backoff": str(SCORING_ATTEMPTS),
}


def delays_s(options: dict[str, str]) -> list[float]:
    """The restart delays (without jitter) an exponential-delay strategy waits through
    before it gives up, in seconds."""
    initial = _seconds(options["restart-strategy.exponential-delay.initial-backoff"])
    most = _seconds(options["restart-strategy.exponential-delay.max-backoff"])
    factor = float(options["restart-strategy.exponential-delay.backoff-multiplier"])
    attempts = int(options["restart-strategy.exponential-delay.attempts-before-reset-backoff"])
    return [min(initial * factor**k, most) for k in range(attempts)]


def _seconds(value: str) -> float:
    number, unit = value.split()
    return float(number) * {"ms": 0.001, "s": 1.0, "min": 60.0}[unit]
