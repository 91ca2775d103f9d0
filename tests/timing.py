"""Time in the tests that talk to real processes.

Their outcomes never depend on how fast the machine is: they wait on events (the handshake, a Go
method saying it has started, a reply), never on a clock. What remains of wall-clock time is the
hang guard: a deadline that only a hung test reaches, however loaded the machine.
"""

HANG = 60.0
"""Seconds after which a wait that should end is a hang: fails the test instead of CI."""
