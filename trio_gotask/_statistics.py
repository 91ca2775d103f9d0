"""Statistics records: what `GoTask.statistics` reports, gathered from the layers that know it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

State = Literal["up", "down", "draining", "stalled"]
"""An endpoint's place in the rotation: in it (``up``), or out of it and why."""


@dataclass(frozen=True)
class EndpointStatistics:
    """One endpoint of a `GoTask` given several addresses, from `GoTask.statistics`."""

    address: str
    """The sidecar, as ``host:port``."""
    state: State
    """``up`` (in rotation); out of rotation: ``down`` (unreachable, or its connections were
    lost with calls in flight), ``draining`` (shutting down: it sent ``$goaway``, or answered
    ``shutting_down``) or ``stalled`` (calls' deadlines passed there while it answered nothing:
    a frozen or hung sidecar)."""
    connections: int
    """Open connections to this sidecar."""
    in_flight: int
    """Calls running on this sidecar now, including callers waiting for a free slot on it."""
    failures: int
    """Times in a row it left the rotation; a call that succeeds there sets it to 0."""
    source: str = ""
    """What it came from: the address as given, or the ``dns:`` name it resolved from."""


@dataclass(frozen=True)
class Load:
    """What a `Router` carries now, for `GoTask.statistics`."""

    connections: int
    opened: int
    in_flight: int
    restarts: int = 0
    endpoints: tuple[EndpointStatistics, ...] = ()
    abandoned: int = 0
    streams: int = 0
