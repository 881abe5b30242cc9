"""Seeded random streams: one independent stream per purpose, all from the scenario seed.

Streams are keyed by a name, so adding a new random consumer never changes
the numbers another consumer draws.
"""

from __future__ import annotations

import zlib

import numpy as np


def rng_for(seed: int, purpose: str) -> np.random.Generator:
    """Generator for ``purpose`` derived from the scenario ``seed`` (stable across runs and platforms)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(purpose.encode())]))
