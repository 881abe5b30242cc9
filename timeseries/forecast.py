"""Forecasters of a minute series (e.g. a household's residual demand, kW).

Every forecaster answers ``forecast(k, history, horizon)``: at step ``k`` (the
current minute, whose value is measured and is ``history[-1]``), predict the
next ``horizon`` values (steps k+1 .. k+horizon).

- History-based, they get nothing but ``history`` (values up to and including
  step k), so they cannot see the future:

  * :class:`Persistence` — the last value, held;
  * :class:`LinearRegression` — a least-squares line through the last
    ``window`` values, extrapolated (the paper's choice up to an hour ahead),
    clipped to ``[lower, upper]``.

- Oracles, given the true series when they are made (for studies that want to
  isolate forecast error):

  * :class:`Perfect` — the truth;
  * :class:`Noisy` — the truth times ``1 + e(t)``, with ``e`` drawn from the
    seed at points every ``grid_min`` minutes (relative standard deviation
    ``accuracy``, e.g. 0.25) and interpolated linearly between them. It is
    the truth plus seeded error, so it is an oracle by construction.
"""

from __future__ import annotations

import functools
from typing import Protocol

import numpy as np


class Forecaster(Protocol):
    def forecast(self, k: int, history: np.ndarray, horizon: int) -> np.ndarray: ...


class Persistence:
    def forecast(self, k: int, history: np.ndarray, horizon: int) -> np.ndarray:
        last = float(history[-1]) if len(history) else 0.0
        return np.full(horizon, last)


class LinearRegression:
    """Least-squares line through the last ``window`` values, extrapolated ``horizon`` steps."""

    def __init__(self, window: int = 30, lower: float = -np.inf, upper: float = np.inf) -> None:
        if window < 2:
            raise ValueError("window must be at least 2")
        self.window, self.lower, self.upper = int(window), lower, upper

    def forecast(self, k: int, history: np.ndarray, horizon: int) -> np.ndarray:
        y = np.asarray(history[-self.window:], float)
        if len(y) < 2:
            return np.full(horizon, float(y[-1]) if len(y) else 0.0)
        n = len(y)
        x, denominator = _centred(n)  # centred: the least-squares line in closed form
        slope = float(x @ y) / denominator
        intercept = float(np.add.reduce(y) / n) - slope * (n - 1) / 2.0  # y.mean() without its wrapper
        line = intercept + slope * np.arange(n, n + horizon, dtype=float)
        if self.lower == -np.inf and self.upper == np.inf:  # clipping to ±inf changes no number
            return line
        return np.clip(line, self.lower, self.upper)


@functools.lru_cache(maxsize=64)
def _centred(n: int) -> tuple[np.ndarray, float]:
    """0..n−1 centred on its mean, and Σ x² = n (n² − 1) / 12 (made once per window length, read-only)."""
    x = np.arange(n, dtype=float) - (n - 1) / 2.0
    x.flags.writeable = False
    return x, n * (n * n - 1) / 12.0


class Perfect:
    """The truth (an oracle)."""

    def __init__(self, truth: np.ndarray) -> None:
        self.truth = np.asarray(truth, float)

    def forecast(self, k: int, history: np.ndarray, horizon: int) -> np.ndarray:
        return _ahead(self.truth, k, horizon)


class Noisy:
    """The truth times (1 + e), e ~ N(0, accuracy) at every ``grid_min`` minutes, interpolated (an oracle).
    ``step_s``: the series' step, s."""

    def __init__(self, truth: np.ndarray, accuracy: float, grid_min: int, rng: np.random.Generator,
                 step_s: int = 60) -> None:
        truth = np.asarray(truth, float)
        grid = grid_min * 60.0 / step_s  # in steps of the series
        n_points = int(len(truth) // grid) + 2
        points = rng.normal(0.0, accuracy, n_points)
        error = np.interp(np.arange(len(truth)), np.arange(n_points) * grid, points)
        self.series = truth * (1.0 + error)

    def forecast(self, k: int, history: np.ndarray, horizon: int) -> np.ndarray:
        return _ahead(self.series, k, horizon)


def _ahead(series: np.ndarray, k: int, horizon: int) -> np.ndarray:
    """series[k+1 : k+1+horizon], the last value held past the end of the series."""
    out = series[k + 1:k + 1 + horizon]
    fill = out[-1] if len(out) else series[-1]
    return np.concatenate([out, np.full(horizon - len(out), fill)])


def make_forecaster(kind: str, truth: np.ndarray | None = None, rng: np.random.Generator | None = None,
                    window: int = 30, accuracy: float = 0.25, grid_min: int = 120, step_s: int = 60) -> Forecaster:
    """Forecaster by name: "perfect", "persistence", "linear_regression" or "noisy"."""
    if kind == "persistence":
        return Persistence()
    if kind == "linear_regression":
        return LinearRegression(window)
    if kind in ("perfect", "noisy"):
        if truth is None:
            raise ValueError(f"the {kind!r} forecaster needs the true series")
        if kind == "perfect":
            return Perfect(truth)
        return Noisy(truth, accuracy, grid_min, rng if rng is not None else np.random.default_rng(0), step_s)
    raise ValueError(f"unknown forecaster {kind!r}; expected perfect, persistence, linear_regression or noisy")
