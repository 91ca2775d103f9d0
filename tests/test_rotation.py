"""The rotation planner, driven with numbers for the clock: no sidecar, no event loop."""

from __future__ import annotations

import math

import pytest

from trio_gotask._rotation import FIRST_BACKOFF, MAX_BACKOFF, STRIKES, Member, Rotation

pytestmark = pytest.mark.fast  # no process: nox -s fast


class Fake(Member):
    def __init__(self, name: str, load: int = 0) -> None:
        super().__init__()
        self.name = name
        self.calls = load

    def load(self) -> int:
        return self.calls

    def __repr__(self) -> str:
        return self.name


def rotation(*members: Fake) -> Rotation[Fake]:
    planned: Rotation[Fake] = Rotation(turn=0)
    planned.members.extend(members)
    return planned


def never() -> float:
    raise AssertionError("the clock was read with every member in rotation")


def test_the_least_loaded_is_picked_and_ties_go_round() -> None:
    a, b, c = Fake("a", 2), Fake("b"), Fake("c")
    planned = rotation(a, b, c)
    assert planned.pick([], never) is b
    c.calls = 0
    picks = [planned.pick([], never) for _ in range(4)]
    assert set(picks) == {b, c}  # ties between b and c alternate with the turn
    assert planned.pick([b, c], never) is a  # tried ones are skipped
    assert planned.pick([a, b, c], never) is None
    assert rotation().pick([], never) is None


def test_backoff_doubles_up_to_its_ceiling_and_a_repeat_does_not_lengthen_it() -> None:
    a = Fake("a")
    planned = rotation(a, Fake("b"))
    now = 100.0
    rests = []
    for _ in range(10):
        rest = planned.take_out(a, "down", now)
        assert rest is not None
        rests.append(rest)
        assert planned.take_out(a, "down", now) is None  # the same failure, seen by another call
        now += rest
    assert rests[:3] == [FIRST_BACKOFF, 2 * FIRST_BACKOFF, 4 * FIRST_BACKOFF]
    assert rests[-1] == MAX_BACKOFF and max(rests) == MAX_BACKOFF
    assert a.failures == 10 and a.incidents == 10 and a.state == "down"


def test_one_out_is_tried_by_one_call_after_its_rest() -> None:
    a, b = Fake("a"), Fake("b", load=5)
    planned = rotation(a, b)
    planned.take_out(a, "stalled", now=10.0)
    assert planned.pick([], lambda: 10.1) is b  # resting
    assert planned.pick([b], lambda: 10.1) is a  # nothing else left: the one back soonest
    assert planned.pick([], lambda: 10.0 + FIRST_BACKOFF) is a  # its rest is over: a probe
    a.probes = 1
    assert planned.pick([], lambda: 99.0) is b  # one probe at a time
    a.probes = 0
    incidents = a.incidents
    assert planned.succeeded(a, incidents)
    assert (a.state, a.failures) == ("up", 0)


def test_a_success_that_began_before_it_left_does_not_bring_it_back() -> None:
    a = Fake("a")
    planned = rotation(a, Fake("b"))
    began = a.incidents
    planned.take_out(a, "draining", now=0.0)
    assert not planned.succeeded(a, began)
    assert a.state == "draining" and a.answered == 1


def test_strikes_in_a_row_take_one_out_unless_it_is_the_last_in_rotation() -> None:
    a, b = Fake("a"), Fake("b")
    planned = rotation(a, b)
    for _ in range(STRIKES - 1):
        assert planned.strike(a, now=0.0) is None
    planned.answered(a)  # an answer resets the count
    assert all(planned.strike(a, now=0.0) is None for _ in range(STRIKES - 1))
    assert planned.strike(a, now=0.0) == STRIKES
    planned.take_out(a, "stalled", now=0.0)
    # b is now the last in rotation: strikes never take it out.
    assert all(planned.strike(b, now=0.0) is None for _ in range(2 * STRIKES))
    # a, out and resting, learns nothing from a call sent before it left; after its rest, one
    # failed probe is enough.
    assert planned.strike(a, now=FIRST_BACKOFF / 2) is None
    assert planned.strike(a, now=FIRST_BACKOFF) is not None


def test_a_retired_member_is_left_alone() -> None:
    a = Fake("a")
    a.retired = True
    planned = rotation(a, Fake("b"))
    assert planned.take_out(a, "down", now=0.0) is None
    assert planned.strike(a, now=0.0) is None
    assert a.state == "up" and a.back_at == -math.inf
