"""Writes ``households.csv`` (this folder) from SimBench's 2016 profiles, as a smart-meter export would look.

Three households (SimBench's household profiles H0-A, H0-B and H0-C, each scaled to an annual consumption) and
the PV profile PV5 (output per kWp), 21–22 June 2016, every 15 minutes. Each row is the energy of the quarter
hour that *ends* at its time (``label = "end"``, ``unit = "kWh per step"`` in the scenario). SimBench's clock has
no daylight saving (35,136 quarter hours in 2016); its times are written here as they are.

Run with the ``simbench`` package installed (it ships the profiles): ``python make_households_csv.py``.

References
----------
Meinecke, S. et al. (2020). SimBench — A Benchmark Dataset of Electric Power Systems to Compare Innovative
Solutions Based on Power Flow Analysis. Energies 13(12), 3290.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import simbench

ANNUAL_KWH = {"house_1": ("H0-A", 3200.0), "house_2": ("H0-B", 4100.0), "house_3": ("H0-C", 2700.0)}


def main() -> None:
    profiles = simbench.get_simbench_net("1-LV-rural1--0-sw").profiles
    load, ren = profiles["load"], profiles["renewables"]
    start = pd.Timestamp("2016-06-21 00:00")
    t = pd.to_datetime(load["time"], format="%d.%m.%Y %H:%M")
    window = (t >= start) & (t < start + pd.Timedelta(days=2))
    out = pd.DataFrame({"time": (t[window] + pd.Timedelta(minutes=15)).dt.strftime("%Y-%m-%d %H:%M")})
    for house, (profile, annual_kwh) in ANNUAL_KWH.items():
        shape = load[f"{profile}_pload"]
        kwh_per_quarter = shape / (shape.sum() * 0.25) * annual_kwh * 0.25  # the year sums to annual_kwh
        out[house] = kwh_per_quarter[window].round(4)
    out["pv_kw_per_kwp"] = ren.loc[window.to_numpy(), "PV5"].clip(lower=0).round(4).to_numpy()
    out.to_csv(Path(__file__).with_name("households.csv"), index=False)


if __name__ == "__main__":
    main()
