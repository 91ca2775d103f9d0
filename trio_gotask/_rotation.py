"""The rotation of several sidecars, free of I/O: which one a call tries next, when one leaves the
rotation and for how long, when it comes back. It takes the time (``now``) and returns decisions;
`Endpoints` acts on them (logs, resolves names again, closes pools), as httpcore plans before it
acts. Deterministic tests drive it with numbers for the clock."""

from __future__ import annotations

import abc
import math
import random
from collections.abc import Callable, Sequence
from typing import Final, Generic, TypeVar

from ._statistics import State

FIRST_BACKOFF: Final = 0.5
"""How long an endpoint that failed once stays out of rotation; each failure in a row doubles it."""
MAX_BACKOFF: Final = 30.0
STRIKES: Final = 3
"""Calls failed in a row at an endpoint in rotation that take it out (see `Rotation.strike`)."""


class Member(abc.ABC):
    """One endpoint's place in the rotation."""

    def __init__(self) -> None:
        self.state: State = "up"
        self.failures = 0
        """Times in a row it left the rotation; a call that succeeds there sets it to 0."""
        self.back_at = -math.inf
        """When it returns to rotation (trio time)."""
        self.retired = False
        self.incidents = 0
        """Times it left the rotation: a call that succeeds puts it back only if it did not
        leave while the call ran."""
        self.strikes = 0
        """Calls failed in a row here: deadlines passed with no answer, connections lost."""
        self.answered = 0
        """Calls it answered (with a result or a Go error), ever."""
        self.probes = 0
        """Calls in flight that were sent while it was out of rotation: after its rest, one at a
        time tries it."""

    @abc.abstractmethod
    def load(self) -> int:
        """Its calls in flight, and callers waiting to send one there."""


M = TypeVar("M", bound=Member)


class Rotation(Generic[M]):
    """The members in rotation order, and the rules that move them in and out."""

    def __init__(self, turn: int | None = None) -> None:
        self.members: list[M] = []
        self._turn = random.randrange(1 << 30) if turn is None else turn
        """Where `pick` starts looking; a random start spreads the first calls of many clients."""

    def pick(self, tried: Sequence[M], clock: Callable[[], float]) -> M | None:
        """The member a call tries next, of those not ``tried``: the least-loaded in rotation,
        ties going round in turn (so that calls spread when each has few in flight, as when many
        clients each make a few), or one out of rotation whose rest is over and that no other
        call is trying; else the one out of rotation that is back soonest. ``clock`` is read
        only when a member is out: the common case needs no clock."""
        members = self.members
        count = len(members)
        if not count:
            return None
        self._turn = turn = (self._turn + 1) % count
        now: float | None = None
        best: M | None = None
        least = math.inf
        soonest: M | None = None
        for i in range(count):
            member = members[(turn + i) % count]
            if tried and member in tried:
                continue
            if member.state != "up":
                if now is None:
                    now = clock()
                if member.back_at > now or member.probes:
                    if soonest is None or member.back_at < soonest.back_at:
                        soonest = member
                    continue
            load = member.load()
            if load < least:
                best, least = member, load
        return best or soonest

    @staticmethod
    def take_out(member: M, state: State, now: float) -> float | None:
        """Take ``member`` out of rotation as ``state`` after a failure, and return for how long;
        ``None`` if it is retired, or out as ``state`` already (the other calls that were trying
        it at the time fail the same way, and do not lengthen its rest)."""
        if member.retired or (member.state == state and member.back_at > now):
            return None
        backoff: float = min(FIRST_BACKOFF * 2.0**member.failures, MAX_BACKOFF)
        member.failures += 1
        member.incidents += 1
        member.strikes = 0
        member.state = state
        member.back_at = now + backoff
        return backoff

    def strike(self, member: M, now: float) -> int | None:
        """A call in flight at ``member`` lost its connection, or ran out of time while it
        answered nothing. Return the strikes in a row if it should leave the rotation now
        (`take_out`), else ``None``: `STRIKES` in a row take it out, unless no other member is
        in rotation (then it is the best there is); one is enough once it is out and its rest is
        over (the call that tried it failed)."""
        if member.retired:
            return None
        member.strikes += 1
        if member.state == "up":
            if member.strikes < STRIKES:
                return None
            if not any(m.state == "up" for m in self.members if m is not member):
                return None
            return member.strikes
        if member.back_at > now:
            return None  # resting already: a call sent before it left says nothing new
        return member.strikes

    @staticmethod
    def answered(member: M) -> None:
        """It answered a call: strikes count failures in a row."""
        member.answered += 1
        member.strikes = 0

    @staticmethod
    def succeeded(member: M, incidents: int) -> bool:
        """A call there returned; ``incidents`` is what its count was when the call began. Return
        whether this puts it back in rotation (it was out, and did not leave while the call ran)."""
        member.answered += 1
        member.strikes = 0
        if member.state != "up" and member.incidents == incidents:
            member.state, member.failures = "up", 0
            return True
        return False
