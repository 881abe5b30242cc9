"""Cooperative price-maker storage by ADMM: wall time against the number of units, beside the central QP.

    python benchmarks/pricemaker.py [--units 2,10,100,1000] [--days 7]

The fleet shares 70 MW (random split from the seed, 1–4 h of storage each;
the two-unit case is a 50 MW / 100 MWh and a 20 MW / 80 MWh unit) and trades
on the bundled GB day-ahead prices from 1 June 2016 with a residual-demand
slope of £0.05/MWh per MWh (Solà Vilalta, Anjos and Cruise 2022: time linear
in the units, about 100× faster than their two-unit Lagrangian reference,
within 0.1 % of it). That reference method is not available here, so the
baseline run side by side is the centralised QP of the same problem (PIQP,
one process). Printed per fleet size: wall time of each, ADMM iterations,
ADMM's time per unit-iteration, the cost gap, and the growth ratio
(time(N)/time(2)) / (N/2) — 1 means linear in the units.
"""

from __future__ import annotations

import argparse

from dercosim.planning.sharing.price_maker import ResidualDemand, solve_admm, solve_central
from dercosim.studies.sharing import PRICE_MAKER_SLOPE, fleet_units, gb_prices, price_maker_settings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", default="2,10,100,1000")
    ap.add_argument("--days", type=int, default=7)
    args = ap.parse_args(argv)
    market = ResidualDemand(gb_prices(args.days), PRICE_MAKER_SLOPE)
    rows = []
    print(f"{args.days} days of half-hourly GB prices; fleet of 70 MW; slope £0.05/MWh per MWh")
    print(f"{'units':>6} {'central s':>10} {'ADMM s':>8} {'iter.':>6} {'ms/unit-it.':>12} {'gap':>10} "
          f"{'ADMM/central':>13} {'growth central':>15} {'growth ADMM':>12}")
    for n in (int(u) for u in args.units.split(",")):
        fleet = fleet_units(n)
        c = solve_central(fleet, market, dt_h=0.5)
        a = solve_admm(fleet, market, price_maker_settings(), dt_h=0.5)
        rows.append((n, c.wall_s, a.wall_s))
        n0, c0, a0 = rows[0]
        print(f"{n:6d} {c.wall_s:10.3f} {a.wall_s:8.3f} {a.iterations:6d} {1000 * a.wall_s / (n * a.iterations):12.3f} "
              f"{(a.cost - c.cost) / abs(c.cost):+10.2e} {a.wall_s / c.wall_s:13.1f} "
              f"{(c.wall_s / c0) / (n / n0):15.2f} {(a.wall_s / a0) / (n / n0):12.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
