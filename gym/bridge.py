"""The controller that hands a learning environment its observations and takes its actions (no gymnasium here).

:class:`AgentController` is a plain controller plug-in: the world's controller simulator calls its
``step_many`` for all the agent's households at once, every control period (and :class:`AgentObserver`'s
``observe`` every minute). ``step_many`` hands the observations over through a :class:`Channel` and gets the
environment's setpoints back. The world runs in a greenlet of the environment's own thread: handing over is a
switch of stacks, not a wake-up of another thread (which cost ~0.9 ms a step on the 2-core development VM, a
fifth of a whole IEEE-33 minute), and nothing runs concurrently. Closing the channel makes the waiting call raise
:class:`EpisodeClosed`, which stops the world the way a signal does: what was recorded is joined and summarised.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import greenlet

#: open channels by key: the controller's parameters name its channel (parameters stay JSON-serialisable)
CHANNELS: dict[str, "Channel"] = {}
_keys = itertools.count()


class EpisodeClosed(KeyboardInterrupt):
    """The environment closed (or reset) mid-episode: the world stops like on a signal, keeping its record."""

    signal_name = "episode closed by the environment"


class Channel:
    """The world of one episode, run in a greenlet, and the minutes it saw since the last control step.

    ``run``: runs the world to its end (called in the world's greenlet; it returns what the environment gets
    when the world ends). ``end_s``: the episode's last control time; the observation there is handed over
    without waiting for an action (the world has one more step to run, not recorded, and the agent's last
    setpoints hold).

    Each side keeps its own asyncio "running loop" (mosaik's in the world; the caller's, e.g. a notebook's, in
    the environment), swapped at every switch, so the world runs under a notebook's event loop too.
    """

    CLOSE = object()

    def __init__(self, end_s: int, run: Callable[[], Any]) -> None:
        self.key = f"channel-{next(_keys)}"
        self.end_s = int(end_s)
        #: (t, {household: its values in ``fields`` order}) of the minutes since the last control step
        self.minutes: list[tuple[int, dict[str, tuple[float, ...]]]] = []
        self.held: dict[str, dict[str, float]] = {}
        self.world = greenlet.greenlet(run)
        self.env_side: greenlet.greenlet | None = None
        CHANNELS[self.key] = self

    @property
    def running(self) -> bool:
        """Whether the world has started and not ended."""
        return bool(self.world)  # a greenlet is true while started and not dead

    def resume(self, payload: Any = None) -> Any:
        """Run the world until it hands over its next message (called by the environment): ``("obs", t,
        minutes)`` at a control step, or what ``run`` returned when the world ended."""
        self.env_side = greenlet.getcurrent()
        self.world.parent = self.env_side  # where the world's end returns to
        mine = asyncio._get_running_loop()
        asyncio._set_running_loop(None)
        try:
            return self.world.switch(payload) if self.world else self.world.switch()  # not started: no argument
        finally:
            asyncio._set_running_loop(mine)

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
        """Hand the environment the minutes since the last control step (this one's last) and take its
        setpoints per household (called by the world, every control period)."""
        minutes, self.minutes = self.minutes, self.minutes[-1:]  # this minute starts the next period too
        assert self.env_side is not None
        mine = asyncio._get_running_loop()
        try:
            reply = self.env_side.switch(("obs", t, minutes))
        finally:
            asyncio._set_running_loop(mine)
        if reply is Channel.CLOSE:
            raise EpisodeClosed()
        if t >= self.end_s:  # the episode's last observation: nothing to decide, the setpoints hold
            return [self.held.get(h, {}) for h in households]
        self.held = reply
        return [reply[h] for h in households]

    def close(self) -> Any:
        """Stop a world that waits for setpoints (it ends with :class:`EpisodeClosed`, keeping its record) and
        forget the channel; returns what the world's ``run`` returned (None if it had not started)."""
        CHANNELS.pop(self.key, None)
        if self.running:
            return self.resume(Channel.CLOSE)
        return None


class AgentController:
    """A household's controller whose setpoints come from a learning environment through a :class:`Channel`,
    stepped every minute (``period_s`` = the clock's step; :class:`AgentObserver` for longer periods).

    ``channel``: the channel's key; ``inputs``/``outputs``: the observations it reads and the setpoints it writes
    (those of the plug-in protocol, :mod:`dercosim.controllers.base`); ``period_s``: the control period, s;
    ``fields``: the order in which every minute's observations go to the environment (NaN for one it lacks).
    """

    thread_safe = False
    observes_every_minute = False  #: :class:`AgentObserver` notes every minute through ``observe``

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
                 setpoints: Mapping[str, float] | None = None) -> None:
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.period_s = int(period_s)
        self.setpoints = {name: float((setpoints or {}).get(name, 0.0)) for name in self.outputs}

    def observe(self, t: int, obs: Mapping[str, float]) -> None:
        pass

    def step(self, t: int, obs: Mapping[str, float]) -> Mapping[str, float]:
        return dict(self.setpoints)
