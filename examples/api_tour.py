# %% [markdown]
# # dercosim from Python: load, change, run a window, read, plot
#
# A notebook in the percent format (open it in Jupyter with jupytext, in VS Code or Spyder as cells, or run it
# whole: `python examples/api_tour.py [OUT_DIR]`). The test suite runs it end to end
# (`tests/test_api.py::test_the_api_tour_runs`).

# %%
import sys
from pathlib import Path

import dercosim as dc

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs")
print("dercosim", dc.__version__)

# %% [markdown]
# ## Load a bundled scenario (or a path) and change one key
# `set` takes the key paths of the error messages and of `dercosim run --set`, and validates the whole scenario
# again: a wrong key or value raises `ScenarioError` naming it, and leaves the scenario as it was.

# %%
sc = dc.load("households_mpc")
sc.set("hems.params.period_s", 60).set("seed", 1)
try:
    sc.set("batteries.groups[0].capacity_kwh", -5)
except dc.ScenarioError as exc:
    print("refused:", exc)
assert sc.batteries.groups[0].capacity_kwh > 0

# %% [markdown]
# ## Run a window
# From 06:00 for one hour: the six hours before are simulated, not recorded, so the window's numbers are those
# of the whole run. `plots=False` writes no figures (they can still be drawn below).

# %%
res = dc.run(sc, start="06:00", until="1h", out=out / "api-tour", plots=False)
print(res)
print("window:", res.summary["window"]["start"], "| steps recorded:", res.summary["steps"])
print("voltage range: %.4f .. %.4f pu" % (res.summary["voltage"]["min_pu"], res.summary["voltage"]["max_pu"]))

# %% [markdown]
# ## Read results by kind
# Each kind of entity comes with only its own columns; nothing is read until asked for, and filters are pushed
# down to the parquet file.

# %%
households = res.households                       # tidy: one row per step and household
print(households.columns.tolist())
vm = res.wide("bus", "vm_pu")                     # local time × bus
print(vm.shape, "lowest bus voltage", round(float(vm.min().min()), 4))
soc = res.wide("battery", "soc_kwh", start_s=res.summary["window"]["warm_up_s"] + 1800)
print("mean battery SoC in the last half hour: %.2f kWh" % soc.to_numpy().mean())

# %% [markdown]
# ## Plot, and open the folder again later

# %%
fig = res.plot.voltage_envelope()                 # a matplotlib figure; save=True writes the PNG as well
again = dc.Result.open(res.out_dir)
assert again.summary["steps"] == res.summary["steps"]
print("recorded with", {k: again.versions[k] for k in ("dercosim", "casadi", "lightsim2grid")})
