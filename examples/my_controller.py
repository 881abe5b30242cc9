"""A complete controller in its own file: charge at midday, discharge in the evening.

Run it with examples/my_controller.toml (copy both anywhere):
    dercosim run my_controller.toml
"""


class MyController:
    period_s = 60                                   # called every simulated minute
    inputs = ("net_kw", "soc_frac")                 # what it reads (see controllers/base.py)
    outputs = ("p_set_kw", "follow_residual")       # what it writes

    def __init__(self, evening_start_h=17, power_kw=2.0):
        self.evening_start_h = evening_start_h
        self.power_kw = power_kw

    def step(self, t, obs):
        hour = (t // 3600) % 24
        if obs["net_kw"] < 0:                       # PV surplus: let the PMS soak it up
            return {"p_set_kw": 0.0, "follow_residual": 1.0}
        if hour >= self.evening_start_h and obs["soc_frac"] > 0.1:
            return {"p_set_kw": -self.power_kw, "follow_residual": 0.0}
        return {"p_set_kw": 0.0, "follow_residual": 0.0}
