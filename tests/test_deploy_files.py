"""The deployment files of docs/remote-sidecars.md (examples/kubernetes, examples/systemd): the page
shows them as they are, Kubernetes' schemas and systemd accept them, the real sidecar serves with
their flags, and the numbers that must agree across them do."""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import ssl
import struct
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import trustme
import yaml
from kubernetes_validate.utils import all_versions
from standalone import standalone

from trio_gotask import EndpointStatistics, GoTaskStatistics, connect_gotask

pytestmark = pytest.mark.slow  # the Dockerfile and deploy files: the newest Python only

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "remote-sidecars.md"
KUBERNETES = ROOT / "examples" / "kubernetes"
DEPLOYMENT = KUBERNETES / "deployment.yaml"
SERVICE = KUBERNETES / "service.yaml"
DOCKERFILE = KUBERNETES / "Dockerfile"
UNIT = ROOT / "examples" / "systemd" / "gotask-sidecar.service"
FILES = sorted([*KUBERNETES.iterdir(), *UNIT.parent.iterdir()])

# A file shown in the page: a line "[`path`](../path):", a blank line, then a fenced block.
SHOWN = re.compile(
    r"^\[`(?P<path>[^`]+)`\]\((?P<link>[^)]+)\):\n\n```[\w-]*\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL
)


def load(path: Path) -> dict[str, Any]:
    (document,) = yaml.safe_load_all(path.read_text())
    assert isinstance(document, dict)
    return document


def container() -> dict[str, Any]:
    (only,) = load(DEPLOYMENT)["spec"]["template"]["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def unit_settings() -> dict[str, list[str]]:
    """The unit's settings, ``Key`` to its values in order, continuation lines joined."""
    settings: dict[str, list[str]] = {}
    text = UNIT.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def exec_start() -> list[str]:
    """The unit's command: the program, then the sidecar's flags."""
    (command,) = unit_settings()["ExecStart"]
    return shlex.split(command)


def flag_values(args: list[str]) -> dict[str, str]:
    """``-name=value`` arguments as ``{"name": "value"}``; a bare ``-name`` is ``"true"``."""
    values = {}
    for arg in args:
        assert arg.startswith("-"), f"{arg!r}: write each flag as -name=value, so each is one argument"
        name, _, value = arg[1:].partition("=")
        values[name] = value or "true"
    return values


def seconds(duration: str) -> float:
    """A Go duration or a systemd time span such as ``20s``, ``1m30s`` or ``500ms``."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[u] for n, u in parts)


def test_the_page_shows_every_file_as_it_is() -> None:
    shown = {m["path"]: m for m in SHOWN.finditer(DOC.read_text())}
    assert sorted(shown) == [str(p.relative_to(ROOT)) for p in FILES]
    for path, match in shown.items():
        assert match["link"] == f"../{path}"
        assert match["body"] == (ROOT / path).read_text(), f"copy {path} into {DOC.name} again"


def test_manifests_match_the_kubernetes_schemas() -> None:
    # strict: a field the schema does not know, a typo say, is an error and not ignored.
    versions = all_versions()
    for path in (DEPLOYMENT, SERVICE):
        for version in (versions[0], versions[-1]):
            kubernetes_validate.validate(load(path), version, strict=True)
    typo = load(DEPLOYMENT)
    typo["spec"]["template"]["spec"]["terminationGracePeriod"] = 30
    with pytest.raises(kubernetes_validate.ValidationError, match="terminationGracePeriod"):
        kubernetes_validate.validate(typo, versions[-1], strict=True)


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing: install Debian's systemd package")
        pytest.skip("systemd-analyze is not installed")
    return found


def test_the_unit_passes_systemd_analyze(sidecar: str, tmp_path: Path) -> None:
    analyze = systemd_analyze()
    # verify checks that the program exists: point the unit at the example sidecar.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(exec_start()[0], sidecar))
    verify = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in verify.stderr.splitlines() if UNIT.stem in line]
    assert verify.returncode == 0 and not complaints, verify.stderr
    # It does complain about a mistake, rather than ignoring it.
    unit.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSystem=strikt"))
    verify = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert "strikt" in verify.stderr
    unit.write_text(unit.read_text().replace("ProtectSystem=strikt", "ProtectSystem=strict"))
    # The hardening stays: systemd shows exposure from 0 to 10 ("OK" below 2), and compares
    # --threshold with ten times that.
    security = subprocess.run(
        [analyze, "security", "--offline=true", "--threshold=20", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert security.returncode == 0, security.stdout + security.stderr


def sidecar_flags(sidecar: str) -> set[str]:
    """The flags the sidecar defines, from its -h."""
    usage = subprocess.run([sidecar, "-h"], capture_output=True, text=True, timeout=60)
    return set(re.findall(r"^  -([\w-]+)", usage.stderr, re.MULTILINE))


def test_the_files_use_flags_the_sidecar_has(sidecar: str) -> None:
    known = sidecar_flags(sidecar)
    assert {"address", "standalone", "grace", "tls-cert"} <= known  # the -h output was read
    for args in (container()["args"], exec_start()[1:]):
        assert set(flag_values(args)) <= known


@pytest.mark.parametrize("source", ["deployment", "unit"])
async def test_the_sidecar_serves_with_the_files_flags(sidecar: str, source: str, tmp_path: Path) -> None:
    """The example sidecar started with the file's flags, as the file starts it: TLS, the secret,
    the limits and the grace; only the address (a free loopback port) and the folder of the
    certificate differ."""
    args = container()["args"] if source == "deployment" else exec_start()[1:]
    values = flag_values(args)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / Path(values["tls-cert"]).name))
    cert.private_key_pem.write_to_path(str(tmp_path / Path(values["tls-key"]).name))
    values["address"] = "127.0.0.1:0"
    for name in ("tls-cert", "tls-key"):
        values[name] = str(tmp_path / Path(values[name]).name)
    del values["standalone"]  # standalone() passes it
    client = ssl.create_default_context()
    ca.configure_trust(client)
    secret = "a secret from the environment"
    flags = [f"-{name}={value}" for name, value in values.items()]
    async with (
        standalone(sidecar, *flags, env={"GOTASK_SECRET": secret}) as app,
        connect_gotask(app.address, secret=secret, ssl_context=client) as gt,
    ):
        assert await gt.call("App.Hi", "there") == {"hello": "there"}
    # standalone() stopped it with SIGTERM and checked that it exited 0.


def test_the_stop_timeouts_cover_the_grace() -> None:
    pod = load(DEPLOYMENT)["spec"]["template"]["spec"]
    grace = seconds(flag_values(container()["args"])["grace"])
    assert pod["terminationGracePeriodSeconds"] > grace
    settings = unit_settings()
    assert seconds(flag_values(exec_start()[1:])["grace"]) < seconds(settings["TimeoutStopSec"][0])
    assert settings["KillSignal"] == ["SIGTERM"]
    assert "preStop" not in container().get("lifecycle", {})  # the sidecar drains itself


def test_ports_names_and_paths_agree() -> None:
    sidecar = container()
    values = flag_values(sidecar["args"])
    listen_port = int(values["address"].rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    probe_port = sidecar["readinessProbe"]["tcpSocket"]["port"]
    assert ports.get(probe_port, probe_port) == listen_port
    service = load(SERVICE)["spec"]
    assert service["clusterIP"] == "None"  # headless: DNS answers with every pod
    (service_port,) = service["ports"]
    assert ports.get(service_port["targetPort"], service_port["targetPort"]) == listen_port
    template = load(DEPLOYMENT)["spec"]["template"]
    assert service["selector"].items() <= template["metadata"]["labels"].items()
    # The page's client connects to this Service's name and port.
    name = load(SERVICE)["metadata"]["name"]
    assert f'"dns:{name}.default.svc.cluster.local:{service_port["port"]}"' in DOC.read_text()
    # The key and certificate come from the kubernetes.io/tls Secret's mount.
    (mount,) = sidecar["volumeMounts"]
    (volume,) = template["spec"]["volumes"]
    assert mount["name"] == volume["name"] and "secretName" in volume["secret"]
    assert values["tls-cert"] == f"{mount['mountPath']}/tls.crt"
    assert values["tls-key"] == f"{mount['mountPath']}/tls.key"
    secret_env = {e["name"]: e["valueFrom"] for e in sidecar["env"]}["GOTASK_SECRET"]
    assert "secretKeyRef" in secret_env
    assert listen_port == int(flag_values(exec_start()[1:])["address"].rsplit(":", 1)[1])


def has_interpreter(path: Path) -> bool:
    """Whether the ELF executable at ``path`` names a dynamic loader (a PT_INTERP header)."""
    data = path.read_bytes()
    assert data[:5] == b"\x7fELF\x02", "expected a 64-bit ELF file"
    order = "<" if data[5] == 1 else ">"
    (phoff,) = struct.unpack_from(order + "Q", data, 0x20)
    entry_size, count = struct.unpack_from(order + "HH", data, 0x36)
    return any(struct.unpack_from(order + "I", data, phoff + i * entry_size)[0] == 3 for i in range(count))


@pytest.mark.skipif(os.uname().sysname != "Linux", reason="the image is Linux; so is its build")
def test_the_dockerfile_builds_a_static_sidecar(sidecar: str, tmp_path: Path) -> None:
    """The Dockerfile's build line, run on the example sidecar, makes a binary that needs no libc
    (the image has none), unlike a plain build."""
    (line,) = [ln for ln in DOCKERFILE.read_text().splitlines() if "go build" in ln]
    words = shlex.split(line.removeprefix("RUN "))
    env = {}
    while "=" in words[0]:
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    output = words.index("-o") + 1
    assert f"COPY --from=build {words[output]} /sidecar" in DOCKERFILE.read_text()
    built = tmp_path / "sidecar"
    words[output] = str(built)
    subprocess.run(words, cwd=ROOT / "go" / "example", env={**os.environ, **env}, check=True, timeout=600)
    assert not has_interpreter(built)
    assert has_interpreter(Path(sidecar))  # the check can tell
    entrypoint = [ln for ln in DOCKERFILE.read_text().splitlines() if ln.startswith("ENTRYPOINT")]
    assert entrypoint == ['ENTRYPOINT ["/sidecar"]'] and "command" not in container()
    assert sidecar_flags(str(built)) == sidecar_flags(sidecar)


def test_the_statistics_the_page_explains_exist() -> None:
    section = DOC.read_text().split("### Reading statistics()", 1)[1]
    named = re.findall(r"^\| `([^|]+)` \|", section, re.MULTILINE)
    fields = {f.name for f in dataclasses.fields(GoTaskStatistics)}
    endpoint_fields = {f.name for f in dataclasses.fields(EndpointStatistics)}
    seen = 0
    for cell in named:
        for name in re.findall(r"`?([\w\[\].]+)`?(?:, )?", cell):
            if name.startswith("endpoints[i]."):
                assert name.removeprefix("endpoints[i].") in endpoint_fields, name
            else:
                assert name in fields, name
            seen += 1
    assert seen >= 10


def mebibytes(quantity: str) -> int:
    """A Kubernetes memory quantity such as ``256Mi``, in MiB."""
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * {"Mi": 1, "Gi": 1024}[unit]


async def test_the_memory_limit_holds_under_attack(sidecar: str) -> None:
    """The deployment's flags hold its memory limit against the hostile clients of
    benchmarks/attack_sidecar.py (issue 23): connections that declare the largest frame and hold,
    beside ordinary calls; a client that asks for large replies and never reads; silent
    connections by the thousand. TLS and the secret are left out: the attacks pass them."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import attack_sidecar

    values = flag_values(container()["args"])
    for name in ("standalone", "address", "tls-cert", "tls-key"):
        del values[name]
    flags = [f"-{name}={value}" for name, value in values.items()]
    limit = mebibytes(container()["resources"]["limits"]["memory"])
    attack_sidecar.raise_file_limit()
    binary = Path(sidecar)
    declared = await attack_sidecar.declared(binary, flags)
    unread = await attack_sidecar.unread(binary, [*flags, "-write-timeout=2s"], 4)
    idle = await attack_sidecar.idle(binary, [*flags, "-handshake-timeout=1s"], 2)
    for attack, peak in [("declared", declared["peak RSS"]), ("unread", unread["peak RSS"])]:
        assert int(peak.removesuffix(" MiB")) < limit, (attack, peak)
    assert int(idle["RSS after the wait"].removesuffix(" MiB")) < limit, idle
    assert idle["real client served during / after"].endswith("yes"), idle
    assert unread["connection closed within 4 s"] == "yes", unread
