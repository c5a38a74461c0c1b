"""The egress trap end to end: malicious builds are caught, logged, and contained.

Attackers use only reserved names and documentation addresses, from inside the sandbox.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import docker
import pytest

from reprobuild.archive import FileOrder, build_tar
from reprobuild.errors import EnvironmentFailure
from reprobuild.sandbox import agent as trap
from reprobuild.sandbox.container import Sandbox
from reprobuild.sandbox.engine import RunLabels
from reprobuild.sandbox.spec import SandboxLimits, SandboxSpec
from reprobuild.source import EntryKind, SourceEntry

from .conftest import make_repo, run_cli
from .hostcapture import HostCapture, leaks

pytestmark = pytest.mark.usefixtures("toolchains", "no_leftovers")


def attempts(report: dict[str, Any], **match: object) -> list[dict[str, Any]]:
    """Attempts in the report whose fields equal every given value."""
    return [a for a in report["egress"] if all(a.get(k) == v for k, v in match.items())]


def check_attack(tmp_path: Path, attack: str) -> dict[str, Any]:
    repo = make_repo(tmp_path, "egress")
    (repo / "ATTACK").write_text(attack + "\n")
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c",
                    "user.email=t@t.invalid", "commit", "-qam", attack], check=True)
    result = run_cli("check", str(repo), "--variations", "none", "--no-diffoscope",
                     json_path=tmp_path / "r.json")
    assert result.code == 3, result.stdout + result.stderr
    assert result.report is not None
    assert result.report["verdict"] == "egress"
    assert "network attempts" in result.stdout
    for attempt in result.report["egress"]:
        assert set(attempt) >= {"build", "phase", "kind", "proto", "family", "dst", "dport",
                                "name", "qtype", "detail", "uid", "pid", "exe", "cmdline",
                                "forged", "only_in"}
        assert attempt["phase"] == "build"
    return result.report


def test_pipe_download_into_shell(tmp_path: Path) -> None:
    report = check_attack(tmp_path, "pipe-to-shell")
    for build in ("a", "b"):
        dns = attempts(report, build=build, kind="dns", name="payload.attacker.example")
        assert dns, report["egress"]
        http = attempts(report, build=build, kind="http", name="payload.attacker.example",
                        dport=80)
        assert http and "GET /payload.sh" in http[0]["detail"]
        assert http[0]["uid"] in (1000, 2000)
        # Named down to the executable: the agent reads the build's /proc/<pid>/fd and exe
        # as the build's own uid (setfsuid), not with SYS_PTRACE.
        assert http[0]["pid"] is not None, http[0]
        assert (http[0]["exe"] or "").startswith("/usr/bin/python3"), http[0]


def test_setup_hook_fetches_http_and_https(tmp_path: Path) -> None:
    report = check_attack(tmp_path, "http-https")
    http = attempts(report, build="a", kind="http", name="setup-hook.example")
    assert http and "/stage2.py?id=42" in http[0]["detail"]
    tls = attempts(report, build="a", kind="tls", name="beacon.example", dport=443)
    assert tls, report["egress"]
    # The process behind it is named when the trap can see it.
    assert any("attack.py" in (a.get("cmdline") or "") for a in http + tls)


def test_raw_ip_tcp_beacon(tmp_path: Path) -> None:
    report = check_attack(tmp_path, "raw-ip")
    tcp = [a for a in attempts(report, build="a", dst="203.0.113.7", dport=4444)
           if a["kind"] in ("tcp", "other")]
    assert tcp, report["egress"]
    assert any("beacon" in (a.get("detail") or "") for a in tcp)


def test_dns_exfiltration_names_the_secret(tmp_path: Path) -> None:
    report = check_attack(tmp_path, "dns-exfil")
    assert attempts(report, build="a", kind="dns", name="c2VjcmV0LXRva2Vu.exfil.example")


def test_udp_to_raw_ip(tmp_path: Path) -> None:
    report = check_attack(tmp_path, "udp")
    assert attempts(report, build="a", kind="udp", dst="198.51.100.9", dport=9999)


def test_ipv6_attempt(tmp_path: Path) -> None:
    report = check_attack(tmp_path, "ipv6")
    v6 = [a for a in attempts(report, build="a", family=6, dport=80)
          if a["dst"] == "2001:db8::5"]
    assert v6, report["egress"]


def test_reconfiguring_the_network_fails_and_rules_stay(tmp_path: Path) -> None:
    report = check_attack(tmp_path, "reconfigure")
    still = attempts(report, build="a", kind="http", name="still-trapped.test")
    assert still and still[0]["dst"] == "192.0.2.10"


def test_direct_connections_to_the_trap_are_flagged_as_forged(tmp_path: Path) -> None:
    report = check_attack(tmp_path, "forge")
    forged = [a for a in report["egress"] if a["forged"]]
    assert forged, report["egress"]
    assert not attempts(report, kind="http", name="forged.example", forged=False)


def test_clean_build_shows_zero_attempts(tmp_path: Path) -> None:
    result = run_cli("check", "examples/mcp-notes-server", json_path=tmp_path / "r.json")
    assert result.code == 0, result.stdout + result.stderr
    assert result.report is not None and result.report["egress"] == []


def test_no_packet_reaches_the_host(tmp_path: Path) -> None:
    """Capture on the host while malicious builds run: none of their packets appear."""
    hosts = ["203.0.113.7", "198.51.100.9", "2001:db8::5"]
    capture = HostCapture(tmp_path / "host.pcap", hosts)
    try:
        for attack in ("pipe-to-shell", "raw-ip", "dns-exfil", "udp", "ipv6"):
            check_attack(tmp_path / attack, attack)
    finally:
        packets = capture.stop()
    assert leaks(packets, hosts, ["attacker", "exfil", "c2VjcmV0"]) == []


def test_a_trap_that_cannot_come_up_never_lets_the_build_start(
        tmp_path: Path, client: docker.DockerClient, toolchains: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail closed: without NET_ADMIN the agent cannot set up the namespace, prints no
    READY, and the build's source (so any untrusted code) is never sent."""
    monkeypatch.setattr(trap, "TRAP_CAPS", ())
    image = toolchains["python"]
    source = build_tar([SourceEntry("x", EntryKind.FILE, 0o644, b"x")],
                       order=FileOrder.SORTED, mtime=315532800)
    spec = SandboxSpec(
        role="build-a", image=image.image_id, uid=1000, gid=1000, hostname="failclosed",
        domainname="test", writable=("/build", "/tmp"), stdin=source, trap=True,
        script="tar -x -f - -C /build && touch /out/the-build-ran",
        image_python=image.python,
        limits=SandboxLimits(timeout_s=60))
    started = time.monotonic()
    with pytest.raises(EnvironmentFailure) as failure:
        Sandbox(client, RunLabels.new()).run(spec, output_dir=tmp_path / "artifacts",
                                             log_path=tmp_path / "build.log")
    assert time.monotonic() - started < 30
    assert "egress trap did not come up: trap setup failed" in failure.value.message
    assert not (tmp_path / "artifacts").exists()
    assert not (tmp_path / "build.log").exists()


def test_what_the_build_leaves_is_killed_and_its_noise_cannot_push_out_evidence(
        tmp_path: Path, client: docker.DockerClient, toolchains: dict[str, Any]) -> None:
    """When the build's main process exits, the agent kills everything it left before the
    outputs are copied (a background process holding the log open would otherwise keep
    the sandbox waiting forever), and a build that floods its output gets it capped on
    the way to the container log, so the attempt it makes after the flood is still there."""
    image = toolchains["python"]
    source = build_tar([SourceEntry("x", EntryKind.FILE, 0o644, b"x")],
                       order=FileOrder.SORTED, mtime=315532800)
    script = "\n".join([
        "tar -x -f - -C /build",
        "sleep 600 &",
        "(sleep 3; echo late > /out/late.txt) &",
        "head -c 3000000 /dev/zero | tr '\\0' x",
        "python3 -c \"import socket; socket.create_connection(('192.0.2.7', 8080), 5)\"",
        "echo built > /out/result.txt",
        ""])
    spec = SandboxSpec(
        role="build-a", image=image.image_id, uid=1000, gid=1000, hostname="leftovers",
        domainname="test", writable=("/build", "/tmp"), stdin=source, trap=True,
        script=script, image_python=image.python,
        limits=SandboxLimits(timeout_s=120, log_bytes=64 * 1024))
    started = time.monotonic()
    result = Sandbox(client, RunLabels.new()).run(spec, output_dir=tmp_path / "artifacts",
                                                  log_path=tmp_path / "build.log")
    assert time.monotonic() - started < 60
    assert (result.exit_code, result.timed_out) == (0, False)
    assert [f.path for f in result.outputs] == ["result.txt"]
    log = (tmp_path / "build.log").read_bytes()
    assert b"bytes of build output left out here" in log
    assert 60 * 1024 < len(log) < 66 * 1024
    assert [(a.kind, a.dst, a.dport, a.uid) for a in result.egress] == [
        ("tcp", "192.0.2.7", 8080, 1000)]
