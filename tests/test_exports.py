"""The public surface is small and deliberate."""

from __future__ import annotations

import inspect
import types

import pytest

import trio_gotask

pytestmark = pytest.mark.fast  # no process: nox -s fast


def test_exports() -> None:
    assert sorted(trio_gotask.__all__) == sorted(
        [
            "PROTOCOL_VERSION",
            "BadParams",
            "BadReply",
            "CallInfo",
            "CallNext",
            "EndpointStatistics",
            "GoTask",
            "GoTaskError",
            "GoTaskStatistics",
            "HostCallInfo",
            "HostCallNext",
            "HostInterceptor",
            "Interceptor",
            "ItemStream",
            "MethodNotFound",
            "PanicError",
            "ProtocolError",
            "RemoteError",
            "RestartPolicy",
            "Service",
            "ShuttingDown",
            "SidecarError",
            "build_sidecar",
            "connect_gotask",
            "open_gotask",
        ]
    )
    for name in trio_gotask.__all__:
        obj = getattr(trio_gotask, name)
        assert not name.startswith("_")
        if isinstance(obj, types.GenericAlias):
            continue  # a type alias such as CallNext (which Python 3.10 calls a class): docs/api.md
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, f"{name} has no docstring"
            assert obj.__module__.startswith("trio_gotask.")


def test_errors_share_a_base() -> None:
    for name in [
        "BadParams",
        "BadReply",
        "MethodNotFound",
        "PanicError",
        "ProtocolError",
        "RemoteError",
        "SidecarError",
    ]:
        assert issubclass(getattr(trio_gotask, name), trio_gotask.GoTaskError)
