"""dercosim's mosaik simulators, one per kind of thing, by the name a world starts them under."""

#: kind -> "module:Class" (mosaik's "python" starter)
SIMULATORS = {
    "Grid": "dercosim.sims.grid:GridSim",
    "Households": "dercosim.sims.household:HouseholdSim",
    "Batteries": "dercosim.sims.battery:BatterySim",
    "Controllers": "dercosim.sims.controller:ControllerSim",
    "Recorder": "dercosim.sims.recorder:RecorderSim",
    "Planner": "dercosim.sims.planner:PlannerSim",
    "Market": "dercosim.sims.market:MarketSim",
    "Contract": "dercosim.sims.contract:ContractSim",
}
#: the kinds that may run in another process (``[processes]``: the kind in lower case); the recorder writes the
#: run folder and the planner's arguments are objects, so those two stay in the run's process
MOVABLE = ("Grid", "Households", "Batteries", "Controllers", "Market", "Contract")
