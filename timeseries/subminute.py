"""Sub-minute fluctuation of a residual demand, for the battery PMS cycles.

Household profiles are minute means. Within a minute real demand flickers
(appliance cycling, cloud edges). :class:`SubminuteFluctuation` adds a
seeded AR(1) signal of standard deviation ``sigma_kw`` and correlation time
``tau_s``, with its mean over every minute removed, so the minute energy of
the profile is unchanged while the cycle-by-cycle residual is not flat.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter


class SubminuteFluctuation:
    def __init__(self, n: int, n_cycles: int, cycle_s: float, sigma_kw: float | np.ndarray,
                 tau_s: float, rng: np.random.Generator) -> None:
        self.n, self.n_cycles = n, n_cycles
        self.sigma_kw = np.broadcast_to(np.asarray(sigma_kw, float), (n,))
        self.phi = float(np.exp(-cycle_s / tau_s)) if tau_s > 0 else 0.0
        self.rng = rng
        self.state = np.zeros((1, n))

    def next_step(self) -> np.ndarray:
        """(n_cycles, n) fluctuation in kW for the next step; zero mean over the step per column."""
        if not np.any(self.sigma_kw > 0):
            return np.zeros((self.n_cycles, self.n))
        eps = self.rng.standard_normal((self.n_cycles, self.n))
        scale = np.sqrt(1.0 - self.phi ** 2)
        x, self.state = lfilter([scale], [1.0, -self.phi], eps, axis=0, zi=self.state * self.phi)
        x = x - x.mean(axis=0, keepdims=True)
        return x * self.sigma_kw[None, :]
