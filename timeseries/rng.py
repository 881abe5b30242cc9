"""Seeded random streams: one independent stream per purpose, all from the scenario seed.

Streams are keyed by a name, so adding a new random consumer never changes
the numbers another consumer draws.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np


def rng_for(seed: int, purpose: str) -> np.random.Generator:
    """Generator for ``purpose`` derived from the scenario ``seed`` (stable across runs and platforms)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(purpose.encode())]))


class DayStreams:
    """Random streams for one purpose, one per calendar day: what is drawn for a day depends only on the seed, the
    purpose and the date, so a run of N days is the first N days of a longer run, and a run that starts later
    draws the same numbers for the days it shares with an earlier one."""

    def __init__(self, seed: int, purpose: str) -> None:
        self.seed = int(seed)
        self.purpose = purpose

    def day(self, date: Any) -> np.random.Generator:
        """The stream of the calendar day ``date`` (anything with ``strftime``, e.g. a Timestamp)."""
        return rng_for(self.seed, f"{self.purpose}:{date.strftime('%Y-%m-%d')}")

    def fixed(self, what: str) -> np.random.Generator:
        """A stream of this purpose that does not depend on the day (e.g. a household's habits)."""
        return rng_for(self.seed, f"{self.purpose}:{what}")
