"""The controller that hands a learning environment its observations and takes its actions (no gymnasium here).

:class:`AgentController` is a plain controller plug-in: the world's controller simulator calls its ``observe``
every minute and its ``step_many`` for all the agent's households at once, every control period. ``step_many``
puts the observations on a :class:`Channel` and blocks until the environment answers with the setpoints (the
world runs in a worker thread; the environment's ``step`` is the other end). Closing the channel makes the
waiting call raise :class:`EpisodeClosed`, which stops the world the way a signal does: what was recorded is
joined and summarised.
"""

from __future__ import annotations

import itertools
import math
import queue
import threading
from collections.abc import Mapping, Sequence
from typing import Any

#: open channels by key: the controller's parameters name its channel (parameters stay JSON-serialisable)
CHANNELS: dict[str, "Channel"] = {}
_keys = itertools.count()


class EpisodeClosed(KeyboardInterrupt):
    """The environment closed (or reset) mid-episode: the world stops like on a signal, keeping its record."""

    signal_name = "episode closed by the environment"


class Channel:
    """Two queues between the world (worker thread) and the environment, and the minutes seen since the last
    control step.

    ``end_s``: the episode's last control time; the observation there is handed over without waiting for an
    action (the world has one more step to run, not recorded, and the agent's last setpoints hold).
    """

    CLOSE = object()

    def __init__(self, end_s: int) -> None:
        self.key = f"channel-{next(_keys)}"
        self.end_s = int(end_s)
        self.to_env: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.to_world: queue.Queue[Any] = queue.Queue()
        #: (t, {household: its values in ``fields`` order}) of the minutes since the last control step
        self.minutes: list[tuple[int, dict[str, tuple[float, ...]]]] = []
        self.held: dict[str, dict[str, float]] = {}
        self.closed = threading.Event()
        CHANNELS[self.key] = self

    def note(self, t: int, values: dict[str, tuple[float, ...]]) -> None:
        """Every household's observations in minute ``t`` at once (a control step of :class:`AgentController`)."""
        self.minutes.append((t, values))

    def observe(self, t: int, household: str, values: tuple[float, ...]) -> None:
        """One household's observations in minute ``t``, in the agreed field order (called by the world, every
        minute)."""
        if not self.minutes or self.minutes[-1][0] != t:
            self.minutes.append((t, {}))
        self.minutes[-1][1][household] = values

    def exchange(self, t: int, households: Sequence[str]) -> list[dict[str, float]]:
        """Hand the environment the minutes since the last control step (this one's last), then wait for its
        setpoints per household (called by the world, every control period)."""
        minutes, self.minutes = self.minutes, self.minutes[-1:]  # this minute starts the next period too
        self.to_env.put(("obs", t, minutes))
        if t >= self.end_s:  # the episode's last observation: nothing to decide, the setpoints hold
            return [self.held.get(h, {}) for h in households]
        reply = self.to_world.get()
        if reply is Channel.CLOSE:
            raise EpisodeClosed()
        self.held = reply
        return [reply[h] for h in households]

    def close(self) -> None:
        """Release a world waiting for setpoints (it stops with :class:`EpisodeClosed`) and forget the channel."""
        self.closed.set()
        self.to_world.put(Channel.CLOSE)
        CHANNELS.pop(self.key, None)


class AgentController:
    """A household's controller whose setpoints come from a learning environment through a :class:`Channel`,
    stepped every minute (``period_s`` = the clock's step; :class:`AgentObserver` for longer periods).

    ``channel``: the channel's key; ``inputs``/``outputs``: the observations it reads and the setpoints it writes
    (those of the plug-in protocol, :mod:`dercosim.controllers.base`); ``period_s``: the control period, s;
    ``fields``: the order in which every minute's observations go to the environment (NaN for one it lacks).
    """

    thread_safe = False

    def __init__(self, channel: str, inputs: Sequence[str], outputs: Sequence[str], period_s: int = 60,
                 fields: Sequence[str] = ()) -> None:
        self.channel = CHANNELS[channel]
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.period_s = int(period_s)
        self.fields = tuple(fields or inputs)
        self.household = ""

    def bind(self, context: Mapping[str, Any]) -> None:
        self.household = str(context["household"])

    def pack(self, obs: Mapping[str, float]) -> tuple[float, ...]:
        """The observations in the agreed field order."""
        return tuple([obs.get(f, math.nan) for f in self.fields])

    def step(self, t: int, obs: Mapping[str, float]) -> Mapping[str, float]:
        return self.step_many([(self, obs)], t, 1)[0]

    @classmethod
    def step_many(cls, calls: Sequence[tuple["AgentController", Mapping[str, float]]], t: int,
                  threads: int = 1) -> list[dict[str, float]]:
        """All the agent's due households at once: one exchange with the environment."""
        channel = calls[0][0].channel
        if not cls.observes_every_minute:  # this minute's observations come with the step
            channel.note(t, {ctrl.household: ctrl.pack(obs) for ctrl, obs in calls})
        return channel.exchange(t, [ctrl.household for ctrl, _ in calls])

    observes_every_minute = False


class AgentObserver(AgentController):
    """:class:`AgentController` for control periods longer than the step: it notes every minute's observations
    (the reward covers each minute of the period)."""

    observes_every_minute = True

    def observe(self, t: int, obs: Mapping[str, float]) -> None:
        self.channel.observe(t, self.household, self.pack(obs))


class HoldController:
    """The same households without the environment: fixed setpoints every period (the plain run beside which
    ``benchmarks/gym.py`` measures the interface's cost). ``setpoints``: {name: value}."""

    thread_safe = True

    def __init__(self, inputs: Sequence[str], outputs: Sequence[str], period_s: int = 60,
                 setpoints: Mapping[str, float] | None = None, channel: str = "", fields: Sequence[str] = ()) -> None:
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.period_s = int(period_s)
        self.setpoints = {name: float((setpoints or {}).get(name, 0.0)) for name in self.outputs}

    def observe(self, t: int, obs: Mapping[str, float]) -> None:
        pass

    def step(self, t: int, obs: Mapping[str, float]) -> Mapping[str, float]:
        return dict(self.setpoints)
