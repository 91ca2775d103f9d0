"""Who can reach a sidecar: socket permissions, the shared secret, TLS."""

from __future__ import annotations

import logging
import os
import ssl
import stat
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trustme

from trio_gotask import SidecarError, connect_gotask, open_gotask

SECRET = "correct horse battery staple"


@asynccontextmanager
async def standalone(sidecar: str, *flags: str, env: dict[str, str] | None = None) -> AsyncIterator[str]:
    """A sidecar started by hand (not by open_gotask); yields the address from its handshake."""
    process = await trio.lowlevel.open_process(
        [sidecar, "-standalone", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        assert process.stdout is not None
        line = b""
        with trio.fail_after(10):
            while not line.endswith(b"\n"):
                line += await process.stdout.receive_some(1)
        yield line.decode().strip().split("|")[3]
    finally:
        process.terminate()
        with trio.fail_after(10):
            await process.wait()
        assert process.stderr is not None
        stderr = await process.stderr.receive_some(1 << 20)
        assert SECRET.encode() not in stderr, "the secret leaked into the sidecar's log"
        await process.stdout.aclose()  # type: ignore[union-attr]
        await process.stderr.aclose()


async def test_unix_socket_is_owner_only(sidecar: str) -> None:
    async with open_gotask(sidecar) as gt:
        assert stat.S_IMODE(os.stat(gt.address).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(gt.address)).st_mode) == 0o700


async def test_tcp_binds_loopback_and_needs_the_secret(sidecar: str) -> None:
    async with open_gotask(sidecar, transport="tcp") as gt:
        assert gt.address.startswith("127.0.0.1:")
        assert await gt.call("App.Hi", "with the secret") == {"hello": "with the secret"}
        # Another local user who found the port, without the secret, gets nowhere.
        async with connect_gotask(gt.address) as intruder:
            with pytest.raises(SidecarError):
                await intruder.call("App.Hi", "no secret")
        assert await gt.call("App.Hi", "still fine") == {"hello": "still fine"}


@pytest.mark.fault(fault="client with a wrong or no secret", sees="SidecarError; the sidecar serves others")
@pytest.mark.parametrize("transport_flags", [["-address", "127.0.0.1:0"], ["-address", "SOCKET"]])
async def test_secret_on_a_standalone_sidecar(
    sidecar: str, transport_flags: Sequence[str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    flags = [str(tmp_path / "s.sock") if f == "SOCKET" else f for f in transport_flags]
    async with (
        standalone(sidecar, *flags, env={"GOTASK_SECRET": SECRET}) as address,
        connect_gotask(address, secret=SECRET) as gt,
    ):
        assert await gt.call("App.Hi", "friend") == {"hello": "friend"}
        for wrong in [None, "guess", SECRET + "x"]:
            async with connect_gotask(address, secret=wrong) as other:
                with pytest.raises(SidecarError) as info:
                    await other.call("App.Hi", "foe")
                assert SECRET not in str(info.value)
        assert await gt.call("App.Hi", "friend again") == {"hello": "friend again"}
    assert SECRET not in caplog.text


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.mark.fault(
    fault="plain client to a TLS sidecar; client trusting another CA",
    sees="SidecarError / ssl error; TLS clients served",
)
async def test_tls(sidecar: str, ca: trustme.CA, tmp_path: Path) -> None:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    flags = ["-address", "127.0.0.1:0", "-tls-cert", str(cert_file), "-tls-key", str(key_file)]
    async with (
        standalone(sidecar, *flags, env={"GOTASK_SECRET": SECRET}) as address,
        connect_gotask(address, secret=SECRET, ssl_context=client_context) as gt,
    ):
        assert await gt.call("App.Hi", "over TLS") == {"hello": "over TLS"}
        assert await gt.call("App.Echo", b"\x00" * 100_000) == b"\x00" * 100_000

        # Speaking plain msgpack to a TLS port gets the connection closed.
        async with connect_gotask(address, secret=SECRET) as plain:
            with pytest.raises(SidecarError):
                await plain.call("App.Hi", "in clear")

        # A client that does not trust the sidecar's certificate refuses it.
        with pytest.raises(SidecarError, match="CERTIFICATE_VERIFY_FAILED"):
            async with connect_gotask(address, secret=SECRET, ssl_context=ssl.create_default_context()):
                pass

        assert await gt.call("App.Hi", "still over TLS") == {"hello": "still over TLS"}
