"""The training schedule's crontab (`schedule.cron`), parsed by APScheduler. Here at the service
edge, not in the core's config, so validating a config loads no scheduler; the config loader
checks the expression with the same parser the daemon schedules with, so a crontab that loads
is one the daemon accepts."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger

EXAMPLE = '"0 2 * * *" for 02:00 UTC daily'


def cron_trigger(expression: str) -> CronTrigger:
    """The trigger for a five-field crontab, in UTC; ValueError naming what is wrong."""
    from apscheduler.triggers.cron import CronTrigger  # a scheduler only where one is needed

    return CronTrigger.from_crontab(expression, timezone="UTC")


def cron_problem(expression: str) -> str | None:
    """What is wrong with a crontab, in words for a config error; None: it parses (or is empty)."""
    if not expression.strip():
        return None
    try:
        cron_trigger(expression)
    except ValueError as exc:
        return f"not a crontab expression ({exc}); e.g. {EXAMPLE}"
    return None
