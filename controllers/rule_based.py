"""Rule-based self-consumption HEMS: the baseline later controllers must beat.

Charge from surplus PV, discharge to cover the residual demand, never import
to charge. By default it tells the PMS to follow the actual residual every
cycle (``follow_residual = 1``); with ``follow_in_pms = false`` it holds the
minute's residual as a setpoint instead, which shows what the real-time loop adds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from dercosim.controllers.base import BaseController, whole_number


class RuleBasedParams(BaseModel):
    """Parameters of :class:`RuleBasedController` (checked when a scenario loads)."""

    model_config = ConfigDict(extra="forbid")

    follow_in_pms: bool = True  #: the PMS follows the residual every cycle (else holds the minute's value)
    period_s: Annotated[int, BeforeValidator(whole_number), Field(ge=60, le=3600, multiple_of=60)] = 60


class RuleBasedController(BaseController):
    period_s = 60
    inputs = ("net_kw",)
    outputs = ("p_set_kw", "follow_residual")
    Params = RuleBasedParams
    follow_in_pms: bool  #: set from the parameters

    @classmethod
    def parameters(cls) -> dict[str, object]:
        return {"follow_in_pms": True, "period_s": 60}

    def __init__(self, **params: object) -> None:
        super().__init__(**params)
        self.period_s = int(self.period_s)

    def step(self, t: int, obs: Mapping[str, float]) -> Mapping[str, float]:
        # surplus (net < 0) charges, deficit (net > 0) discharges: p = −net.
        # The PMS clips to power and SoC limits, so the battery never imports to charge.
        return {"p_set_kw": -float(obs["net_kw"]), "follow_residual": 1.0 if self.follow_in_pms else 0.0}
