"""How long the work loop waits before it tries again after a step failed for a reason outside
itself (the database or the disk away, the cluster unreachable): doubling from `base` up to
`cap`, with jitter so several daemons on one database do not retry in step. Without it a batch
waiting in the inbox was retried at every settle tick, ~50 log lines a second for as long as
PostgreSQL was down."""

from __future__ import annotations

import random
import time
from collections.abc import Callable


class Backoff:
    def __init__(
        self,
        base: float = 1.0,
        cap: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.base, self.cap, self.clock = base, cap, clock
        self.rng = rng or random.Random()
        self.failures = 0
        self._until = 0.0

    def failed(self) -> float:
        """One more failure in a row: the pause before the next try (half fixed, half random)."""
        self.failures += 1
        ceiling = min(self.cap, self.base * 2.0 ** (self.failures - 1))
        delay = ceiling / 2 + self.rng.uniform(0, ceiling / 2)
        self._until = self.clock() + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self._until = 0.0

    def remaining(self) -> float:
        """Seconds until the next try is due (0: now)."""
        return max(self._until - self.clock(), 0.0)
