"""The generic ADMM engine on a sharing problem with a closed-form optimum (the behaviours Jiang & Wang 2024 report)."""

from __future__ import annotations

import numpy as np
import pytest

from dercosim.planning.admm import ADMMSettings, Latency, run_admm


class Quadratic:
    """f(x) = a/2 ‖x − c‖²; its subproblem has a closed form."""

    def __init__(self, a: float, c: np.ndarray) -> None:
        self.a, self.c, self.size = a, np.asarray(c, float), len(c)

    def solve(self, z: np.ndarray, lam: np.ndarray, rho: float) -> np.ndarray:
        return (self.a * self.c - lam + rho * z) / (self.a + rho)


class Balance:
    """g(z) = indicator of Σ_i z_i = d (e.g. the feeder must balance every hour)."""

    def __init__(self, d: np.ndarray) -> None:
        self.d = np.asarray(d, float)

    def solve(self, x, lam, rho):
        v = [xi + li / rho for xi, li in zip(x, lam)]
        shift = (sum(v) - self.d) / len(v)
        return [vi - shift for vi in v]


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    n, t = 6, 24
    a, c, d = rng.uniform(0.5, 2, n), rng.normal(0, 1, (n, t)), rng.normal(2, 1, t)
    nu = (d - c.sum(0)) / (1 / a).sum()  # the multiplier of the balance, analytically
    optimum = c + nu[None, :] / a[:, None]

    def cost(xs):
        return sum(0.5 * a[i] * np.sum((np.asarray(xs[i]) - c[i]) ** 2) for i in range(n))

    return [Quadratic(a[i], c[i]) for i in range(n)], Balance(d), optimum, cost


LATENCY = Latency("lognormal", 0.5, 0.8)


def gap(result, cost, optimum):
    return abs(cost(result.z) - cost(optimum)) / cost(optimum)


def test_sync_reaches_the_centralised_optimum_and_tighter_eps_gets_closer(problem):
    agents, coupling, optimum, cost = problem
    loose = run_admm(agents, coupling, ADMMSettings(eps_abs=1e-2, eps_rel=1e-2))
    tight = run_admm(agents, coupling, ADMMSettings(eps_abs=1e-3, eps_rel=1e-3))
    assert loose.converged and tight.converged
    assert gap(loose, cost, optimum) <= 0.005
    assert gap(tight, cost, optimum) < gap(loose, cost, optimum)
    assert tight.iterations > loose.iterations
    np.testing.assert_allclose(np.sum(tight.z, axis=0), coupling.d, atol=1e-9)  # the coupling holds exactly
    h = tight.history
    assert list(h.columns[:3]) == ["iteration", "t_s", "r_primal"] and len(h) == tight.iterations


def test_async_converges_with_latency_where_naive_sync_does_not(problem):
    agents, coupling, optimum, cost = problem
    naive = run_admm(agents, coupling, ADMMSettings(mode="sync_naive", latency=LATENCY, deadline_s=0.8))
    asynchronous = run_admm(agents, coupling, ADMMSettings(mode="async", partial_barrier=4, max_delay=5,
                                                           latency=LATENCY))
    assert not naive.converged and naive.iterations == 500
    assert asynchronous.converged and asynchronous.iterations < 100
    assert gap(asynchronous, cost, optimum) < 1e-3
    assert asynchronous.history.fresh.min() >= 4  # it did proceed on partial barriers
    assert asynchronous.history.fresh.min() < 6
    assert asynchronous.time_to_decision_s > 0  # iterations took simulated time


def test_async_converges_with_thirty_percent_message_loss(problem):
    agents, coupling, optimum, cost = problem
    r = run_admm(agents, coupling, ADMMSettings(mode="async", partial_barrier=4, max_delay=5, latency=LATENCY,
                                                loss_prob=0.3))
    assert r.messages_lost > 0.2 * r.messages_sent
    assert r.converged and gap(r, cost, optimum) < 1e-3


@pytest.mark.parametrize("bad_rho", [100.0, 0.01])
def test_adaptive_rho_beats_a_badly_chosen_fixed_rho(problem, bad_rho):
    agents, coupling, _, _ = problem
    fixed = run_admm(agents, coupling, ADMMSettings(rho=bad_rho))
    adaptive = run_admm(agents, coupling, ADMMSettings(rho=bad_rho, adaptive=True))
    assert adaptive.converged
    assert adaptive.iterations < fixed.iterations
    assert adaptive.history.rho.iloc[-1] != bad_rho  # it did move


def test_adaptive_rho_freezes(problem):
    agents, coupling, _, _ = problem
    frozen = run_admm(agents, coupling, ADMMSettings(rho=100.0, adaptive=True, freeze_after=6, max_iter=50))
    free = run_admm(agents, coupling, ADMMSettings(rho=100.0, adaptive=True, freeze_after=50, max_iter=50))
    assert frozen.history.rho.iloc[:7].nunique() > 1  # it adapted before the freeze (100 → 50 → 25 → 12.5)
    assert frozen.history.rho.iloc[6:].nunique() == 1  # and not after it
    assert free.history.rho.iloc[6:].nunique() > 1  # where, unfrozen, it would have gone on


def test_same_seed_same_iterations_and_result(problem):
    agents, coupling, _, _ = problem
    settings = ADMMSettings(mode="async", partial_barrier=3, max_delay=4, latency=LATENCY, loss_prob=0.1, seed=7)
    a, b = run_admm(agents, coupling, settings), run_admm(agents, coupling, settings)
    assert a.iterations == b.iterations and a.time_to_decision_s == b.time_to_decision_s
    np.testing.assert_array_equal(np.concatenate(a.z), np.concatenate(b.z))


def test_bad_settings_are_refused(problem):
    agents, coupling, _, _ = problem
    with pytest.raises(ValueError, match="partial_barrier"):
        run_admm(agents, coupling, ADMMSettings(mode="async", partial_barrier=0))
    with pytest.raises(ValueError, match="mode"):
        run_admm(agents, coupling, ADMMSettings(mode="eventually"))  # type: ignore[arg-type]
