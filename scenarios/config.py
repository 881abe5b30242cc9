"""Scenario schema (pydantic) and loading with clear errors.

A scenario is a TOML file. :func:`load_scenario` returns a validated
:class:`Scenario` or raises :class:`ScenarioError` whose message names the
file, the key path (e.g. ``households.groups[0].buses[2]``) and what was
expected. Bus numbers are the papers' 1-based numbers.
"""

from __future__ import annotations

import re
import tomllib
import types
import typing
from datetime import datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr,
                      ValidationError, model_validator)

from dercosim.grids.ieee33 import N_BUS
from dercosim.timeseries.prices import MARKETS
from dercosim.timeseries.weather import SITES


class ScenarioError(Exception):
    """A scenario file cannot be used; the message says where and why."""


_UNITS_S = {"s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400}


def parse_duration_s(value: Any) -> int:
    """Seconds from an int (seconds) or a string like ``"90s"``, ``"30min"``, ``"6h"``, ``"1d"``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 3600, '90min', '6h' or '1d'")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", value.lower())
        if not m or (m.group(2) or "s") not in _UNITS_S:
            raise ValueError(f"expected a duration such as 3600, '90min', '6h' or '1d', got {value!r}")
        seconds_f = float(m.group(1)) * _UNITS_S[m.group(2) or "s"]
        if seconds_f != int(seconds_f):
            raise ValueError(f"duration {value!r} is not a whole number of seconds")
        seconds = int(seconds_f)
    else:
        raise ValueError(f"expected a duration such as 3600, '90min', '6h' or '1d', got {value!r}")
    if seconds <= 0:
        raise ValueError(f"expected a positive duration, got {value!r}")
    return seconds


def _check_bus(bus: int) -> int:
    if not 1 <= bus <= N_BUS:
        raise ValueError(f"expected a bus of the IEEE 33-bus feeder, 1..{N_BUS} (1-based numbering)")
    return bus


def _all_buses(value: Any) -> Any:
    return list(range(2, N_BUS + 1)) if value == "all" else value


def _pair(value: Any) -> Any:
    """A scalar means a fixed value: (x, x)."""
    return (value, value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _ordered(pair: tuple[float, float]) -> tuple[float, float]:
    if pair[0] > pair[1]:
        raise ValueError(f"expected [low, high] with low <= high, got {list(pair)}")
    return pair


Duration = Annotated[int, BeforeValidator(parse_duration_s)]
BusNumber = Annotated[int, AfterValidator(_check_bus)]
NonNeg = Annotated[float, Field(ge=0)]
Range = Annotated[tuple[NonNeg, NonNeg], BeforeValidator(_pair), AfterValidator(_ordered)]
Positive = Annotated[float, Field(gt=0)]
PositiveRange = Annotated[tuple[Positive, Positive], BeforeValidator(_pair), AfterValidator(_ordered)]
Fraction = Annotated[float, Field(ge=0, le=1)]
FractionRange = Annotated[tuple[Fraction, Fraction], BeforeValidator(_pair), AfterValidator(_ordered)]
Efficiency = Annotated[float, Field(gt=0, le=1)]
Tilt = Annotated[float, Field(ge=0, le=90)]
Azimuth = Annotated[float, Field(ge=0, le=360)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class Clock(_Model):
    """When the run starts (local standard time of the site), how long it lasts, and the step."""

    start: datetime = datetime(2016, 6, 21)
    duration: Duration = 86400  #: seconds, or "6h", "1d", ...
    step_s: Literal[60] = 60  #: profiles are 1-minute; the grid solves every step

    @model_validator(mode="after")
    def _whole_steps(self) -> Clock:
        if self.duration % self.step_s:
            raise ValueError(f"duration ({self.duration} s) must be a whole number of steps of {self.step_s} s")
        return self


class SiteConfig(_Model):
    weather: Literal[tuple(SITES)] = "greensboro_tmy3"  # type: ignore[valid-type]


class BaseLoad(_Model):
    """The case's own load at every bus: ``scale`` × case load × ``shape`` (daily, max 1)."""

    scale: NonNeg = 1.0
    shape: Literal["bdew_h25", "flat"] = "bdew_h25"


class GridConfig(_Model):
    feeder: Literal["ieee33"] = "ieee33"
    engine: Literal["fast", "pandapower"] = "fast"
    v_min_pu: Annotated[float, Field(gt=0)] = 0.90
    v_max_pu: Annotated[float, Field(gt=0)] = 1.10
    line_max_i_ka: Annotated[float, Field(gt=0)] | None = None  #: thermal rating of every line, kA
    base_load: BaseLoad = BaseLoad()

    @model_validator(mode="after")
    def _limits(self) -> GridConfig:
        if self.v_min_pu >= self.v_max_pu:
            raise ValueError(f"v_min_pu ({self.v_min_pu}) must be below v_max_pu ({self.v_max_pu})")
        return self


class HouseholdGroup(_Model):
    """``per_bus`` households at each of ``buses``; parameters drawn uniformly from [low, high]."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")] = "hh"
    buses: Annotated[list[BusNumber], BeforeValidator(_all_buses), Field(min_length=1)]
    per_bus: Annotated[int, Field(ge=1)] = 1
    annual_kwh: Range = (2500.0, 5000.0)
    power_factor: Annotated[float, Field(gt=0, le=1)] = 0.95
    pv_share: Annotated[float, Field(ge=0, le=1)] = 0.5  #: fraction of the group with PV
    pv_kwp: Range = (3.0, 6.0)
    pv_tilt_deg: Annotated[tuple[Tilt, Tilt], BeforeValidator(_pair), AfterValidator(_ordered)] = (15.0, 35.0)
    pv_azimuth_deg: Annotated[tuple[Azimuth, Azimuth], BeforeValidator(_pair),
                              AfterValidator(_ordered)] = (135.0, 225.0)
    aggregate: Annotated[int, Field(ge=1)] = 1  #: homes behind each household entity (a community: their summed load)
    hvac_share: Fraction = 0.0  #: fraction of the group with HVAC (seed 000 eq. 5 thermal model)
    hvac_mode: Literal["cooling", "heating"] = "cooling"
    hvac_p_max_kw: PositiveRange = (2.0, 3.5)  #: electric power when on, kW
    hvac_cop: PositiveRange = (2.5, 3.5)  #: thermal kW per electric kW
    hvac_c_kwh_per_c: PositiveRange = (3.0, 6.0)  #: thermal capacitance, kWh/°C
    hvac_r_c_per_kw: PositiveRange = (2.0, 4.0)  #: thermal resistance, °C/kW
    t_set_c: float = 24.0  #: thermostat setpoint, °C
    comfort_band_c: Positive = 2.0  #: thermostat / comfort band width around t_set_c, °C


class Households(_Model):
    groups: list[HouseholdGroup] = []

    @model_validator(mode="after")
    def _unique_names(self) -> Households:
        names = [g.name for g in self.groups]
        if len(names) != len(set(names)):
            raise ValueError(f"group names must be unique, got {names}")
        return self


class BatteryGroup(_Model):
    """Batteries on households (``at = "households"``) or directly on buses (``at = "buses"``)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")] = "bat"
    at: Literal["households", "buses"] = "households"
    households: Literal["with_pv", "all"] = "with_pv"  #: which households of ``household_group`` get one
    household_group: str | None = None  #: restrict to one household group (None = every group)
    buses: list[BusNumber] = []  #: for at = "buses": one battery per listed bus
    capacity_kwh: Positive = 10.3
    p_charge_max_kw: Positive = 5.3
    p_discharge_max_kw: Positive = 5.3
    eta_charge: Efficiency = 0.9
    eta_discharge: Efficiency = 0.9
    soc_min_frac: Fraction = 0.0
    soc_max_frac: Fraction = 1.0
    self_discharge_per_h: Annotated[float, Field(ge=0, lt=1)] = 0.0  #: fraction of stored energy lost per hour
    soc_init_frac: FractionRange = (0.51, 0.51)  #: fixed, or [low, high] drawn per battery
    soc_init_dist: Literal["uniform", "truncnorm"] = "uniform"  #: truncnorm: mean mid-range, sd range/4, cut to it
    default_mode: Literal["idle", "follow_residual"] = "idle"  #: what the PMS does without a controller

    @model_validator(mode="after")
    def _consistent(self) -> BatteryGroup:
        if self.soc_min_frac >= self.soc_max_frac:
            raise ValueError(f"soc_min_frac ({self.soc_min_frac}) must be below soc_max_frac ({self.soc_max_frac})")
        if self.at == "buses" and not self.buses:
            raise ValueError("at = 'buses' needs a non-empty 'buses' list")
        return self


class Batteries(_Model):
    pms_cycle_s: Annotated[float, Field(ge=0.1, le=60)] = 1.0  #: PMS cycle inside each 60-s step, s
    subminute_sigma_kw: Annotated[float, Field(ge=0)] = 0.0  #: sub-minute residual fluctuation (0 = off), kW
    subminute_tau_s: Positive = 10.0  #: its correlation time, s
    groups: list[BatteryGroup] = []

    @model_validator(mode="after")
    def _cycle_divides_step(self) -> Batteries:
        n = 60.0 / self.pms_cycle_s
        if abs(n - round(n)) > 1e-9:
            raise ValueError(f"pms_cycle_s ({self.pms_cycle_s}) must divide the 60-s step (e.g. 0.1, 0.5, 1, 2, 5)")
        return self


class HemsConfig(_Model):
    """The household energy-management controller, one instance per household it applies to."""

    controller: str | None = None  #: registered name, "module:Class" or "file.py:Class" (relative to this file)
    params: dict[str, Any] = {}  #: passed to the controller's constructor
    applies_to: Literal["with_battery", "with_hvac", "all"] = "with_battery"


class TouPeriodConfig(_Model):
    start: time
    end: time
    import_per_kwh: NonNeg


class TariffConfig(_Model):
    """Retail tariff for household bills. Defaults: the bundled flat GB 2016 tariff."""

    currency: str = "GBP"
    import_per_kwh: NonNeg = 0.15
    export_per_kwh: NonNeg = 0.05
    tou: list[TouPeriodConfig] = []
    peak_demand_per_kw: NonNeg = 0.0  #: two-part tariff: price per kW of each day's peak import (0 = none)


class LatencyConfig(_Model):
    """One-way message latency, s: constant ``a``; uniform ``a``..``b``; lognormal median ``a``, log-sd ``b``."""

    kind: Literal["constant", "uniform", "lognormal"] = "constant"
    a: NonNeg = 0.0
    b: NonNeg = 0.0


class AdmmConfig(_Model):
    """ADMM between the communities and the grid operator (SPEC C); see ``controllers/admm/engine.py``."""

    mode: Literal["sync", "sync_naive", "async"] = "sync"
    rho: Positive = 0.01  #: penalty, currency per kW² (per hour of the exchanged vector)
    eps_abs: Positive = 0.01  #: ε of both residuals, absolute per element (kW); the paper's ε1 = ε2
    eps_rel: NonNeg = 0.0  #: relative part (Boyd et al.), 0 = absolute only
    max_iter: Annotated[int, Field(ge=1)] = 500
    partial_barrier: Annotated[int, Field(ge=1)] | None = None  #: S of N (async); None = all
    max_delay: Annotated[int, Field(ge=1)] = 1  #: τ, iterations (async)
    deadline_s: Positive = 1.0  #: sync_naive: how long the operator waits per iteration, s
    resend_s: Positive = 5.0
    compute_s: NonNeg = 0.0  #: simulated time a community needs per subproblem, s
    latency: LatencyConfig = LatencyConfig()
    loss_prob: Annotated[float, Field(ge=0, lt=1)] = 0.0
    adaptive: bool = False
    factor: Annotated[float, Field(gt=1)] = 2.0
    ratio: Annotated[float, Field(gt=1)] = 10.0
    hysteresis: Annotated[int, Field(ge=1)] = 1
    freeze_after: Annotated[int, Field(ge=1)] = 100
    balance: Literal["relative", "absolute"] = "relative"  #: residual balancing on scaled (default) or raw residuals
    dual_residual: Literal["change", "boyd"] = "change"  #: stop on ‖z − z_prev‖ ≤ ε (kW), or Boyd's ρ‖z − z_prev‖


class StreamsConfig(_Model):
    b2b: bool = True  #: battery to building
    b2g: bool = True  #: battery to grid (spot price)
    trading: bool = True  #: local market between communities


class PlannerConfig(_Model):
    """Community-battery value stacking (SPEC C): an ADMM plan each day handed to batteries and HVAC."""

    kind: Literal["value_stacking"] = "value_stacking"
    communities: str  #: household group whose entities are the communities (use ``aggregate``)
    batteries: str  #: battery group (at = "buses") with one battery on each community's bus
    b2g_market: Literal[tuple(MARKETS)] = "nem_qld"  # type: ignore[valid-type]
    replan: Literal["daily", "hourly"] = "daily"  #: hourly: re-plan every hour to the end of the day
    binaries: Literal["relaxed", "mixed_integer"] = "relaxed"
    central: bool = True  #: also solve the centralised problem and report the ADMM's cost gap
    degradation_per_kw2h: NonNeg = 1e-4  #: α_b, currency per kW² per hour
    trade_penalty_per_kwh: NonNeg = 1e-3  #: the relaxation's small penalty on local buy and sell
    discomfort_per_c2: NonNeg = 0.0  #: β (off by default, SPEC C item 4)
    p_et_max_kw: NonNeg = 100.0  #: local-market buy/sell limit per community
    p_grid_max_kw: Positive = 1000.0
    v_margin_pu: Annotated[float, Field(ge=0, lt=0.1)] = 0.0  #: the operator plans within [v_min + m, v_max − m]
    streams: StreamsConfig = StreamsConfig()
    admm: AdmmConfig = AdmmConfig()


class RecorderConfig(_Model):
    flush_every_s: Annotated[int, Field(ge=60)] = 3600  #: write a row group at least this often (simulated s)


class Scenario(_Model):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    description: str = ""
    seed: Annotated[int, Field(ge=0)] = 0
    clock: Clock = Clock()
    site: SiteConfig = SiteConfig()
    grid: GridConfig = GridConfig()
    households: Households = Households()
    batteries: Batteries = Batteries()
    hems: HemsConfig = HemsConfig()
    tariff: TariffConfig = TariffConfig()
    planner: PlannerConfig | None = None
    recorder: RecorderConfig = RecorderConfig()
    _source_dir: Path | None = PrivateAttr(default=None)

    @property
    def n_steps(self) -> int:
        return self.clock.duration // self.clock.step_s

    @property
    def source_dir(self) -> Path:
        """Folder of the scenario file (for controllers given as "file.py:Class"); cwd if none."""
        return self._source_dir or Path.cwd()

    @model_validator(mode="after")
    def _references(self) -> Scenario:
        groups = {g.name for g in self.households.groups}
        for i, b in enumerate(self.batteries.groups):
            if b.at == "households" and b.household_group is not None and b.household_group not in groups:
                raise ValueError(f"batteries.groups[{i}].household_group: no household group "
                                 f"{b.household_group!r} (groups: {', '.join(sorted(groups)) or 'none'})")
        names = [b.name for b in self.batteries.groups]
        if len(names) != len(set(names)):
            raise ValueError(f"batteries.groups: names must be unique, got {names}")
        if self.planner is not None:
            p = self.planner
            if p.communities not in groups:
                raise ValueError(f"planner.communities: no household group {p.communities!r} "
                                 f"(groups: {', '.join(sorted(groups)) or 'none'})")
            bat = {b.name: b for b in self.batteries.groups}.get(p.batteries)
            if bat is None or bat.at != "buses":
                raise ValueError(f"planner.batteries: need a battery group with at = 'buses' named {p.batteries!r} "
                                 f"(groups: {', '.join(sorted(names)) or 'none'})")
            group = next(g for g in self.households.groups if g.name == p.communities)
            if group.per_bus != 1 or sorted(group.buses) != sorted(bat.buses) or len(set(bat.buses)) != len(bat.buses):
                raise ValueError(f"planner: household group {p.communities!r} needs per_bus = 1 and the same buses "
                                 f"as battery group {p.batteries!r} (got {sorted(group.buses)} and {sorted(bat.buses)})")
            if p.admm.partial_barrier is not None and p.admm.partial_barrier > len(group.buses):
                raise ValueError(f"planner.admm.partial_barrier: {p.admm.partial_barrier} is more than the "
                                 f"{len(group.buses)} communities")
        return self


# ---------------------------------------------------------------- errors


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (through Annotated, list, Optional), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is None and not isinstance(annotation, types.UnionType):
        return None
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] | None = Scenario
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        model = _model_in(field.annotation) if field else None
    return list(model.model_fields) if model else []


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(scenario)"


def _describe(err: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc)
        return f"unknown key; expected one of: {', '.join(allowed)}"
    if err["type"] == "missing":
        return "required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    if "got " not in msg and not isinstance(err["input"], (dict, list)):
        msg += f" (got {err['input']!r})"
    return msg


def format_validation_error(path: str | Path, exc: ValidationError) -> str:
    lines = [f"{path}: invalid scenario"]
    for err in exc.errors():
        loc = tuple(err["loc"])
        # errors across sections carry their key path at the start of the message
        lines.append(f"  {_key_path(loc)}: {_describe(err)}" if loc else f"  {_describe(err)}")
    return "\n".join(lines)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario TOML file; :class:`ScenarioError` on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read scenario file ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"{path}: not a UTF-8 text file") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(format_validation_error(path, exc)) from None
    scenario._source_dir = path.resolve().parent
    return scenario


def scenario_to_toml(scenario: Scenario) -> str:
    """The resolved scenario (every default filled in) as TOML."""
    import tomli_w

    data = scenario.model_dump(mode="python", exclude_none=True)
    return tomli_w.dumps(data)
