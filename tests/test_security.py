"""Who can reach a sidecar: socket permissions, the shared secret, TLS."""

from __future__ import annotations

import logging
import os
import ssl
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest
import trustme
from standalone import standalone

from trio_gotask import SidecarError, connect_gotask, open_gotask

SECRET = "correct horse battery staple"


async def test_unix_socket_is_owner_only(sidecar: str) -> None:
    async with open_gotask(sidecar) as gt:
        assert stat.S_IMODE(os.stat(gt.address).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(gt.address)).st_mode) == 0o700


async def test_tcp_binds_loopback_and_needs_the_secret(sidecar: str) -> None:
    async with open_gotask(sidecar, transport="tcp") as gt:
        assert gt.address.startswith("127.0.0.1:")
        assert await gt.call("App.Hi", "with the secret") == {"hello": "with the secret"}
        # Another local user who found the port, without the secret, gets nowhere.
        with pytest.raises(SidecarError, match="refused the connection"):
            async with connect_gotask(gt.address):
                pass
        assert await gt.call("App.Hi", "still fine") == {"hello": "still fine"}


@pytest.mark.fault(
    fault="client with a wrong or no secret",
    sees="SidecarError at connect, saying which; the sidecar serves others",
)
@pytest.mark.parametrize("transport_flags", [["-address", "127.0.0.1:0"], ["-address", "SOCKET"]])
async def test_secret_on_a_standalone_sidecar(
    sidecar: str, transport_flags: Sequence[str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    flags = [str(tmp_path / "s.sock") if f == "SOCKET" else f for f in transport_flags]
    async with (
        standalone(sidecar, *flags, env={"GOTASK_SECRET": SECRET}) as app,
        connect_gotask(app.address, secret=SECRET) as gt,
    ):
        address = app.address
        assert await gt.call("App.Hi", "friend") == {"hello": "friend"}
        for wrong, says in [
            (None, "requires a secret.*pass the same value as secret="),
            ("guess", "wrong secret.*secret= differs"),
            (SECRET + "x", "wrong secret.*secret= differs"),
        ]:
            with pytest.raises(SidecarError, match=says) as info:
                async with connect_gotask(address, secret=wrong):
                    pass
            assert SECRET not in str(info.value)
        assert await gt.call("App.Hi", "friend again") == {"hello": "friend again"}
    assert SECRET not in caplog.text
    assert SECRET.encode() not in app.stderr


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.mark.fault(
    fault="plain client to a TLS sidecar; client trusting another CA",
    sees="SidecarError at connect naming TLS as the likely cause / the certificate error",
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
        standalone(sidecar, *flags, env={"GOTASK_SECRET": SECRET}) as app,
        connect_gotask(app.address, secret=SECRET, ssl_context=client_context) as gt,
    ):
        address = app.address
        assert await gt.call("App.Hi", "over TLS") == {"hello": "over TLS"}
        assert await gt.call("App.Echo", b"\x00" * 100_000) == b"\x00" * 100_000

        # Speaking plain msgpack to a TLS port fails at once, naming the likely cause.
        with pytest.raises(SidecarError, match=r"speaks TLS.*pass ssl_context="):
            async with connect_gotask(address, secret=SECRET):
                pass
        # Without a secret too it is closed at once, not left to time out (connect_timeout).
        with pytest.raises(SidecarError, match=r"closed the connection before its \$hello.*speaks TLS"):
            async with connect_gotask(address):
                pass

        # A client that does not trust the sidecar's certificate refuses it.
        with pytest.raises(SidecarError, match="CERTIFICATE_VERIFY_FAILED"):
            async with connect_gotask(address, secret=SECRET, ssl_context=ssl.create_default_context()):
                pass

        assert await gt.call("App.Hi", "still over TLS") == {"hello": "still over TLS"}
    assert SECRET.encode() not in app.stderr
