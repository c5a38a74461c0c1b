"""reprobuild egress trap agent: PID 1 of a build's sandbox, owner of its network namespace.

Standalone, stdlib-only (never imports ``reprobuild``), one file: it runs as
``python3 -I -S -c "<this source>" [--option value ...]``, or, as the sandbox container's
command, from a short loader that reads it (precompiled or as source) off the first bytes
of stdin, exactly, leaving the rest of stdin (the source tar) for the build. Options
mirror :class:`Config` (``--tcp-port``, ``--rate``, ``--ipv6 auto|require|off``,
``--backend auto|nft|iptables``, ``--no-selftest``, ``--build-script/--build-uid/
--build-gid``, ``--no-trap``...); the defaults are meant to be used. Every module it loads
is paid for in every sandbox's start, before READY, so it keeps to the few it needs: its
own option parser instead of ``argparse`` (which loads ``shutil``), ``os`` instead of
``pathlib``, ``typing`` for the type checker only (~8 ms of every start here).

Container settings: ``network_mode="none"``, user root, ``cap_drop=["ALL"]``,
``cap_add=["SETUID", "SETGID", "SETPCAP", "KILL"]`` + ``"NET_ADMIN"`` for the trap (none of
them makes Docker's default seccomp profile open more syscalls), ``no-new-privileges``,
read-only root, a root-only tmpfs on ``/run``, ``sysctls`` setting ``net.ipv6.conf.{all,
default,lo}.disable_ipv6=0`` (Docker disables IPv6 in ``none`` namespaces; without it IPv6
attempts fail closed with ENETUNREACH but leave no evidence), a json-file log. Image:
``python3``, ``setpriv`` (util-linux), ``nftables``, ``iproute2`` (``iptables`` for the
fallback only). The agent may also run without a build, with the build in a second
container joining its ``network_mode``/``pid_mode`` (the integration tests do).

Capabilities: NET_ADMIN for addresses, routes, nftables, the NFLOG and conntrack netlink
sockets and SO_MARK. SETUID/SETGID to start the build as its uid and, for naming the
process behind an attempt, to read another uid's ``/proc/<pid>/fd`` and ``exe`` as that
uid (``setfsuid``/``setfsgid`` on the reading thread) instead of with SYS_PTRACE, which
would widen the build's seccomp profile. SETPCAP to empty the build's bounding set, KILL to
kill what it leaves. Without SETUID/SETGID, events carry the uid only (READY:
``"attribution": "uid"``).

The build (``--build-script``): after READY, ``setpriv --reuid --regid --clear-groups
--inh-caps=-all --ambient-caps=-all --bounding-set=-all --no-new-privs -- /bin/sh -c
SCRIPT``, in its own session, with our stdin (the host sends the source only after READY)
and its stdout/stderr on a pipe the agent relays to the container's stderr, capped to
``--log-bytes`` (head and tail; the container log never rotates the agent's stdout away).
When it exits, or at SIGUSR1 ("stop the build": the host's deadline), the agent SIGKILLs
every other process in the pid namespace until none is left, prints ``REPROBUILD-BUILD-
EXIT {"code", "stopped", "leftovers", "output_dropped", "error"}``; with
``--inline-outputs DIR`` (and every process gone), it sends DIR back when it holds only
directories and a few small regular files: ``REPROBUILD-OUTPUTS {"inline": true, "bytes",
"sha256"}``, the tar as base64 lines, ``REPROBUILD-OUTPUTS-END`` (read as the build's uid
with ``setfsuid``, nothing followed; else one ``REPROBUILD-OUTPUTS {"inline": false,
"why"}`` line). Then it completes its log (see below), prints ``REPROBUILD-TRAP-DONE`` and
stays up, holding the output volume, until it is removed; the host copies outputs that
were not sent meanwhile. With ``--no-trap`` none of the network setup happens: READY at
once, then the same supervision.

Setup (before READY): refuse a namespace with any interface but ``lo``; bind NFLOG group 7
and open the listeners on 127.0.0.1/::1 (TCP catch-all 47001, UDP catch-all 47002, DNS
47053); give ``lo`` 198.18.0.1/32 and fd00:7e57::1/128 and default routes via ``lo`` with
those ``src``; load one table ``inet reprobuild_trap`` with ``nft -f -``: NFLOG (pre-NAT,
mangle priority) of every new flow and every UDP datagram, REDIRECT of all TCP to the
catch-all, UDP/53 to DNS, other UDP to the UDP catch-all, reject of everything else.
Loopback traffic other than port 53 is the build's own IPC and left alone; the agent's
sockets carry mark 0x7e57 and are exempt. Then verify (``nft -j list ruleset`` holds exactly
that table, routes and addresses are right) and self-test through the live rules (DNS,
HTTP, UDP, a forged connection, ICMP; IPv4 and IPv6) to reserved addresses. Any failure
prints an ``error`` event and exits 1 without READY, so the build never starts.

READY: exactly one line ``REPROBUILD-TRAP-READY {json}`` with kind="ready", version, trap,
backend, ipv6, listeners, nflog_group, mark, lo_addresses, resolvers, attribution,
ruleset_sha256 (of ``nft -j list ruleset``: the listing verified), selftest, limits, pid.
After it, one JSON event per line on stdout. At the end (the build's exit, SIGUSR1 or
SIGTERM/SIGINT) the agent handles what is queued, logs what is pending and checks the
ruleset is unchanged. SIGTERM/SIGINT then exit 0; otherwise DONE follows and the agent
waits for the next signal (the SIGUSR1 form also serves a trap without a build, whose host
copies off it meanwhile); nothing follows the DONE line.

How attempts are known: TCP original destination from SO_ORIGINAL_DST; UDP original tuple
from conntrack (ctnetlink GET by reply tuple, right even when the kernel remapped the source
port on a NAT clash); the uid and first bytes from the pre-NAT NFLOG record, paired by
5-tuple (and payload); ICMP and other protocols from NFLOG alone; records nobody claims in
3 s are logged from NFLOG. A connection or datagram whose original destination is one of
the trap's own listeners (or that has no conntrack entry) is ``forged``. The sending
process: the socket's inode and uid (a TCP connection's by its 4-tuple, one exact
``sock_diag`` lookup over netlink; other protocols from ``/proc/net/*``, whose TCP tables
cost ~5 ms a read here), then the ``/proc/<pid>/fd`` that holds it.

Event schema (every key present, ``null`` when unknown): ``kind`` dns | tcp | http | tls |
udp | icmp | other | forged | dropped | error; ``seq`` event number (no gaps: drops are
counted); ``time`` monotonic seconds since READY; ``proto`` tcp | udp | icmp | icmpv6 | other
protocol name; ``family`` 4 | 6; ``dst``, ``dport`` original destination (for DNS the
resolver it was sent to); ``name`` DNS name, HTTP Host, TLS SNI, or the name a fake address
was handed out for; ``qtype`` DNS type (A, AAAA, HTTPS, TYPE<n>); ``detail`` HTTP request
line, TLS ALPN/versions, first <=64 bytes as ``hex=.. text=..``, ICMP type, or why; ``uid``
sending uid; ``pid``, ``exe``, ``cmdline`` the sending process if found; ``parents`` up to 4
ancestors ``[{pid, exe, cmdline}]``; ``forged`` true when aimed at the trap's own listeners
(contents are claims, not evidence); ``count`` for ``dropped``: events not written because
of the rate limit (200/s, burst 1000) or cap (10 000; forged have their own, smaller budget
so forgeries cannot crowd out real attempts).

Answers make clients fail fast and serve nothing real: DNS gets a unique fake address per
name (A in 198.18.0.0/15, AAAA in fd00:7e57:0:1::/64, TTL 0) or NODATA; HTTP a bodiless
``403``; TLS a fatal alert; other TCP is closed after its first bytes (0.3 s) or 1.5 s of
silence; ICMP and other protocols are rejected (admin-prohibited). Nothing is forwarded.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import ipaddress
import json
import os
import pwd
import re
import select
import selectors
import shlex
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

TYPE_CHECKING = False  # typing itself costs ~3 ms of every sandbox's start
if TYPE_CHECKING:
    from typing import Any, TextIO

VERSION = 1
READY_PREFIX = "REPROBUILD-TRAP-READY"
DONE_LINE = "REPROBUILD-TRAP-DONE"
OUTPUTS_PREFIX = "REPROBUILD-OUTPUTS"
OUTPUTS_END = "REPROBUILD-OUTPUTS-END"
TABLE = "reprobuild_trap"
MARK = 0x7E57
LO4 = "198.18.0.1"
LO6 = "fd00:7e57::1"
SELFTEST_NAME = "selftest.reprobuild.invalid"
SELFTEST_V4 = "192.0.2.1"
SELFTEST_V6 = "2001:db8::1"
EVENT_KINDS = ("dns", "tcp", "http", "tls", "udp", "icmp", "other", "forged", "dropped",
               "error")
EVENT_FIELDS = ("kind", "seq", "time", "proto", "family", "dst", "dport", "name", "qtype",
                "detail", "uid", "pid", "exe", "cmdline", "parents", "forged", "count")

# Netlink / nfnetlink_log constants (linux/netlink.h, linux/netfilter/nfnetlink_log.h).
NETLINK_NETFILTER = 12
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLMSG_ERROR = 2
NLMSG_DONE = 3
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_NLBUFSIZ = 3
NFULA_CFG_QTHRESH = 5
NFULNL_CFG_CMD_BIND = 1
NFULNL_CFG_CMD_UNBIND = 2
NFULNL_COPY_PACKET = 2
NFULA_PACKET_HDR = 1
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10
NFULA_UID = 11
NFULA_GID = 14
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW = 0
IPCTNL_MSG_CT_GET = 1
CTA_TUPLE_ORIG = 1
CTA_TUPLE_REPLY = 2
CTA_TUPLE_IP = 1
CTA_TUPLE_PROTO = 2
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
NLA_F_NESTED = 0x8000
SO_ORIGINAL_DST = 80  # SOL_IP and IP6T_SO_ORIGINAL_DST on SOL_IPV6
SO_MARK = getattr(socket, "SO_MARK", 36)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)

PROTO_NAMES = {1: "icmp", 2: "igmp", 6: "tcp", 17: "udp", 33: "dccp", 41: "ipv6",
               47: "gre", 50: "esp", 51: "ah", 58: "icmpv6", 132: "sctp", 136: "udplite"}
QTYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
          33: "SRV", 35: "NAPTR", 41: "OPT", 43: "DS", 48: "DNSKEY", 64: "SVCB", 65: "HTTPS",
          252: "AXFR", 255: "ANY", 257: "CAA"}
ICMP4_TYPES = {0: "echo-reply", 3: "destination-unreachable", 8: "echo-request",
               11: "time-exceeded", 13: "timestamp-request"}
ICMP6_TYPES = {1: "destination-unreachable", 128: "echo-request", 129: "echo-reply",
               133: "router-solicitation", 135: "neighbor-solicitation",
               136: "neighbor-advertisement"}
HTTP_403 = (b"HTTP/1.1 403 Forbidden\r\n"
            b"X-Reprobuild: network access is blocked during builds\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n")
TLS_ALERT = bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 40])  # fatal handshake_failure


# --------------------------------------------------------------------------- text helpers

def printable(data: bytes, limit: int = 512) -> str:
    """Untrusted bytes as a bounded, single-line ASCII string (\\xNN for the rest)."""
    out = []
    for b in data[:limit]:
        if 32 <= b < 127 and b != 0x5C:
            out.append(chr(b))
        else:
            out.append(f"\\x{b:02x}")
    text = "".join(out)
    return text + ("..." if len(data) > limit else "")


def first_bytes_detail(data: bytes, limit: int = 64) -> str:
    """``hex=.. text=..`` of at most ``limit`` bytes, as the log's ``detail`` for unknowns."""
    head = data[:limit]
    text = "".join(chr(b) if 32 <= b < 127 else "." for b in head)
    more = f" (+{len(data) - limit} bytes)" if len(data) > limit else ""
    return f"hex={head.hex()} text={text}{more}"


# --------------------------------------------------------------------------- DNS

class DnsError(ValueError):
    """A DNS message that cannot be parsed."""


@dataclass(frozen=True)
class DnsQuery:
    """The single question of a DNS query."""

    ident: int
    opcode: int
    rd: bool
    name: str
    qtype: int
    qclass: int
    question: bytes

    @property
    def key(self) -> str:
        return self.name.lower()

    @property
    def qtype_name(self) -> str:
        return QTYPES.get(self.qtype, f"TYPE{self.qtype}")


def _label_text(label: bytes) -> str:
    out = []
    for b in label:
        if 33 <= b < 127 and b not in (0x2E, 0x5C):
            out.append(chr(b))
        else:
            out.append(f"\\{b:03d}")
    return "".join(out)


def read_dns_name(msg: bytes, offset: int) -> tuple[str, int]:
    """Decode a (possibly compressed) name at ``offset``; returns (text, offset after it)."""
    labels: list[str] = []
    end: int | None = None
    jumps = 0
    total = 0
    pos = offset
    while True:
        if pos >= len(msg):
            raise DnsError("name runs past the message")
        length = msg[pos]
        if length & 0xC0 == 0xC0:
            if pos + 1 >= len(msg):
                raise DnsError("truncated compression pointer")
            if end is None:
                end = pos + 2
            jumps += 1
            if jumps > 16:
                raise DnsError("compression loop")
            pos = ((length & 0x3F) << 8) | msg[pos + 1]
            continue
        if length & 0xC0:
            raise DnsError("reserved label type")
        if length == 0:
            pos += 1
            break
        label = msg[pos + 1:pos + 1 + length]
        if len(label) < length:
            raise DnsError("truncated label")
        total += length + 1
        if total > 255:
            raise DnsError("name longer than 255 octets")
        labels.append(_label_text(label))
        pos += 1 + length
    return (".".join(labels) or "."), (end if end is not None else pos)


def parse_dns_query(msg: bytes) -> DnsQuery:
    """Parse a DNS query with exactly one question (raises :class:`DnsError`)."""
    if len(msg) < 12:
        raise DnsError("shorter than a DNS header")
    ident, flags, qdcount = struct.unpack("!HHH", msg[:6])
    if flags & 0x8000:
        raise DnsError("a response, not a query")
    if qdcount != 1:
        raise DnsError(f"{qdcount} questions")
    name, pos = read_dns_name(msg, 12)
    if pos + 4 > len(msg):
        raise DnsError("truncated question")
    qtype, qclass = struct.unpack("!HH", msg[pos:pos + 4])
    return DnsQuery(ident=ident, opcode=(flags >> 11) & 0xF, rd=bool(flags & 0x0100),
                    name=name, qtype=qtype, qclass=qclass, question=msg[12:pos + 4])


def build_dns_response(query: DnsQuery, rdata: bytes | None, rcode: int = 0) -> bytes:
    """An authoritative answer to ``query``: one record with ``rdata`` (TTL 0) or none."""
    flags = 0x8000 | (query.opcode << 11) | 0x0400 | (0x0100 if query.rd else 0) | 0x0080
    flags |= rcode & 0xF
    ancount = 1 if rdata is not None and rcode == 0 else 0
    header = struct.pack("!HHHHHH", query.ident, flags, 1, ancount, 0, 0)
    answer = b""
    if ancount:
        assert rdata is not None
        answer = struct.pack("!HHHIH", 0xC00C, query.qtype, 1, 0, len(rdata)) + rdata
    return header + query.question + answer


def dns_error_response(msg: bytes, rcode: int) -> bytes | None:
    """A header-only reply (FORMERR, NOTIMP...) to an unparsable query, if it has an id."""
    if len(msg) < 4 or msg[2] & 0x80:
        return None
    ident, flags = struct.unpack("!HH", msg[:4])
    out_flags = 0x8000 | (flags & 0x7900) | 0x0080 | (rcode & 0xF)
    return struct.pack("!HHHHHH", ident, out_flags, 0, 0, 0, 0)


class FakeAddresses:
    """Hands out one fake address pair per DNS name and maps addresses back to names."""

    V4_FIRST = int(ipaddress.IPv4Address("198.18.1.0"))
    V4_LAST = int(ipaddress.IPv4Address("198.19.255.254"))
    V6_BASE = int(ipaddress.IPv6Address("fd00:7e57:0:1::"))

    def __init__(self, limit: int = 65536) -> None:
        self.limit = min(limit, self.V4_LAST - self.V4_FIRST + 1)
        self._by_key: dict[str, int] = {}
        self._names: list[str] = []

    def __len__(self) -> int:
        return len(self._names)

    def index_for(self, name: str) -> int | None:
        """The index of ``name`` (case-insensitive), allocating one; None when exhausted."""
        key = name.lower().rstrip(".")
        found = self._by_key.get(key)
        if found is not None:
            return found
        if len(self._names) >= self.limit:
            return None
        index = len(self._names)
        self._by_key[key] = index
        self._names.append(name.rstrip("."))
        return index

    def v4(self, index: int) -> str:
        return str(ipaddress.IPv4Address(self.V4_FIRST + index))

    def v6(self, index: int) -> str:
        return str(ipaddress.IPv6Address(self.V6_BASE + index + 1))

    def name_for(self, address: str) -> str | None:
        """The name a fake address was handed out for, if it was."""
        ip = plain_ip(address)
        if ip is None:
            return None
        if isinstance(ip, ipaddress.IPv4Address):
            index = int(ip) - self.V4_FIRST
        else:
            index = int(ip) - self.V6_BASE - 1
        if 0 <= index < len(self._names):
            return self._names[index]
        return None


def answer_dns(query: DnsQuery, fakes: FakeAddresses) -> tuple[bytes, str]:
    """The trap's answer to ``query`` and a short description of it for the log."""
    if query.opcode != 0:
        return build_dns_response(query, None, rcode=4), "NOTIMP"
    if query.qclass not in (1, 255) or query.qtype not in (1, 28):
        return build_dns_response(query, None), "NODATA"
    index = fakes.index_for(query.name)
    if index is None:
        return build_dns_response(query, None, rcode=3), "NXDOMAIN (fake address pool full)"
    if query.qtype == 1:
        address = fakes.v4(index)
        return build_dns_response(query, socket.inet_aton(address)), f"answered {address}"
    address = fakes.v6(index)
    return (build_dns_response(query, socket.inet_pton(socket.AF_INET6, address)),
            f"answered {address}")


# --------------------------------------------------------------------------- HTTP and TLS

_HTTP_START = re.compile(rb"^[A-Z][A-Z_-]{2,15} ")
_HTTP_LINE = re.compile(rb"^([A-Z][A-Z_-]{2,15}) (\S+) (HTTP/\d(?:\.\d)?)\r?$")


@dataclass(frozen=True)
class HttpRequest:
    """The request line and Host of an HTTP/1.x request."""

    method: str
    target: str
    version: str
    host: str | None
    complete: bool

    @property
    def request_line(self) -> str:
        return f"{self.method} {self.target} {self.version}"

    @property
    def hostname(self) -> str | None:
        """Host without its port (from the Host header, or the CONNECT/absolute target)."""
        host = self.host
        if host is None:
            target = self.target
            if self.method == "CONNECT":
                host = target
            elif "://" in target:
                host = target.split("://", 1)[1].split("/", 1)[0]
        if not host:
            return None
        host = host.rsplit("@", 1)[-1]
        if host.startswith("["):
            host = host[1:].split("]", 1)[0]
        elif host.count(":") == 1:
            host = host.split(":", 1)[0]
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(host)
            return None  # an address literal is not a name; dst already says it
        return host or None


def looks_like_http(data: bytes) -> bool:
    return bool(_HTTP_START.match(data[:18]))


def parse_http_request(data: bytes) -> HttpRequest | None:
    """Parse the head of an HTTP/1.x request; None if there is no complete request line yet
    or it is not HTTP. ``complete`` tells whether the blank line ending the head was seen."""
    line_end = data.find(b"\n")
    if line_end < 0:
        return None
    match = _HTTP_LINE.match(data[:line_end])
    if match is None:
        return None
    method, target, version = (printable(g, 400) for g in match.groups())
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        head_end = data.find(b"\n\n")
    head = data[line_end + 1:head_end if head_end >= 0 else len(data)]
    host: str | None = None
    for raw in head.split(b"\n"):
        name, sep, value = raw.partition(b":")
        if sep and name.strip().lower() == b"host":
            host = printable(value.strip(), 255)
            break
    return HttpRequest(method=method, target=target, version=version, host=host,
                       complete=head_end >= 0)


@dataclass(frozen=True)
class TlsHello:
    """What a ClientHello says: status is ok, incomplete or invalid."""

    status: str
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    versions: tuple[int, ...] = ()


def looks_like_tls(data: bytes) -> bool:
    return len(data) >= 2 and data[0] == 0x16 and data[1] == 0x03


def parse_tls_client_hello(data: bytes) -> TlsHello:
    """Extract SNI, ALPN and supported versions from a ClientHello (possibly spread over
    several handshake records)."""
    handshake = b""
    pos = 0
    while pos + 5 <= len(data):
        ctype, major = data[pos], data[pos + 1]
        length = struct.unpack("!H", data[pos + 3:pos + 5])[0]
        if ctype != 0x16 or major != 3 or length == 0:
            return TlsHello("invalid") if pos == 0 else TlsHello("incomplete")
        chunk = data[pos + 5:pos + 5 + length]
        handshake += chunk
        pos += 5 + length
        if len(chunk) < length:
            break
        if len(handshake) >= 4 and len(handshake) >= 4 + int.from_bytes(handshake[1:4], "big"):
            break
    if len(handshake) < 4:
        return TlsHello("incomplete")
    if handshake[0] != 1:
        return TlsHello("invalid")
    body_len = int.from_bytes(handshake[1:4], "big")
    if len(handshake) < 4 + body_len:
        return TlsHello("incomplete")
    return _parse_client_hello_body(handshake[4:4 + body_len])


def _parse_client_hello_body(body: bytes) -> TlsHello:
    try:
        pos = 2 + 32
        pos += 1 + body[pos]                                          # session id
        pos += 2 + struct.unpack("!H", body[pos:pos + 2])[0]          # cipher suites
        pos += 1 + body[pos]                                          # compression methods
        if pos == len(body):
            return TlsHello("ok")
        ext_end = pos + 2 + struct.unpack("!H", body[pos:pos + 2])[0]
        pos += 2
        if ext_end > len(body):
            return TlsHello("invalid")
        sni: str | None = None
        alpn: list[str] = []
        versions: list[int] = []
        while pos + 4 <= ext_end:
            etype, elen = struct.unpack("!HH", body[pos:pos + 4])
            ext = body[pos + 4:pos + 4 + elen]
            pos += 4 + elen
            if len(ext) < elen:
                return TlsHello("invalid")
            if etype == 0 and len(ext) >= 5:
                epos = 2
                while epos + 3 <= len(ext):
                    ntype, nlen = ext[epos], struct.unpack("!H", ext[epos + 1:epos + 3])[0]
                    if ntype == 0:
                        sni = printable(ext[epos + 3:epos + 3 + nlen], 255)
                        break
                    epos += 3 + nlen
            elif etype == 16 and len(ext) >= 2:
                epos = 2
                while epos < len(ext) and len(alpn) < 8:
                    plen = ext[epos]
                    alpn.append(printable(ext[epos + 1:epos + 1 + plen], 32))
                    epos += 1 + plen
            elif etype == 43 and ext:
                versions = [struct.unpack("!H", ext[i:i + 2])[0]
                            for i in range(1, min(len(ext), 1 + ext[0]) - 1, 2)]
        return TlsHello("ok", sni=sni, alpn=tuple(alpn), versions=tuple(versions))
    except (IndexError, struct.error):
        return TlsHello("invalid")


# --------------------------------------------------------------------------- packets

@dataclass(frozen=True)
class IpPacket:
    """The parts of an IPv4/IPv6 packet the trap logs."""

    family: int
    proto: int
    src: str
    dst: str
    sport: int | None = None
    dport: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    icmp_id: int | None = None
    icmp_seq: int | None = None
    payload: bytes = b""

    @property
    def proto_name(self) -> str:
        return PROTO_NAMES.get(self.proto, str(self.proto))


@dataclass(frozen=True)
class NflogPacket:
    """One packet from an nfnetlink_log message."""

    packet: IpPacket
    uid: int | None
    gid: int | None
    prefix: str


_V6_EXT_HEADERS = (0, 43, 60, 51)


def parse_ip_packet(pkt: bytes) -> IpPacket | None:
    """Parse an IPv4 or IPv6 packet header and the start of its TCP/UDP/ICMP header."""
    if not pkt:
        return None
    version = pkt[0] >> 4
    first_fragment = True
    if version == 4:
        ihl = (pkt[0] & 0x0F) * 4
        if ihl < 20 or len(pkt) < ihl:
            return None
        proto = pkt[9]
        first_fragment = (struct.unpack("!H", pkt[6:8])[0] & 0x1FFF) == 0
        src = socket.inet_ntop(socket.AF_INET, pkt[12:16])
        dst = socket.inet_ntop(socket.AF_INET, pkt[16:20])
        family, l4 = 4, pkt[ihl:]
    elif version == 6:
        if len(pkt) < 40:
            return None
        proto = pkt[6]
        src = socket.inet_ntop(socket.AF_INET6, pkt[8:24])
        dst = socket.inet_ntop(socket.AF_INET6, pkt[24:40])
        pos = 40
        for _ in range(8):
            if proto in _V6_EXT_HEADERS and pos + 2 <= len(pkt):
                length = (pkt[pos + 1] + 2) * 4 if proto == 51 else (pkt[pos + 1] + 1) * 8
                proto, pos = pkt[pos], pos + length
            elif proto == 44 and pos + 8 <= len(pkt):
                first_fragment = (struct.unpack("!H", pkt[pos + 2:pos + 4])[0] & 0xFFF8) == 0
                proto, pos = pkt[pos], pos + 8
            else:
                break
        family, l4 = 6, pkt[pos:]
    else:
        return None
    if not first_fragment:
        return IpPacket(family, proto, src, dst)
    if proto in (6, 17, 132, 33, 136) and len(l4) >= 4:
        sport, dport = struct.unpack("!HH", l4[:4])
        payload = b""
        if proto == 6 and len(l4) >= 13:
            payload = l4[(l4[12] >> 4) * 4:]
        elif proto in (17, 136):
            payload = l4[8:]
        return IpPacket(family, proto, src, dst, sport=sport, dport=dport, payload=payload)
    if proto in (1, 58) and len(l4) >= 4:
        ident = seq = None
        if len(l4) >= 8:
            ident, seq = struct.unpack("!HH", l4[4:8])
        return IpPacket(family, proto, src, dst, icmp_type=l4[0], icmp_code=l4[1],
                        icmp_id=ident, icmp_seq=seq, payload=l4[8:])
    return IpPacket(family, proto, src, dst, payload=l4)


def iter_netlink(buf: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, flags, payload) of each netlink message in ``buf``."""
    pos = 0
    while pos + 16 <= len(buf):
        length, mtype, flags, _seq, _pid = struct.unpack("=IHHII", buf[pos:pos + 16])
        if length < 16 or pos + length > len(buf):
            return
        yield mtype, flags, buf[pos + 16:pos + length]
        pos += (length + 3) & ~3


def iter_attrs(buf: bytes) -> Iterator[tuple[int, bytes]]:
    """(type, value) of each netlink attribute in ``buf`` (flag bits removed)."""
    pos = 0
    while pos + 4 <= len(buf):
        length, atype = struct.unpack("=HH", buf[pos:pos + 4])
        if length < 4 or pos + length > len(buf):
            return
        yield atype & 0x3FFF, buf[pos + 4:pos + length]
        pos += (length + 3) & ~3


def parse_nflog_message(mtype: int, body: bytes) -> NflogPacket | None:
    """Parse one NFULNL_MSG_PACKET netlink message body (after the nlmsghdr)."""
    if mtype != (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET or len(body) < 4:
        return None
    uid = gid = None
    prefix = ""
    packet: IpPacket | None = None
    for atype, value in iter_attrs(body[4:]):
        if atype == NFULA_PAYLOAD:
            packet = parse_ip_packet(value)
        elif atype == NFULA_UID and len(value) >= 4:
            uid = struct.unpack("!I", value[:4])[0]
        elif atype == NFULA_GID and len(value) >= 4:
            gid = struct.unpack("!I", value[:4])[0]
        elif atype == NFULA_PREFIX:
            prefix = value.split(b"\0", 1)[0].decode("ascii", "replace")
    if packet is None:
        return None
    return NflogPacket(packet=packet, uid=uid, gid=gid, prefix=prefix)


def parse_nflog_buffer(buf: bytes) -> list[NflogPacket]:
    """Every packet in one datagram read from the NFLOG socket."""
    out = []
    for mtype, _flags, body in iter_netlink(buf):
        parsed = parse_nflog_message(mtype, body)
        if parsed is not None:
            out.append(parsed)
    return out


def nl_attr(atype: int, value: bytes) -> bytes:
    data = struct.pack("=HH", 4 + len(value), atype) + value
    return data + b"\0" * (-len(data) % 4)


def nflog_config_message(group: int, attrs: bytes, seq: int, family: int = 0) -> bytes:
    body = struct.pack("=BB", family, 0) + struct.pack("!H", group) + attrs
    mtype = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
    return struct.pack("=IHHII", 16 + len(body), mtype, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


# --------------------------------------------------------------------------- conntrack

@dataclass(frozen=True)
class CtTuple:
    """One direction of a conntrack entry."""

    src: str
    sport: int
    dst: str
    dport: int
    proto: int


def ct_tuple_attr(atype: int, tup: CtTuple) -> bytes:
    """A nested CTA_TUPLE_{ORIG,REPLY} attribute."""
    v6 = ":" in tup.src
    af = socket.AF_INET6 if v6 else socket.AF_INET
    ip = (nl_attr(CTA_IP_V6_SRC if v6 else CTA_IP_V4_SRC, socket.inet_pton(af, tup.src))
          + nl_attr(CTA_IP_V6_DST if v6 else CTA_IP_V4_DST, socket.inet_pton(af, tup.dst)))
    proto = (nl_attr(CTA_PROTO_NUM, bytes([tup.proto]))
             + nl_attr(CTA_PROTO_SRC_PORT, struct.pack("!H", tup.sport))
             + nl_attr(CTA_PROTO_DST_PORT, struct.pack("!H", tup.dport)))
    return nl_attr(atype | NLA_F_NESTED, nl_attr(CTA_TUPLE_IP | NLA_F_NESTED, ip)
                   + nl_attr(CTA_TUPLE_PROTO | NLA_F_NESTED, proto))


def ct_get_message(reply: CtTuple, seq: int) -> bytes:
    """IPCTNL_MSG_CT_GET for the entry whose reply direction is ``reply``."""
    family = socket.AF_INET6 if ":" in reply.src else socket.AF_INET
    body = struct.pack("=BBH", family, 0, 0) + ct_tuple_attr(CTA_TUPLE_REPLY, reply)
    mtype = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET
    return struct.pack("=IHHII", 16 + len(body), mtype, NLM_F_REQUEST, seq, 0) + body


def parse_ct_tuple(buf: bytes) -> CtTuple | None:
    src = dst = None
    sport = dport = proto = None
    for atype, value in iter_attrs(buf):
        if atype == CTA_TUPLE_IP:
            for itype, ivalue in iter_attrs(value):
                if itype in (CTA_IP_V4_SRC, CTA_IP_V6_SRC, CTA_IP_V4_DST, CTA_IP_V6_DST):
                    af = socket.AF_INET if len(ivalue) == 4 else socket.AF_INET6
                    text = socket.inet_ntop(af, ivalue)
                    if itype in (CTA_IP_V4_SRC, CTA_IP_V6_SRC):
                        src = text
                    else:
                        dst = text
        elif atype == CTA_TUPLE_PROTO:
            for ptype, pvalue in iter_attrs(value):
                if ptype == CTA_PROTO_NUM and pvalue:
                    proto = pvalue[0]
                elif ptype == CTA_PROTO_SRC_PORT and len(pvalue) >= 2:
                    sport = struct.unpack("!H", pvalue[:2])[0]
                elif ptype == CTA_PROTO_DST_PORT and len(pvalue) >= 2:
                    dport = struct.unpack("!H", pvalue[:2])[0]
    if src is None or dst is None or sport is None or dport is None or proto is None:
        return None
    return CtTuple(src, sport, dst, dport, proto)


def parse_ct_original(buf: bytes) -> CtTuple | None:
    """The original-direction tuple from a ctnetlink reply datagram, if any."""
    for mtype, _flags, body in iter_netlink(buf):
        if mtype == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW and len(body) >= 4:
            for atype, value in iter_attrs(body[4:]):
                if atype == CTA_TUPLE_ORIG:
                    return parse_ct_tuple(value)
    return None


class NetlinkQuery:
    """A netlink socket that asks the kernel one question at a time: each request takes
    the next sequence number, and answers to earlier ones that arrive late are skipped."""

    def __init__(self, protocol: int) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
        self.sock.settimeout(0.2)
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0x7FFFFFFF
        return self.seq

    def ask(self, message: bytes) -> bytes | None:
        """The answer to ``message`` (built with :meth:`next_seq`); None if none of the next
        few datagrams is it. Raises OSError as the socket does."""
        self.sock.send(message)
        for _ in range(8):
            data = self.sock.recv(65536)
            if len(data) >= 16 and struct.unpack("=I", data[8:12])[0] != self.seq:
                continue  # a late answer to an earlier question
            return data
        return None


class Conntrack(NetlinkQuery):
    """Looks up the original tuple of a flow the listener sees after NAT (the truth even
    when the kernel remapped the source port on a NAT clash)."""

    def __init__(self) -> None:
        super().__init__(NETLINK_NETFILTER)
        self.sock.bind((0, 0))

    def original(self, proto: int, local: tuple[str, int],
                 peer: tuple[str, int]) -> CtTuple | None:
        reply = CtTuple(local[0], local[1], peer[0], peer[1], proto)
        try:
            data = self.ask(ct_get_message(reply, self.next_seq()))
        except OSError:
            return None
        return parse_ct_original(data) if data is not None else None


NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR = 2
INET_DIAG_NOCOOKIE = 0xFFFFFFFF


def sock_diag_request(family: int, proto: int, local: tuple[str, int],
                      remote: tuple[str, int], seq: int) -> bytes:
    """A ``SOCK_DIAG_BY_FAMILY`` request for the one socket with this 4-tuple (pure).

    Not a dump: the kernel answers from its socket hash by the exact tuple, where reading
    ``/proc/net/tcp`` walks every bucket of a table sized by the machine's memory (~5 ms
    each here, for every attempt).
    """
    af = socket.AF_INET6 if family == 6 else socket.AF_INET

    def raw(address: str) -> bytes:
        return socket.inet_pton(af, address).ljust(16, b"\0")

    sockid = (struct.pack(">HH", local[1], remote[1]) + raw(local[0]) + raw(remote[0])
              + struct.pack("=III", 0, INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE))
    body = struct.pack("=BBBBI", af, proto, 0, 0, 0xFFFFFFFF) + sockid
    return struct.pack("=IHHII", 16 + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST,
                       seq, 0) + body


def parse_sock_diag(data: bytes) -> tuple[int, int] | None:
    """(uid, inode) from the kernel's answer; None for an error (no such socket) (pure)."""
    for mtype, _flags, payload in iter_netlink(data):
        if mtype == SOCK_DIAG_BY_FAMILY and len(payload) >= 72:
            uid, inode = struct.unpack("=II", payload[64:72])
            return uid, inode
        if mtype == NLMSG_ERROR:
            return None
    return None


class SockDiag(NetlinkQuery):
    """Exact lookups of a TCP socket's owner uid and inode by its 4-tuple."""

    def __init__(self) -> None:
        super().__init__(NETLINK_SOCK_DIAG)

    def lookup(self, local: tuple[str, int], remote: tuple[str, int]) -> tuple[int, int] | None:
        """The socket whose local end is ``local`` and peer ``remote``, as an IPv4 socket
        or an IPv6 one (a dual-stack socket shows an IPv4 flow as v4-mapped)."""
        v6 = ":" in local[0]
        tries = [(6, local, remote)] if v6 else [
            (4, local, remote), (6, (f"::ffff:{local[0]}", local[1]),
                                 (f"::ffff:{remote[0]}", remote[1]))]
        for family, mine, theirs in tries:
            try:
                data = self.ask(sock_diag_request(family, 6, mine, theirs, self.next_seq()))
            except (OSError, ValueError):
                return None
            found = parse_sock_diag(data) if data is not None else None
            if found is not None:
                return found
        return None


# --------------------------------------------------------------------------- rate limiting

class RateLimiter:
    """A token bucket (``rate`` per second, ``burst`` deep) with a lifetime ``cap``."""

    def __init__(self, rate: float, burst: int, cap: int) -> None:
        self.rate = rate
        self.burst = burst
        self.cap = cap
        self.tokens = float(burst)
        self.last: float | None = None
        self.allowed = 0
        self.dropped = 0

    def has_budget(self, now: float) -> bool:
        """Whether :meth:`allow` would say yes now (without taking a token)."""
        tokens = self.tokens
        if self.last is not None:
            tokens = min(float(self.burst), tokens + (now - self.last) * self.rate)
        return self.allowed < self.cap and tokens >= 1.0

    def allow(self, now: float) -> bool:
        if self.last is not None:
            self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.allowed >= self.cap or self.tokens < 1.0:
            self.dropped += 1
            return False
        self.tokens -= 1.0
        self.allowed += 1
        return True


def new_event(kind: str, **fields: Any) -> dict[str, Any]:
    """An event with every schema field present."""
    event: dict[str, Any] = dict.fromkeys(EVENT_FIELDS)
    event["kind"] = kind
    event["forged"] = False
    for key, value in fields.items():
        if key not in event:
            raise KeyError(key)
        event[key] = value
    return event


class EventLog:
    """Writes events as JSON lines, rate-limited, with forged events on a separate budget so
    forgeries cannot push genuine attempts out of the log."""

    SUMMARY_INTERVAL = 5.0

    def __init__(self, stream: TextIO, *, rate: float, burst: int, cap: int,
                 forged_cap: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.clock = clock
        self.genuine = RateLimiter(rate, burst, cap)
        self.forged = RateLimiter(max(1.0, rate / 4), max(1, burst // 4), forged_cap)
        self.t0: float | None = None
        self.capture: list[dict[str, Any]] | None = None
        self.seq = 0
        self.unreported = 0
        self.last_summary = 0.0
        self.broken = False

    def now(self) -> float:
        return self.clock() - (self.t0 if self.t0 is not None else self.clock())

    def has_budget(self, forged: bool) -> bool:
        if self.capture is not None:
            return True
        return (self.forged if forged else self.genuine).has_budget(self.clock())

    def emit(self, event: dict[str, Any]) -> bool:
        """Write ``event`` unless its budget is spent; True if written."""
        if self.capture is not None:
            self.capture.append(event)
            return True
        mono = self.clock()
        limiter = self.forged if event.get("forged") else self.genuine
        if not limiter.allow(mono):
            self.unreported += 1
            return False
        self.write_event(event)
        return True

    def write_event(self, event: dict[str, Any]) -> None:
        self.seq += 1
        event["seq"] = self.seq
        event["time"] = round(self.now(), 3)
        self.write_line(json.dumps(event, ensure_ascii=True, separators=(",", ":")))

    def write_line(self, line: str) -> None:
        if self.broken:
            return
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            self.broken = True

    def tick(self, *, final: bool = False) -> None:
        """Emit one ``dropped`` summary for what the limits held back, at most every few
        seconds (and once at exit)."""
        mono = self.clock()
        if self.unreported and (final or mono - self.last_summary >= self.SUMMARY_INTERVAL):
            capped = (self.genuine.allowed >= self.genuine.cap
                      or self.forged.allowed >= self.forged.cap)
            why = "event cap reached" if capped else "rate limit"
            self.write_event(new_event("dropped", count=self.unreported, detail=why))
            self.unreported = 0
            self.last_summary = mono


# --------------------------------------------------------------------------- attribution

def decode_proc_address(text: str) -> tuple[str, int]:
    """``0100007F:1F90`` (as in /proc/net/tcp, host byte order words) → ("127.0.0.1", 8080)."""
    hex_addr, hex_port = text.split(":")
    raw = bytes.fromhex(hex_addr)
    words = b"".join(
        raw[i:i + 4][::-1] if sys.byteorder == "little" else raw[i:i + 4]
        for i in range(0, len(raw), 4))
    family = socket.AF_INET if len(words) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, words), int(hex_port, 16)


@dataclass(frozen=True)
class ProcSocket:
    local: str
    lport: int
    remote: str
    rport: int
    uid: int
    inode: int


def parse_proc_net(text: str) -> list[ProcSocket]:
    """Parse /proc/net/{tcp,udp,icmp}[6]."""
    out = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10:
            continue
        try:
            local, lport = decode_proc_address(parts[1])
            remote, rport = decode_proc_address(parts[2])
            out.append(ProcSocket(local, lport, remote, rport, int(parts[7]), int(parts[9])))
        except ValueError:
            continue
    return out


def plain_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address, with an IPv4-mapped IPv6 one as plain IPv4; None if it is not one."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def same_address(a: str, b: str) -> bool:
    ia, ib = plain_ip(a), plain_ip(b)
    if ia is None or ib is None:
        return False
    return ia == ib or ia.is_unspecified


@dataclass
class Attribution:
    uid: int | None = None
    pid: int | None = None
    exe: str | None = None
    cmdline: str | None = None
    parents: list[dict[str, Any]] | None = None
    note: str | None = None

    def apply(self, event: dict[str, Any]) -> None:
        if self.uid is not None:
            event["uid"] = self.uid
        event["pid"], event["exe"], event["cmdline"] = self.pid, self.exe, self.cmdline
        event["parents"] = self.parents


def fd_links(fd_dir: str) -> list[str]:
    """Where a process's open descriptors point (those that vanish meanwhile are skipped)."""
    links: list[str] = []
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return links
    for fd in fds:
        with contextlib.suppress(OSError):
            links.append(os.readlink(os.path.join(fd_dir, fd)))
    return links


def read_text(path: str) -> str:
    """A small text file (``/proc``, ``/sys``, ``/etc``), as ``Path.read_text`` gives it:
    the agent keeps to ``os`` (``pathlib`` costs ~4 ms of every sandbox's start)."""
    with open(path, encoding="utf-8", errors="replace") as stream:
        return stream.read()


def proc_ids(status: str) -> tuple[int, int] | None:
    """The real uid and gid from a ``/proc/<pid>/status`` text."""
    found: dict[str, int] = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid") and value.split():
            with contextlib.suppress(ValueError):
                found[key] = int(value.split()[0])
    return (found["Uid"], found["Gid"]) if len(found) == 2 else None


class FsIds:
    """Switches this thread's filesystem uid/gid (``setfsuid``/``setfsgid``).

    Listing ``/proc/<pid>/fd`` and resolving ``exe`` of another uid's process needs ptrace
    read access: either CAP_SYS_PTRACE plus a DAC override, or the same uid and gid. The
    agent takes the second way (CAP_SETUID/SETGID, which it needs anyway to start the build
    as its uid), because SYS_PTRACE would widen Docker's seccomp profile for the build that
    shares its container. The fs ids are per thread and nothing else is done meanwhile.
    """

    def __init__(self) -> None:
        import ctypes  # noqa: PLC0415 - only where attribution is possible (costs ms)
        libc = ctypes.CDLL(None, use_errno=True)
        self._setfsuid, self._setfsgid = libc.setfsuid, libc.setfsgid

    @contextlib.contextmanager
    def acting_as(self, uid: int, gid: int) -> Iterator[None]:
        if uid == os.geteuid():
            yield
            return
        self._setfsgid(gid)
        self._setfsuid(uid)
        try:
            yield
        finally:
            self._setfsuid(os.geteuid())
            self._setfsgid(os.getegid())


class Attributor:
    """Finds the process owning a local socket: its uid and inode from the kernel (a TCP
    socket whose peer is known: one exact sock_diag lookup; anything else: /proc/net/*),
    then /proc/*/fd is scanned for ``socket:[inode]`` within a time budget."""

    SCAN_SHARE = 0.3  # at most this fraction of wall time goes to /proc scans

    def __init__(self, proc: str | os.PathLike[str] = "/proc", budget_s: float = 0.15,
                 pids: bool = True, fs_ids: FsIds | None = None,
                 diag: SockDiag | None = None) -> None:
        self.proc = os.fspath(proc)
        self.diag = diag
        self.budget_s = budget_s
        self.pids = pids
        self.fs_ids = fs_ids
        self._owners: dict[int, int] = {}   # socket inode -> pid, from the last scan
        self._allowance = 0.3               # seconds of scanning we may still spend
        self._last = time.monotonic()

    def find(self, proto: str, address: str, port: int,
             remote: tuple[str, int] | None = None) -> Attribution:
        """The owner of the ``proto`` socket bound to ``address``:``port`` (whose peer is
        ``remote``, when known)."""
        found: ProcSocket | None = None
        if proto == "tcp" and remote is not None and self.diag is not None:
            exact = self.diag.lookup((address, port), remote)
            if exact is not None:
                found = ProcSocket(address, port, remote[0], remote[1], *exact)
        for table in () if found is not None else (proto, proto + "6"):
            try:
                entries = parse_proc_net(read_text(os.path.join(self.proc, "net", table)))
            except OSError:
                continue
            for entry in entries:
                if entry.lport == port and same_address(entry.local, address):
                    if entry.inode:
                        found = entry
                        break
                    found = found or entry
            if found is not None and found.inode:
                break
        if found is None:
            return Attribution(note="socket already closed")
        result = Attribution(uid=found.uid)
        if not found.inode:
            result.note = "socket has no owner any more"
            return result
        pid = self._pid_for_inode(found.inode) if self.pids else None
        if pid is None:
            result.note = ("owning process not found (no shared pid namespace?)" if self.pids
                           else "pid unknown: the agent lacks SETUID/SETGID")
            return result
        result.pid = pid
        result.exe, result.cmdline = self.describe(pid)
        result.parents = self._parents(pid)
        return result

    def _pid_for_inode(self, inode: int) -> int | None:
        """One scan of /proc/*/fd maps every socket inode to its process, so a burst of
        attempts costs one scan (socket inode numbers are not reused)."""
        pid = self._owners.get(inode)
        if pid is not None and os.path.exists(os.path.join(self.proc, str(pid))):
            return pid
        now = time.monotonic()
        self._allowance = min(self.SCAN_SHARE,
                              self._allowance + (now - self._last) * self.SCAN_SHARE)
        self._last = now
        if self._allowance <= 0:
            return None  # a flood: the listeners come first
        self._owners = self._scan(inode, now + min(self.budget_s, self._allowance))
        self._allowance -= time.monotonic() - now
        return self._owners.get(inode)

    def _scan(self, wanted: int, deadline: float) -> dict[int, int]:
        owners: dict[int, int] = {}
        try:
            pids = sorted((int(name) for name in os.listdir(self.proc) if name.isdigit()),
                          reverse=True)
        except OSError:
            return owners
        for pid in pids:
            if time.monotonic() > deadline or wanted in owners:
                break
            with self._as_owner(pid):
                links = fd_links(os.path.join(self.proc, str(pid), "fd"))
            for link in links:
                if link.startswith("socket:["):
                    owners.setdefault(int(link[8:-1]), pid)
        return owners

    def _as_owner(self, pid: int) -> contextlib.AbstractContextManager[None]:
        """Read ``pid``'s private /proc entries as its own uid and gid (see :class:`FsIds`)."""
        if self.fs_ids is None:
            return contextlib.nullcontext()
        try:
            ids = proc_ids(read_text(os.path.join(self.proc, str(pid), "status")))
        except OSError:
            ids = None
        return self.fs_ids.acting_as(*ids) if ids else contextlib.nullcontext()

    def describe(self, pid: int) -> tuple[str | None, str | None]:
        exe: str | None
        with self._as_owner(pid):
            try:
                exe = os.readlink(os.path.join(self.proc, str(pid), "exe"))
            except OSError:
                exe = None
        try:
            with open(os.path.join(self.proc, str(pid), "cmdline"), "rb") as stream:
                raw = stream.read(2048)
            args = [a.decode("utf-8", "backslashreplace") for a in raw.rstrip(b"\0").split(b"\0")]
            cmdline: str | None = printable(shlex.join(args).encode("utf-8", "replace"), 512)
        except OSError:
            cmdline = None
        return exe, cmdline

    def _parents(self, pid: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        current = pid
        for _ in range(4):
            try:
                stat = read_text(os.path.join(self.proc, str(current), "stat"))
                current = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                break
            # 0: the parent is outside this pid namespace; 1: the namespace's init (us).
            if current <= 1 or current == os.getpid():
                break
            exe, cmdline = self.describe(current)
            out.append({"pid": current, "exe": exe, "cmdline": cmdline})
        return out


# --------------------------------------------------------------------------- namespace setup

class SetupError(RuntimeError):
    """The namespace could not be configured or verified: no READY, exit 1."""


@dataclass(frozen=True)
class Config:
    nflog_group: int = 7
    tcp_port: int = 47001
    udp_port: int = 47002
    dns_port: int = 47053
    lo4: str = LO4
    lo6: str = LO6
    rate: float = 200.0
    burst: int = 1000
    max_events: int = 10000
    max_forged: int = 1000
    read_timeout: float = 1.5
    max_connections: int = 256
    ipv6: str = "auto"
    backend: str = "auto"
    selftest: bool = True
    # False: no network setup at all (diffoscope, --no-trap); the agent only supervises.
    trap: bool = True
    # The build the agent starts after READY, as this non-root uid/gid (none: just the trap).
    build_script: str = ""
    build_uid: int = -1
    build_gid: int = -1
    log_bytes: int = 10 * 1024 * 1024
    # After the build: this directory's files as a tar on stdout when they are few, small
    # and plain (else the host copies them through the engine); "" for never.
    inline_outputs: str = ""

    @property
    def listener_ports(self) -> frozenset[int]:
        return frozenset((self.tcp_port, self.udp_port, self.dns_port))


def build_nft_ruleset(cfg: Config) -> str:
    """The whole trap as one nftables table (loaded with ``nft -f -``)."""
    m = f"0x{MARK:08x}"
    log = f'group {cfg.nflog_group} snaplen 512 queue-threshold 1'
    return f"""table inet {TABLE} {{
	chain log_out {{
		type filter hook output priority -150; policy accept;
		meta mark {m} return
		ct direction reply return
		ip daddr 127.0.0.0/8 meta l4proto != {{ tcp, udp }} return
		ip daddr 127.0.0.0/8 th dport != 53 return
		ip6 daddr ::1 meta l4proto != {{ tcp, udp }} return
		ip6 daddr ::1 th dport != 53 return
		meta l4proto udp log prefix "rbtrap-udp" {log}
		meta l4proto udp return
		ct state new log prefix "rbtrap-new" {log}
	}}
	chain nat_out {{
		type nat hook output priority -100; policy accept;
		meta mark {m} return
		ip daddr 127.0.0.0/8 th dport != 53 return
		ip6 daddr ::1 th dport != 53 return
		udp dport 53 redirect to :{cfg.dns_port}
		meta l4proto tcp redirect to :{cfg.tcp_port}
		meta l4proto udp redirect to :{cfg.udp_port}
	}}
	chain filter_out {{
		type filter hook output priority 0; policy accept;
		meta mark {m} accept
		ct state established,related accept
		ip daddr 127.0.0.0/8 accept
		ip6 daddr ::1 accept
		meta l4proto tcp reject with tcp reset
		reject with icmpx type admin-prohibited
	}}
}}
"""


NFT_CHAINS = {"log_out": ("filter", -150, 9), "nat_out": ("nat", -100, 6),
              "filter_out": ("filter", 0, 6)}


def verify_nft_json(listing: dict[str, Any], cfg: Config) -> list[str]:
    """Problems with ``nft -j list ruleset`` output compared to what we loaded."""
    problems: list[str] = []
    items = listing.get("nftables", [])
    tables = [i["table"] for i in items if "table" in i]
    if [(t.get("family"), t.get("name")) for t in tables] != [("inet", TABLE)]:
        problems.append(f"unexpected tables: {[(t.get('family'), t.get('name')) for t in tables]}")
    chains = {c["chain"]["name"]: c["chain"] for c in items
              if "chain" in c and c["chain"].get("table") == TABLE}
    rules: dict[str, list[Any]] = {}
    for item in items:
        if "rule" in item:
            rules.setdefault(item["rule"].get("chain", ""), []).append(item["rule"]["expr"])
    for name, (ctype, prio, count) in NFT_CHAINS.items():
        chain = chains.get(name)
        if chain is None:
            problems.append(f"chain {name} missing")
            continue
        if (chain.get("type"), chain.get("hook"), chain.get("prio")) != (ctype, "output", prio):
            problems.append(f"chain {name} has the wrong type/hook/priority")
        if len(rules.get(name, [])) != count:
            problems.append(f"chain {name} has {len(rules.get(name, []))} rules, want {count}")
    if set(chains) != set(NFT_CHAINS):
        problems.append(f"unexpected chains {sorted(set(chains) - set(NFT_CHAINS))}")
    text = json.dumps(listing)
    for needle in (f'"redirect": {{"port": {cfg.tcp_port}}}',
                   f'"redirect": {{"port": {cfg.udp_port}}}',
                   f'"redirect": {{"port": {cfg.dns_port}}}',
                   f'"group": {cfg.nflog_group}', f'"right": {MARK}'):
        if needle not in text:
            problems.append(f"ruleset lacks {needle}")
    return problems


def build_iptables_rules(cfg: Config, v6: bool) -> str:
    """The same trap for iptables-restore (fallback when ``nft`` is unusable)."""
    lo = "::1/128" if v6 else "127.0.0.0/8"
    icmp = "ipv6-icmp" if v6 else "icmp"
    reject = "icmp6-adm-prohibited" if v6 else "icmp-admin-prohibited"
    nflog = f"-j NFLOG --nflog-group {cfg.nflog_group} --nflog-size 512 --nflog-threshold 1"
    m = f"0x{MARK:x}"
    return "\n".join([
        "*mangle", ":RBTRAP_LOG - [0:0]", "-A OUTPUT -j RBTRAP_LOG",
        f"-A RBTRAP_LOG -m mark --mark {m} -j RETURN",
        "-A RBTRAP_LOG -m conntrack --ctdir REPLY -j RETURN",
        f"-A RBTRAP_LOG -d {lo} -p tcp ! --dport 53 -j RETURN",
        f"-A RBTRAP_LOG -d {lo} -p udp ! --dport 53 -j RETURN",
        f"-A RBTRAP_LOG -d {lo} -p tcp -m conntrack --ctstate NEW {nflog}",
        f"-A RBTRAP_LOG -d {lo} -p udp {nflog}",
        f"-A RBTRAP_LOG -d {lo} -j RETURN",
        f"-A RBTRAP_LOG -p udp {nflog}", "-A RBTRAP_LOG -p udp -j RETURN",
        f"-A RBTRAP_LOG -m conntrack --ctstate NEW {nflog}", "COMMIT",
        "*nat", f"-A OUTPUT -m mark --mark {m} -j RETURN",
        f"-A OUTPUT -d {lo} -p tcp ! --dport 53 -j RETURN",
        f"-A OUTPUT -d {lo} -p udp ! --dport 53 -j RETURN",
        f"-A OUTPUT -p udp --dport 53 -j REDIRECT --to-ports {cfg.dns_port}",
        f"-A OUTPUT -p tcp -j REDIRECT --to-ports {cfg.tcp_port}",
        f"-A OUTPUT -p udp -j REDIRECT --to-ports {cfg.udp_port}", "COMMIT",
        "*filter", f"-A OUTPUT -m mark --mark {m} -j ACCEPT",
        "-A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
        f"-A OUTPUT -d {lo} -j ACCEPT",
        "-A OUTPUT -p tcp -j REJECT --reject-with tcp-reset",
        f"-A OUTPUT -p {icmp} -j REJECT --reject-with {reject}",
        f"-A OUTPUT -j REJECT --reject-with {reject}", "COMMIT", ""])


TOOL_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
"""Where the setup tools are looked for (the system's directories, not the image's PATH)."""


def which(name: str, path: str = TOOL_PATH) -> str | None:
    """The first executable ``name`` in ``path``: ``shutil.which`` for a bare name (the
    agent does without ``shutil``, ~3 ms of every sandbox's start)."""
    for directory in path.split(os.pathsep):
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def run(argv: list[str], stdin: str | None = None, timeout: float = 10.0) -> str:
    """Run a setup tool; raises :class:`SetupError` with its stderr on failure."""
    exe = which(argv[0])
    if exe is None:
        raise SetupError(f"{argv[0]} is not installed in the sandbox image")
    env = {"PATH": TOOL_PATH, "XTABLES_LOCKFILE": "/run/xtables.lock"}
    try:
        # Our stdin is the build's (the source tar): a setup tool never reads it.
        proc = subprocess.run([exe, *argv[1:]], input=stdin if stdin is not None else "",
                              capture_output=True, text=True, timeout=timeout, check=False,
                              env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SetupError(f"{' '.join(argv)}: {exc}") from exc
    if proc.returncode != 0:
        raise SetupError(f"{' '.join(argv)} failed ({proc.returncode}): "
                         f"{proc.stderr.strip()[:500]}")
    return proc.stdout


def ipv6_enabled() -> bool:
    try:
        return read_text("/proc/sys/net/ipv6/conf/lo/disable_ipv6").strip() == "0"
    except OSError:
        return False


def check_only_loopback(sys_net: str | os.PathLike[str] = "/sys/class/net") -> None:
    """Refuse to touch a namespace that has any interface besides lo (not --network none)."""
    try:
        names = sorted(os.listdir(sys_net))
    except OSError as exc:
        raise SetupError(f"cannot list network interfaces: {exc}") from exc
    if names != ["lo"]:
        raise SetupError(f"the namespace must have only lo (start the container with "
                         f"network_mode=none); found {names}")


def address_commands(cfg: Config, v6: bool) -> str:
    """The ``ip -batch`` input that gives lo the trap's addresses and default routes (one
    process instead of five; each address names its family, ``::/0`` is IPv6's default)."""
    lines = ["link set lo up", f"addr replace {cfg.lo4}/32 dev lo",
             f"route replace default dev lo src {cfg.lo4}"]
    if v6:
        lines += [f"addr replace {cfg.lo6}/128 dev lo nodad",
                  f"route replace ::/0 dev lo src {cfg.lo6}"]
    return "\n".join(lines) + "\n"


def configure_addresses(cfg: Config, v6: bool) -> None:
    run(["ip", "-batch", "-"], stdin=address_commands(cfg, v6))


def verify_addresses(cfg: Config, v6: bool) -> None:
    """Read the result back, each check its own command (not a batch, whose JSON output
    leaves fields out): only lo, its addresses, and each family's one default route."""
    shown = json.loads(run(["ip", "-j", "addr", "show"]))
    names = sorted(link.get("ifname", "?") for link in shown)
    if names != ["lo"]:
        raise SetupError(f"the namespace must have only lo (start the container with "
                         f"network_mode=none); found {names}")
    families = [("4", cfg.lo4)] + ([("6", cfg.lo6)] if v6 else [])
    for fam, src in families:
        routes = json.loads(run(["ip", f"-{fam}", "-j", "route", "show", "table", "all"]))
        default = [r for r in routes if r.get("dst") == "default" and r.get("type", "unicast")
                   == "unicast" and r.get("table", "main") == "main"]
        if len(default) != 1 or default[0].get("dev") != "lo" or default[0].get("prefsrc") != src:
            raise SetupError(f"IPv{fam} default route is not 'dev lo src {src}': {default}")
        for route in routes:
            if route.get("dev") not in (None, "lo"):
                raise SetupError(f"IPv{fam} route not on lo: {route}")
    local = {info.get("local") for link in shown for info in link.get("addr_info", [])}
    for _fam, src in families:
        if src not in local:
            raise SetupError(f"lo lacks {src}")


def install_rules(cfg: Config, v6: bool) -> tuple[str, str]:
    """Load and verify the ruleset; returns (backend, sha256 of the verified listing)."""
    errors: list[str] = []
    if cfg.backend in ("auto", "nft"):
        try:
            run(["nft", "-f", "-"], stdin=build_nft_ruleset(cfg))
            listing = run(["nft", "-j", "list", "ruleset"])
            problems = verify_nft_json(json.loads(listing), cfg)
            if problems:
                raise SetupError("nft ruleset verification failed: " + "; ".join(problems))
            # The digest is of the listing just verified (compared again at the end).
            return "nft", hashlib.sha256(listing.encode()).hexdigest()
        except (SetupError, ValueError) as exc:
            errors.append(str(exc))
            if cfg.backend == "nft":
                raise SetupError("; ".join(errors)) from exc
            with contextlib.suppress(SetupError):
                run(["nft", "delete", "table", "inet", TABLE])
    tools = [("iptables-nft", "iptables-nft-restore", "iptables-nft-save", False)]
    if v6:
        tools.append(("ip6tables-nft", "ip6tables-nft-restore", "ip6tables-nft-save", True))
    digest = hashlib.sha256()
    for _name, restore, save, is_v6 in tools:
        try:
            run([restore], stdin=build_iptables_rules(cfg, is_v6))
            saved = run([save])
        except SetupError as exc:
            errors.append(str(exc))
            raise SetupError("; ".join(errors)) from exc
        for needle in ("RBTRAP_LOG", f"--to-ports {cfg.tcp_port}", f"--to-ports {cfg.dns_port}",
                       f"--to-ports {cfg.udp_port}", f"--nflog-group {cfg.nflog_group}"):
            if needle not in saved:
                raise SetupError(f"{save} lacks {needle!r}")
        digest.update(normalize_iptables_save(saved).encode())
    return "iptables-nft", digest.hexdigest()


def normalize_iptables_save(text: str) -> str:
    """iptables-save output without its timestamp comments and packet counters."""
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    return re.sub(r"\[\d+:\d+\]", "[0:0]", "\n".join(lines))


def current_ruleset_digest(backend: str) -> str | None:
    try:
        if backend == "nft":
            listing = run(["nft", "-j", "list", "ruleset"], timeout=3)
            return hashlib.sha256(listing.encode()).hexdigest()
        digest = hashlib.sha256()
        digest.update(normalize_iptables_save(run(["iptables-nft-save"], timeout=3)).encode())
        if ipv6_enabled():
            digest.update(
                normalize_iptables_save(run(["ip6tables-nft-save"], timeout=3)).encode())
        return digest.hexdigest()
    except SetupError:
        return None


def read_resolvers() -> list[str]:
    try:
        lines = read_text("/etc/resolv.conf").splitlines()
    except OSError:
        return []
    return [line.split()[1] for line in lines
            if line.startswith("nameserver") and len(line.split()) > 1][:8]


def effective_caps() -> int:
    try:
        for line in read_text("/proc/self/status").splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


CAP_SETGID, CAP_SETUID = 6, 7


# --------------------------------------------------------------------------- NFLOG socket

class Nflog:
    """The NETLINK_NETFILTER socket bound to one NFLOG group."""

    def __init__(self, group: int) -> None:
        self.group = group
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        for opt in (SO_RCVBUFFORCE, socket.SO_RCVBUF):
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, opt, 8 * 1024 * 1024)
                break
        self.sock.bind((0, 0))
        self.seq = 0
        self.overruns = 0
        # A stale instance from an earlier agent in this namespace would make BIND fail.
        with contextlib.suppress(SetupError):
            self._config(nl_attr(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_UNBIND])))
        self._config(nl_attr(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_BIND])))
        self._config(nl_attr(NFULA_CFG_MODE, struct.pack("!IBB", 512, NFULNL_COPY_PACKET, 0)))
        self._config(nl_attr(NFULA_CFG_QTHRESH, struct.pack("!I", 1)))
        self._config(nl_attr(NFULA_CFG_NLBUFSIZ, struct.pack("!I", 65536)))
        self.sock.setblocking(False)

    def _config(self, attrs: bytes) -> None:
        self.seq += 1
        self.sock.sendall(nflog_config_message(self.group, attrs, self.seq))
        self.sock.settimeout(2.0)
        try:
            while True:
                data = self.sock.recv(65536)
                for mtype, _flags, body in iter_netlink(data):
                    if mtype == NLMSG_ERROR and len(body) >= 4:
                        code = struct.unpack("=i", body[:4])[0]
                        if code:
                            raise SetupError(f"NFLOG config refused: "
                                             f"{os.strerror(-code)}")
                        return
        except (TimeoutError, OSError) as exc:
            raise SetupError(f"NFLOG config got no answer: {exc}") from exc

    def read(self) -> list[NflogPacket]:
        """Everything queued now (non-blocking)."""
        out: list[NflogPacket] = []
        for _ in range(512):
            try:
                data = self.sock.recv(262144)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.overruns += 1
                    continue
                raise
            out.extend(parse_nflog_buffer(data))
        return out


# --------------------------------------------------------------------------- the trap

def original_dst(sock: socket.socket, family: int) -> tuple[str, int] | None:
    """The destination the client dialled, from conntrack (SO_ORIGINAL_DST)."""
    try:
        if family == 4:
            raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
            return socket.inet_ntop(socket.AF_INET, raw[4:8]), struct.unpack("!H", raw[2:4])[0]
        raw = sock.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), struct.unpack("!H", raw[2:4])[0]
    except OSError:
        return None


def is_local_address(address: str, cfg: Config) -> bool:
    ip = plain_ip(address)
    if ip is None:
        return False
    return ip.is_loopback or str(ip) in (cfg.lo4, cfg.lo6) or ip.is_unspecified


@dataclass
class TcpConn:
    sock: socket.socket
    family: int
    peer: tuple[str, int]
    dst: str | None
    dport: int | None
    forged: bool
    attribution: Attribution
    uid: int | None
    deadline: float
    mode: str = "sniff"
    buf: bytes = b""
    queries: int = 0
    first_data: float | None = None


FlowKey = tuple[int, int, str, int, str, int]  # family, proto, src, sport, dst, dport


@dataclass
class PendingFlow:
    """An NFLOG record waiting for the listener to see its connection or datagram."""

    packet: IpPacket
    uid: int | None
    seen: float
    why: str = "never reached the trap listener"
    taken: bool = False

    @property
    def key(self) -> FlowKey:
        pkt = self.packet
        return (pkt.family, pkt.proto, pkt.src, pkt.sport or 0, pkt.dst, pkt.dport or 0)


def payload_matches(recorded: bytes, data: bytes) -> bool:
    """Whether ``data`` (as the listener got it) is the datagram NFLOG copied (maybe cut)."""
    if len(recorded) == len(data):
        return recorded == data
    return len(recorded) >= 400 and data.startswith(recorded)


class FlowTable:
    """NFLOG records (pre-NAT: true destination, uid, first bytes) waiting to be paired with
    what the listeners see, by the flow's original 5-tuple (from SO_ORIGINAL_DST/conntrack)
    and, for UDP, the payload. Records nobody claims within ``ttl`` (the kernel dropped the
    packet before the listener, e.g. a full socket buffer) or pushed out by the cap come
    back from :meth:`add`/:meth:`expire`, so they are still logged."""

    def __init__(self, ttl: float = 3.0, total: int = 8192) -> None:
        self.ttl = ttl
        self.total = total
        self.flows: dict[FlowKey, deque[PendingFlow]] = {}
        self.order: deque[PendingFlow] = deque()
        self.count = 0

    def add(self, pkt: IpPacket, uid: int | None, now: float) -> list[PendingFlow]:
        """Remember a TCP/UDP record; returns records that had to be let go."""
        flow = PendingFlow(pkt, uid, now)
        if pkt.proto == 6 and flow.key in self.flows:
            return []  # a retransmitted SYN
        out: list[PendingFlow] = []
        if self.count >= self.total:
            out += self.expire(now, ttl=min(self.ttl, 0.5))
        if self.count >= self.total:
            flow.why = "not paired: trap overloaded"
            return [*out, flow]
        self.flows.setdefault(flow.key, deque()).append(flow)
        self.order.append(flow)
        self.count += 1
        if len(self.order) > 2 * self.total:
            self.order = deque(f for f in self.order if not f.taken)
        return out

    def take(self, key: FlowKey, data: bytes | None = None) -> PendingFlow | None:
        """The oldest record of flow ``key`` (for UDP: the one with this payload)."""
        queue = self.flows.get(key)
        if not queue:
            return None
        if data is None:
            chosen: PendingFlow | None = queue[0]
        else:
            chosen = next((f for f in queue if payload_matches(f.packet.payload, data)), None)
        if chosen is None:
            return None
        queue.remove(chosen)
        if not queue:
            del self.flows[key]
        chosen.taken = True
        self.count -= 1
        return chosen

    def expire(self, now: float, ttl: float | None = None) -> list[PendingFlow]:
        limit = now - (self.ttl if ttl is None else ttl)
        out: list[PendingFlow] = []
        while self.order and self.order[0].seen < limit:
            flow = self.order.popleft()
            if flow.taken:
                continue
            queue = self.flows[flow.key]
            queue.remove(flow)
            if not queue:
                del self.flows[flow.key]
            flow.taken = True
            out.append(flow)
        self.count -= len(out)
        return out

    def clear(self) -> None:
        self.flows.clear()
        self.order.clear()
        self.count = 0


class Trap:
    """The listeners and the NFLOG reader, driven by one selector loop."""

    def __init__(self, cfg: Config, log: EventLog, nflog: Nflog, attributor: Attributor,
                 fakes: FakeAddresses, v6: bool, conntrack: Conntrack) -> None:
        self.cfg = cfg
        self.ct = conntrack
        self.log = log
        self.nflog = nflog
        self.attr = attributor
        self.fakes = fakes
        self.v6 = v6
        self.sel = selectors.DefaultSelector()
        self.conns: dict[int, TcpConn] = {}
        self.flows = FlowTable()
        self.udp_flows: OrderedDict[tuple[Any, ...], float] = OrderedDict()
        self.listeners: list[socket.socket] = []
        self.overruns_reported = 0
        self.last_reap = 0.0
        # The supervisor's reaper once a build runs (it must see its child's exit status).
        self.reaper: Callable[[], None] = reap_children
        self.sel.register(nflog.sock, selectors.EVENT_READ, self._on_nflog)

    # ---- listeners
    def open_listeners(self) -> None:
        families = [(socket.AF_INET, "127.0.0.1")]
        if self.v6:
            families.append((socket.AF_INET6, "::1"))
        for af, host in families:
            tcp = self._socket(af, socket.SOCK_STREAM)
            tcp.bind((host, self.cfg.tcp_port))
            tcp.listen(512)
            self.sel.register(tcp, selectors.EVENT_READ, self._on_accept)
            for port, mode in ((self.cfg.dns_port, "dns"), (self.cfg.udp_port, "udp")):
                udp = self._socket(af, socket.SOCK_DGRAM)
                udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024 * 1024)
                udp.bind((host, port))
                self.sel.register(udp, selectors.EVENT_READ,
                                  functools.partial(self._on_udp, mode=mode))

    def _socket(self, af: int, kind: int) -> socket.socket:
        sock = socket.socket(af, kind)
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, MARK)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if af == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setblocking(False)
        self.listeners.append(sock)
        return sock

    # ---- loop
    def serve(self, until: Callable[[], bool] | None = None) -> None:
        while not (until is not None and until()):
            ready = self.sel.select(self._timeout())
            ready.sort(key=lambda item: item[0].data != self._on_nflog)
            for key, _mask in ready:
                if key.fd not in self.sel.get_map():
                    continue
                try:
                    key.data(key.fileobj)
                except Exception as exc:  # noqa: BLE001 - one bad input must not stop the trap
                    self.log.emit(new_event("error", detail=f"handler failed: {exc!r}"[:300]))
            self.tick()

    def _timeout(self) -> float:
        now = time.monotonic()
        soonest = now + 0.25
        for conn in self.conns.values():
            soonest = min(soonest, conn.deadline)
        return max(0.0, soonest - now)

    def tick(self) -> None:
        now = time.monotonic()
        for conn in [c for c in self.conns.values() if c.deadline <= now]:
            self._finish(conn, "timeout")
        self._expire_pending(now)
        if self.nflog.overruns > self.overruns_reported:
            self.overruns_reported = self.nflog.overruns
            self.log.emit(new_event("error", detail="NFLOG queue overflowed: some packets "
                                    "were not logged (flood?)"))
        while len(self.udp_flows) > 4096 or (
                self.udp_flows and next(iter(self.udp_flows.values())) < now - 30):
            self.udp_flows.popitem(last=False)
        if os.getpid() == 1 and now - self.last_reap > 1.0:
            self.last_reap = now
            self.reaper()
        self.log.tick()

    # ---- NFLOG
    def _on_nflog(self, _sock: Any) -> None:
        for record in self.nflog.read():
            self._on_packet(record)

    def drain_nflog(self, wait: float = 0.0) -> None:
        """Read NFLOG records queued so far (and for up to ``wait`` seconds more).

        The kernel queues a packet's NFLOG message in the sender's output path, before the
        packet reaches a listener, so a datagram or connection the listener sees without a
        record after a drain was never seen by the log rule: it came over loopback."""
        deadline = time.monotonic() + wait
        while True:
            self._on_nflog(None)
            left = deadline - time.monotonic()
            if left <= 0:
                return
            select.select([self.nflog.sock], [], [], left)

    def _on_packet(self, record: NflogPacket) -> None:
        pkt = record.packet
        now = time.monotonic()
        if pkt.proto in (6, 17) and pkt.sport is not None:
            for flow in self.flows.add(pkt, record.uid, now):
                self._unmatched_event(flow)
        elif pkt.proto in (1, 58):
            self._icmp_event(pkt, record.uid)
        else:
            event = new_event("other", proto=pkt.proto_name, family=pkt.family, dst=pkt.dst,
                              dport=pkt.dport, name=self.fakes.name_for(pkt.dst),
                              detail=first_bytes_detail(pkt.payload) if pkt.payload else None)
            if pkt.proto == 136 and pkt.sport is not None:  # UDP-Lite has a /proc/net table
                self._attribute("udplite", (pkt.src, pkt.sport), False).apply(event)
            event["uid"] = record.uid
            self.log.emit(event)

    def _icmp_event(self, pkt: IpPacket, uid: int | None) -> None:
        names = ICMP4_TYPES if pkt.proto == 1 else ICMP6_TYPES
        detail = names.get(pkt.icmp_type or 0, f"type {pkt.icmp_type}")
        detail += f" code={pkt.icmp_code}"
        if pkt.icmp_id is not None and pkt.icmp_type in (8, 128):
            detail += f" id={pkt.icmp_id} seq={pkt.icmp_seq}"
        event = new_event("icmp", proto=pkt.proto_name, family=pkt.family, dst=pkt.dst,
                          name=self.fakes.name_for(pkt.dst), detail=detail, uid=uid)
        if pkt.icmp_id is not None and pkt.icmp_type in (8, 128):
            attribution = self._attribute("icmp", (pkt.src, pkt.icmp_id), False)
            attribution.apply(event)
            if uid is not None:
                event["uid"] = uid
        self.log.emit(event)

    def _expire_pending(self, now: float) -> None:
        for flow in self.flows.expire(now):
            self._unmatched_event(flow)

    def _unmatched_event(self, flow: PendingFlow) -> None:
        """Log a TCP/UDP attempt from its NFLOG record alone (the listener never saw it:
        e.g. a NAT clash when one socket sends to many destinations)."""
        pkt = flow.packet
        kind = "tcp" if pkt.proto == 6 else "udp"
        if kind == "udp" and pkt.dport != 53:
            seen = (pkt.family, (pkt.src, pkt.sport), pkt.dst, pkt.dport)
            if seen in self.udp_flows:  # this flow is already in the log
                return
            self.udp_flows[seen] = time.monotonic()
        event = new_event(kind, proto=kind, family=pkt.family, dst=pkt.dst, dport=pkt.dport,
                          name=self.fakes.name_for(pkt.dst),
                          detail=flow.why + (f"; {first_bytes_detail(pkt.payload)}"
                                             if pkt.payload else ""))
        if pkt.proto == 17 and pkt.dport == 53:
            with contextlib.suppress(DnsError):
                query = parse_dns_query(pkt.payload)
                event.update(kind="dns", name=query.name, qtype=query.qtype_name,
                             detail=flow.why)
        if pkt.sport is not None:  # the sender may still hold the socket
            self._attribute(kind, (pkt.src, pkt.sport), False).apply(event)
        event["uid"] = flow.uid
        self.log.emit(event)

    def _attribute(self, proto: str, peer: tuple[str, int], forged: bool,
                   remote: tuple[str, int] | None = None) -> Attribution:
        """Look the sender up, unless its event would be dropped anyway (floods)."""
        if not self.log.has_budget(forged):
            return Attribution(note="not looked up: over the event budget")
        return self.attr.find(proto, peer[0], peer[1], remote)

    # ---- TCP
    def _on_accept(self, lsock: Any) -> None:
        family = 6 if lsock.family == socket.AF_INET6 else 4
        for _ in range(64):
            try:
                sock, peer = lsock.accept()
            except OSError:  # including BlockingIOError: nothing more to accept
                return
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, SO_MARK, MARK)
            self._new_conn(sock, family, (peer[0], peer[1]))

    def _new_conn(self, sock: socket.socket, family: int, peer: tuple[str, int]) -> None:
        dst = original_dst(sock, family)
        source = peer
        flow = None
        if dst is not None and not is_local_address(dst[0], self.cfg):
            self.drain_nflog()
            flow = self.flows.take((family, 6, peer[0], peer[1], dst[0], dst[1]))
            if flow is None:  # the kernel may have remapped the source port (NAT clash)
                local = sock.getsockname()
                orig = self.ct.original(6, (local[0], local[1]), peer)
                if orig is not None:
                    source = (orig.src, orig.sport)
                    flow = self.flows.take((family, 6, orig.src, orig.sport, dst[0], dst[1]))
        forged = dst is None or (dst[1] in self.cfg.listener_ports
                                 and is_local_address(dst[0], self.cfg))
        # The build's socket sees the destination it asked for (the redirect is NAT), or
        # this listener when it connected here itself.
        remote = dst
        if remote is None:
            with contextlib.suppress(OSError):
                remote = sock.getsockname()[:2]
        attribution = self._attribute("tcp", source, forged, remote=remote)
        conn = TcpConn(sock=sock, family=family, peer=peer,
                       dst=dst[0] if dst else None, dport=dst[1] if dst else None,
                       forged=forged, attribution=attribution,
                       uid=flow.uid if flow else attribution.uid,
                       deadline=time.monotonic() + self.cfg.read_timeout)
        if dst is not None and dst[1] == 53 and not forged:
            conn.mode = "dns"
        if len(self.conns) >= self.cfg.max_connections:
            self._emit_tcp(conn, "tcp", name=None,
                           detail="not inspected: too many open connections")
            sock.close()
            return
        self.conns[sock.fileno()] = conn
        self.sel.register(sock, selectors.EVENT_READ, self._on_conn)

    def _on_conn(self, sock: Any) -> None:
        conn = self.conns.get(sock.fileno())
        if conn is None:
            return
        try:
            data = sock.recv(16384)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._finish(conn, "eof")
            return
        if conn.first_data is None:
            conn.first_data = time.monotonic()
        conn.buf = (conn.buf + data)[:32768]
        self._progress(conn)

    def _progress(self, conn: TcpConn) -> None:
        buf = conn.buf
        if conn.forged:
            if len(buf) >= 256:
                self._finish(conn, "enough")
            else:
                assert conn.first_data is not None
                conn.deadline = min(conn.deadline, conn.first_data + 0.3)
            return
        if conn.mode == "dns":
            while len(conn.buf) >= 2:
                size = struct.unpack("!H", conn.buf[:2])[0]
                if len(conn.buf) < 2 + size:
                    break
                msg, conn.buf = conn.buf[2:2 + size], conn.buf[2 + size:]
                conn.queries += 1
                reply = self._dns(msg, "tcp", conn.family, conn.dst, conn.dport or 53,
                                  conn.uid, conn.attribution, False)
                if reply is not None:
                    with contextlib.suppress(OSError):
                        conn.sock.send(struct.pack("!H", len(reply)) + reply)
                if conn.queries >= 16:
                    self._finish(conn, "enough")
                    return
            return
        if looks_like_tls(buf):
            if parse_tls_client_hello(buf).status != "incomplete" or len(buf) >= 32768:
                self._finish(conn, "enough")
        elif looks_like_http(buf):
            request = parse_http_request(buf)
            if (request is not None and request.complete) or len(buf) >= 16384 or (
                    request is None and b"\n" in buf):
                self._finish(conn, "enough")
        elif len(buf) >= 64:
            self._finish(conn, "enough")
        else:
            # Unknown protocol: wait briefly for more of its first bytes, then close.
            assert conn.first_data is not None
            conn.deadline = min(conn.deadline, conn.first_data + 0.3)

    def _finish(self, conn: TcpConn, why: str) -> None:
        self.conns.pop(conn.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(conn.sock)
        buf = conn.buf
        mapped = self.fakes.name_for(conn.dst) if conn.dst else None
        reply = b""
        if conn.forged:
            claim = "no data" if not buf else self._describe_tcp(buf)[2]
            where = (f"{conn.dst}:{conn.dport}" if conn.dst else "unknown (no conntrack)")
            self._emit_tcp(conn, "forged", name=None,
                           detail=f"direct connection to the trap listener {where}; "
                                  f"claimed: {claim}")
        elif conn.mode == "dns":
            if conn.queries == 0:
                self._emit_tcp(conn, "tcp", name=mapped, detail="DNS over TCP without a "
                               f"complete query ({why}); " + first_bytes_detail(buf))
        else:
            kind, name, detail = self._describe_tcp(buf)
            if kind == "tcp" and not buf:
                detail = f"no data from client ({why})"
            if name is None:
                name = mapped
            elif mapped is not None and mapped.lower() != name.lower():
                detail += f" (address was handed out for {mapped})"
            self._emit_tcp(conn, kind, name=name, detail=detail)
            reply = HTTP_403 if kind == "http" else TLS_ALERT if kind == "tls" else b""
        with contextlib.suppress(OSError):
            if reply:
                conn.sock.send(reply)
                conn.sock.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            conn.sock.close()

    @staticmethod
    def _describe_tcp(buf: bytes) -> tuple[str, str | None, str]:
        if looks_like_tls(buf):
            hello = parse_tls_client_hello(buf)
            if hello.status == "ok":
                detail = "TLS ClientHello"
                if hello.alpn:
                    detail += " alpn=" + ",".join(hello.alpn)
                if hello.versions:
                    detail += " versions=" + ",".join(f"{v:#06x}" for v in hello.versions)
                return "tls", hello.sni, detail
            return "tls", None, f"TLS ({hello.status} ClientHello); {first_bytes_detail(buf)}"
        request = parse_http_request(buf)
        if request is not None:
            return "http", request.hostname, request.request_line
        return "tcp", None, first_bytes_detail(buf) if buf else "no data"

    def _emit_tcp(self, conn: TcpConn, kind: str, *, name: str | None, detail: str) -> None:
        event = new_event(kind, proto="tcp", family=conn.family, dst=conn.dst,
                          dport=conn.dport, name=name, detail=detail,
                          forged=conn.forged)
        conn.attribution.apply(event)
        if conn.uid is not None:
            event["uid"] = conn.uid
        self.log.emit(event)

    # ---- UDP
    def _on_udp(self, sock: Any, mode: str) -> None:
        family = 6 if sock.family == socket.AF_INET6 else 4
        for _ in range(64):
            try:
                data, peer = sock.recvfrom(65535)
            except OSError:  # including BlockingIOError: nothing more to read
                return
            self._datagram(sock, mode, family, data, (peer[0], peer[1]))

    def _datagram(self, sock: socket.socket, mode: str, family: int, data: bytes,
                  peer: tuple[str, int]) -> None:
        local = sock.getsockname()
        self.drain_nflog()
        orig = self.ct.original(17, (local[0], local[1]), peer)
        source = peer
        dst: str
        dport: int | None
        if orig is not None:
            # conntrack knows the truth: where it was sent, and from which port.
            source = (orig.src, orig.sport)
            dst, dport = orig.dst, orig.dport
            forged = dport in self.cfg.listener_ports and is_local_address(dst, self.cfg)
            flow = self.flows.take((family, 17, orig.src, orig.sport, dst, dport), data)
            uid = flow.uid if flow is not None else None
        else:
            # No conntrack entry: cannot have come through the trap's NAT. Distrust it.
            dst, dport, forged, uid = local[0], local[1], True, None
        dns = mode == "dns"
        attribution = self._attribute("udp", source, forged)
        if uid is None:
            uid = attribution.uid
        if dns or dport == 53:
            reply = self._dns(data, "udp", family, dst, dport, uid, attribution, forged)
            if reply is not None:
                with contextlib.suppress(OSError):
                    sock.sendto(reply, peer)
            return
        key = (family, source, dst, dport)
        if not forged and key in self.udp_flows:
            self.udp_flows[key] = time.monotonic()
            self.udp_flows.move_to_end(key)
            return
        self.udp_flows[key] = time.monotonic()
        detail = first_bytes_detail(data)
        if dport == 443 and data and data[0] & 0xC0 == 0xC0:
            detail = "QUIC long header; " + detail
        if forged:
            detail = f"datagram sent directly to the trap listener {dst}:{dport}; " \
                     f"claimed: {detail}"
        event = new_event("forged" if forged else "udp", proto="udp", family=family, dst=dst,
                          dport=dport, name=self.fakes.name_for(dst) if dst else None,
                          detail=detail, forged=forged)
        attribution.apply(event)
        event["uid"] = uid
        self.log.emit(event)

    def _dns(self, msg: bytes, proto: str, family: int, dst: str | None, dport: int | None,
             uid: int | None, attribution: Attribution, forged: bool) -> bytes | None:
        """Log one DNS query and return the trap's answer."""
        where = f"sent directly to the trap listener {dst}:{dport}; " if forged else ""
        try:
            query = parse_dns_query(msg)
        except DnsError as exc:
            event = new_event("forged" if forged else "dns", proto=proto, family=family,
                              dst=dst, dport=dport, forged=forged,
                              detail=f"{where}unparsable DNS query ({exc}); "
                                     f"{first_bytes_detail(msg)}")
            attribution.apply(event)
            event["uid"] = uid
            self.log.emit(event)
            return dns_error_response(msg, 1)
        reply, answer = answer_dns(query, self.fakes)
        if forged:
            event = new_event("forged", proto=proto, family=family, dst=dst, dport=dport,
                              name=query.name, qtype=query.qtype_name, forged=True,
                              detail=f"{where}claimed DNS query")
        else:
            event = new_event("dns", proto=proto, family=family, dst=dst, dport=dport,
                              name=query.name, qtype=query.qtype_name, detail=answer)
        attribution.apply(event)
        event["uid"] = uid
        self.log.emit(event)
        return reply

    def close_pending(self) -> None:
        """Forget flow state (after the self-test, whose traffic is not evidence)."""
        self.flows.clear()
        self.udp_flows.clear()

    def drain(self, seconds: float = 0.5) -> None:
        """Handle what is already queued (at shutdown: nothing that arrived is lost)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            ready = [(k, m) for k, m in self.sel.select(0) if k.data != self._wake]
            if not ready:
                return
            ready.sort(key=lambda item: item[0].data != self._on_nflog)
            for key, _mask in ready:
                if key.fd in self.sel.get_map():
                    with contextlib.suppress(Exception):
                        key.data(key.fileobj)

    def _wake(self, fd: Any) -> None:
        """The signal wake-up pipe: only there to interrupt select()."""
        with contextlib.suppress(OSError):
            os.read(fd, 512)

    def close(self) -> None:
        for conn in list(self.conns.values()):
            self._finish(conn, "shutdown")
        self._expire_pending(float("inf"))
        for sock in self.listeners:
            with contextlib.suppress(OSError):
                sock.close()


def reap_children(exited: Callable[[int, int], None] | None = None) -> None:
    """As PID 1 of the namespace the agent inherits the build's orphans; ``exited`` hears
    of each (pid, wait status) collected."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if exited is not None:
            exited(pid, status)


# --------------------------------------------------------------------------- the build

SETPRIV = "/usr/bin/setpriv"
BUILD_EXIT_PREFIX = "REPROBUILD-BUILD-EXIT"
# Signals Python changes that the build must get back at their defaults.
CHILD_DEFAULT_SIGNALS = tuple(getattr(signal, name) for name in (
    "SIGPIPE", "SIGXFSZ", "SIGTERM", "SIGINT", "SIGUSR1", "SIGCHLD") if hasattr(signal, name))


def build_argv(cfg: Config) -> list[str]:
    """The build's command: ``setpriv`` drops every privilege, then ``sh`` runs the script.

    The uid/gid become the build's (real, effective, saved), supplementary groups are
    cleared, and the inheritable, ambient and bounding capability sets are emptied, so
    nothing the build executes can ever regain a capability; ``no_new_privs`` is set on the
    container already and again here.
    """
    return [SETPRIV, f"--reuid={cfg.build_uid}", f"--regid={cfg.build_gid}",
            "--clear-groups", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all",
            "--no-new-privs", "--", "/bin/sh", "-c", cfg.build_script]


def build_home(uid: int) -> str:
    """The uid's home from the image's passwd, or ``/`` (what Docker gives a user)."""
    try:
        return pwd.getpwuid(uid).pw_dir or "/"
    except KeyError:
        return "/"


def exit_code(status: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128 + the signal."""
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


class OutputRelay:
    """Caps the build's output on its way to the container's stderr: the first half of the
    budget passes as it comes, the last half is held back and written at the end, with a
    note of what was left out between. The container's log therefore never rotates, so
    the agent's own lines on stdout (the evidence) cannot be pushed out by a noisy build."""

    def __init__(self, limit: int) -> None:
        self.head_left = max(0, limit // 2)
        self.tail_limit = max(0, limit - limit // 2)
        self.tail = bytearray()
        self.dropped = 0

    def feed(self, data: bytes) -> bytes:
        """What to write now; the rest is kept for :meth:`finish` or dropped."""
        now = data[:self.head_left]
        self.head_left -= len(now)
        rest = data[len(now):]
        if rest:
            self.tail += rest
            excess = len(self.tail) - self.tail_limit
            if excess > 0:
                self.dropped += excess
                del self.tail[:excess]
        return now

    def finish(self) -> bytes:
        note = (f"\n[reprobuild: {self.dropped} bytes of build output left out here]\n"
                .encode() if self.dropped else b"")
        rest = note + bytes(self.tail)
        self.tail.clear()
        return rest


class Supervisor:
    """Starts the untrusted build as the agent's child with every privilege dropped,
    relays its output, learns its exit status and, at the end, kills whatever it left.

    Everything the build runs lives in this pid namespace, where the agent is PID 1: it
    reaps orphans here (the build's exit status must not be lost to a generic reaper) and
    can kill them all (CAP_KILL) before the host copies the outputs, so no untrusted
    process runs while the archive API reads the container.
    """

    def __init__(self, cfg: Config, out_fd: int = 2) -> None:
        self.cfg = cfg
        self.out_fd = out_fd
        self.relay = OutputRelay(cfg.log_bytes)
        self.pid: int | None = None
        self.code: int | None = None
        self.fd: int | None = None
        self.ended_cleanly = False

    def start(self) -> int:
        """Spawn the build; its stdin is ours (the host sends the source only after READY)."""
        read_fd, write_fd = os.pipe()
        env = dict(os.environ)
        env["HOME"] = build_home(self.cfg.build_uid)  # as Docker would set it, not /root
        # The build inherits the OOM killer's first choice, so a build that runs the
        # container out of memory is killed, not the agent; raising needs no privilege and
        # going back to where we were is allowed, so only the build keeps it.
        adj = "/proc/self/oom_score_adj"
        try:
            before = read_text(adj).strip()
            with open(adj, "w", encoding="ascii") as stream:
                stream.write("1000")
        except OSError:
            before = None
        try:
            self.pid = os.posix_spawn(
                SETPRIV, build_argv(self.cfg), env,
                file_actions=[(os.POSIX_SPAWN_DUP2, write_fd, 1),
                              (os.POSIX_SPAWN_DUP2, write_fd, 2)],
                setsid=True, setsigdef=CHILD_DEFAULT_SIGNALS, setsigmask=())
        finally:
            os.close(write_fd)
            if before is not None:
                with contextlib.suppress(OSError), open(adj, "w", encoding="ascii") as stream:
                    stream.write(before)
        os.set_blocking(read_fd, False)
        self.fd = read_fd
        return self.pid

    def pump(self, _fileobj: Any = None) -> bool:
        """Relay what the build wrote; False at end of file (every writer is gone)."""
        if self.fd is None:
            return False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return True
            except OSError:
                data = b""
            if not data:
                os.close(self.fd)
                self.fd = None
                return False
            self._write(self.relay.feed(data))

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.out_fd, view):]
            except BlockingIOError:
                select.select([], [self.out_fd], [], 1.0)
            except OSError:
                return

    def reap(self) -> None:
        """Collect every exited child, keeping the build's own exit status."""
        reap_children(self._exited)

    def _exited(self, pid: int, status: int) -> None:
        if pid == self.pid:
            self.code = exit_code(status)

    def exited(self) -> bool:
        self.reap()
        return self.code is not None

    def kill_all(self, timeout: float = 10.0) -> int:
        """SIGKILL every other process in the namespace until none is left; how many."""
        me = os.getpid()
        killed: set[int] = set()
        deadline = time.monotonic() + timeout
        while True:
            if me != 1:  # not a container's init (tests): only the build's own session
                others = [self.pid] if self.pid is not None and self.code is None else []
            else:
                others = [int(name) for name in os.listdir("/proc")
                          if name.isdigit() and int(name) != me]
            for pid in others:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
            self.reap()
            if not others:
                break
            if time.monotonic() > deadline:
                raise SetupError(f"build processes survived SIGKILL: {sorted(others)[:10]}")
            time.sleep(0.005)
        if self.pid is not None:
            killed.discard(self.pid)
        return len(killed)

    def finish(self, log: EventLog, *, stopped: bool) -> None:
        """End the build (it exited, or the host said stop): kill what is left, relay the
        rest of its output, and print the exit line the host waits for."""
        leftovers = 0
        error: str | None = None
        try:
            leftovers = self.kill_all()
        except (SetupError, OSError) as exc:
            error = str(exc)
        # Every writer is dead, so the pipe ends at once; the bound is only a backstop.
        deadline = time.monotonic() + 10.0
        while self.fd is not None and error is None:
            if time.monotonic() > deadline:
                error = "the build's output did not end after its processes were killed"
            elif self.pump():
                select.select([self.fd], [], [], 1.0)
        self._write(self.relay.finish())
        self.ended_cleanly = error is None
        summary = {"code": self.code, "stopped": stopped, "leftovers": leftovers,
                   "output_dropped": self.relay.dropped, "error": error}
        log.write_line(f"{BUILD_EXIT_PREFIX} {json.dumps(summary, sort_keys=True)}")


# --------------------------------------------------------------------------- outputs

INLINE_MAX_BYTES = 4 * 1024 * 1024
INLINE_MAX_FILES = 1000
INLINE_MAX_DEPTH = 64
INLINE_LINE_CHARS = 4096  # base64 per line: well under the json-file log's 16 KiB lines


class NotInline(Exception):
    """The outputs are not for the inline path: the host copies them through the engine,
    which also refuses what is not a plain regular file."""


def outputs_tar(root: str, *, max_bytes: int = INLINE_MAX_BYTES,
                max_files: int = INLINE_MAX_FILES, max_depth: int = INLINE_MAX_DEPTH) -> bytes:
    """``root``'s directories and regular files as a tar, members named ``./PATH`` as the
    engine's archive of ``root/.`` names them; only once no build process is left.

    Nothing is followed: entries are classified with ``lstat`` semantics and a file is
    opened with ``O_NOFOLLOW`` and checked to be the inode that was listed. Anything else
    (a link, a device, a fifo, an unreadable file, more or bigger than the caps) raises
    :class:`NotInline`, so those cases keep the one path that refuses them.
    """
    import io  # noqa: PLC0415 - only after the build, never before READY
    import stat as st  # noqa: PLC0415
    import tarfile  # noqa: PLC0415

    listed: list[tuple[str, os.stat_result]] = []
    total = 0
    pending = [("", 0)]
    while pending:
        rel, depth = pending.pop()
        if depth >= max_depth:
            raise NotInline(f"deeper than {max_depth} levels")
        try:
            # Unsorted, so a directory of a million entries stops at the cap.
            with os.scandir(os.path.join(root, rel) if rel else root) as found:
                for child in found:
                    path = f"{rel}/{child.name}" if rel else child.name
                    if not child.name.isprintable():  # control bytes, or not UTF-8
                        raise NotInline("a name that is not printable UTF-8")
                    info = child.stat(follow_symlinks=False)
                    if st.S_ISDIR(info.st_mode):
                        pending.append((path, depth + 1))
                    elif not st.S_ISREG(info.st_mode):
                        raise NotInline("not only directories and regular files")
                    else:
                        total += info.st_size
                    listed.append((path, info))
                    if len(listed) > max_files or total > max_bytes:
                        raise NotInline("more than the inline caps")
        except OSError as exc:
            raise NotInline(f"cannot list {rel or '.'}: {exc.strerror}") from exc
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, info in sorted(listed):
            member = tarfile.TarInfo("./" + path)
            member.mode = info.st_mode & 0o7777
            member.uid, member.gid = info.st_uid, info.st_gid
            member.mtime = int(info.st_mtime)
            if st.S_ISDIR(info.st_mode):
                member.type = tarfile.DIRTYPE
                tar.addfile(member)
                continue
            try:
                fd = os.open(os.path.join(root, path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError as exc:
                raise NotInline(f"cannot read {path}: {exc.strerror}") from exc
            with os.fdopen(fd, "rb") as stream:
                now = os.fstat(stream.fileno())
                if (now.st_dev, now.st_ino, now.st_size) != (info.st_dev, info.st_ino,
                                                             info.st_size):
                    raise NotInline(f"{path} changed while it was read")
                member.size = info.st_size
                data = stream.read(info.st_size + 1)
                if len(data) != info.st_size:
                    raise NotInline(f"{path} changed while it was read")
                tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def write_outputs(log: EventLog, root: str, *, uid: int, gid: int,
                  fs_ids: FsIds | None) -> None:
    """The outputs on stdout, the agent's own channel, as base64 lines between an
    ``OUTPUTS {json}`` line (size and sha256 of the tar) and ``OUTPUTS-END``; or only the
    ``OUTPUTS`` line saying why not, and the host copies them through the engine. Files
    are read as the build's uid and gid (``setfsuid``): root here has no DAC override."""
    try:
        with fs_ids.acting_as(uid, gid) if fs_ids is not None else contextlib.nullcontext():
            tar = outputs_tar(root, max_bytes=INLINE_MAX_BYTES, max_files=INLINE_MAX_FILES,
                              max_depth=INLINE_MAX_DEPTH)
    except Exception as exc:  # noqa: BLE001 - whatever the build left, the engine's path decides
        why = str(exc) if isinstance(exc, NotInline) else f"{type(exc).__name__}: {exc}"
        log.write_line(f"{OUTPUTS_PREFIX} {json.dumps({'inline': False, 'why': why[:500]})}")
        return
    import binascii  # noqa: PLC0415 - only after the build

    header = {"inline": True, "bytes": len(tar), "sha256": hashlib.sha256(tar).hexdigest()}
    log.write_line(f"{OUTPUTS_PREFIX} {json.dumps(header, sort_keys=True)}")
    step = INLINE_LINE_CHARS // 4 * 3
    for start in range(0, len(tar), step):
        log.write_line(binascii.b2a_base64(tar[start:start + step], newline=False).decode())
    log.write_line(OUTPUTS_END)


# --------------------------------------------------------------------------- self-test

def connect_to(address: str, port: int, *, timeout: float) -> socket.socket:
    """A TCP connection to an IP address, with no name lookup: ``create_connection``'s
    ``getaddrinfo`` loads the idna codec for any str host (~2 ms of every sandbox's start)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _selftest_client(cfg: Config, v6: bool, results: dict[str, str]) -> None:
    """Client side of the self-test: real traffic through the rules to reserved addresses."""
    families = [(socket.AF_INET, SELFTEST_V4, 1, "4")]
    if v6:
        families.append((socket.AF_INET6, SELFTEST_V6, 28, "6"))
    for af, server, qtype, tag in families:
        name = f"{tag}.{SELFTEST_NAME}"
        query = struct.pack("!HHHHHH", 0x7E57, 0x0100, 1, 0, 0, 0)
        query += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
        query += struct.pack("!HH", qtype, 1)
        fake: str | None = None
        try:
            with socket.socket(af, socket.SOCK_DGRAM) as udp:
                udp.settimeout(2.0)
                udp.sendto(query, (server, 53))
                reply, source = udp.recvfrom(4096)
                size = 4 if qtype == 1 else 16
                if source[0] != server or source[1] != 53 or len(reply) < size:
                    raise OSError(f"reply from {source[:2]}")
                fake = socket.inet_ntop(af, reply[-size:])
                results[f"dns{tag}"] = "ok"
        except OSError as exc:
            results[f"dns{tag}"] = f"failed: {exc}"
            continue
        try:
            with connect_to(fake, 80, timeout=2.0) as tcp:
                tcp.sendall(f"GET /selftest HTTP/1.1\r\nHost: {name}\r\n\r\n".encode())
                answer = tcp.recv(100)
            results[f"http{tag}"] = "ok" if answer.startswith(b"HTTP/1.1 403") else (
                f"failed: got {answer[:20]!r}")
        except OSError as exc:
            results[f"http{tag}"] = f"failed: {exc}"
        try:
            with socket.socket(af, socket.SOCK_DGRAM) as udp:
                udp.sendto(b"reprobuild-selftest", (server, 9))
            results[f"udp{tag}"] = "ok"
        except OSError as exc:
            results[f"udp{tag}"] = f"failed: {exc}"
    try:
        with connect_to("127.0.0.1", cfg.tcp_port, timeout=2.0) as forged:
            forged.sendall(b"GET /forged HTTP/1.1\r\nHost: forged.reprobuild.invalid\r\n\r\n")
            forged.shutdown(socket.SHUT_WR)  # EOF now: the trap need not wait for more
            forged.recv(10)
        results["forged"] = "ok"
    except OSError as exc:
        results["forged"] = f"failed: {exc}"
    try:
        ping = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
    except OSError as exc:  # ping_group_range excludes us: nobody here can send ICMP
        results["icmp4"] = f"skipped: {exc}"
        return
    with ping:
        # The reject rule makes sendto fail with EPERM once the packet has been logged.
        with contextlib.suppress(OSError):
            ping.sendto(struct.pack("!BBHHH", 8, 0, 0, 0, 1) + b"reprobuild", (SELFTEST_V4, 0))
        results["icmp4"] = "sent"


def selftest(trap: Trap, cfg: Config, v6: bool) -> dict[str, str]:
    """Drive the probes through the live loop and check the events they produced.

    It ends as soon as every probe's event has been logged (a few tens of milliseconds),
    or after a grace period once the client is done, so a healthy trap is ready fast and
    a broken one is still caught.
    """
    results: dict[str, str] = {}
    captured: list[dict[str, Any]] = []
    trap.log.capture = captured
    client = threading.Thread(target=_selftest_client, args=(cfg, v6, results), daemon=True)
    started = time.monotonic()
    me = os.getpid()

    def seen(kind: str, family: int, **want: Any) -> dict[str, Any] | None:
        for event in captured:
            if event["kind"] == kind and event["family"] == family and all(
                    event.get(k) == v for k, v in want.items()):
                return event
        return None

    def expected() -> list[dict[str, Any] | None]:
        found: list[dict[str, Any] | None] = []
        for tag, family, server in [("4", 4, SELFTEST_V4)] + ([("6", 6, SELFTEST_V6)]
                                                              if v6 else []):
            name = f"{tag}.{SELFTEST_NAME}"
            found += [seen("dns", family, dst=server, dport=53, name=name, uid=0),
                      seen("http", family, dport=80, name=name, detail="GET /selftest HTTP/1.1"),
                      seen("udp", family, dst=server, dport=9, uid=0)]
        found.append(seen("forged", 4, forged=True))
        if results.get("icmp4") == "sent":
            found.append(seen("icmp", 4, dst=SELFTEST_V4))
        return found

    def finished() -> bool:
        elapsed = time.monotonic() - started
        if elapsed > 15:
            return True
        if client.is_alive():
            return False
        return all(event is not None for event in expected()) or elapsed > 2.0

    client.start()
    trap.serve(until=finished)
    settle = time.monotonic() + 0.5
    trap.serve(until=lambda: time.monotonic() > settle or not trap.conns)
    trap.drain_nflog(0.0 if all(event is not None for event in expected()) else 0.1)
    trap.close_pending()
    events, trap.log.capture = captured, None

    tags = [("4", 4, SELFTEST_V4)] + ([("6", 6, SELFTEST_V6)] if v6 else [])
    for tag, family, server in tags:
        name = f"{tag}.{SELFTEST_NAME}"
        checks = {f"dns{tag}": seen("dns", family, dst=server, dport=53, name=name, uid=0),
                  f"http{tag}": seen("http", family, dport=80, name=name,
                                     detail="GET /selftest HTTP/1.1"),
                  f"udp{tag}": seen("udp", family, dst=server, dport=9, uid=0)}
        for check, event in checks.items():
            if results.get(check) == "ok" and event is None:
                results[check] = "failed: no event logged"
            # (the UDP probe's socket is closed before the lookup, so only DNS and HTTP)
            if event is not None and results.get(check) == "ok" and trap.attr.pids and \
                    not check.startswith("udp") and event["pid"] != me:
                results[check] = f"ok (attribution gave pid {event['pid']})"
    if results.get("forged") == "ok" and seen("forged", 4, forged=True) is None:
        results["forged"] = "failed: direct connection not flagged"
    if results.get("icmp4") == "sent":
        results["icmp4"] = "ok" if seen("icmp", 4, dst=SELFTEST_V4) else "failed: not logged"
    unexpected = [e for e in events if e["kind"] == "error"]
    if unexpected:
        results["errors"] = "failed: " + "; ".join(str(e["detail"]) for e in unexpected)[:300]
    return results


# --------------------------------------------------------------------------- main

class UsageError(SystemExit):
    """A bad command line: the message goes to stderr and the agent exits 2, as
    ``argparse`` would do (the agent parses its own options: ``argparse`` and the
    ``shutil`` it loads cost ~5 ms of every sandbox's start, before READY)."""

    def __init__(self, message: str) -> None:
        sys.stderr.write(f"reprobuild-trap-agent: error: {message}\n")
        super().__init__(2)


_CHOICES = {"ipv6": ("auto", "require", "off"), "backend": ("auto", "nft", "iptables")}


def usage(defaults: dict[str, Any]) -> str:
    """The options, one per Config field, with their defaults."""
    lines = ["usage: reprobuild-trap-agent [-h] [OPTION]...",
             "Egress trap for a build's network namespace", ""]
    for name, value in defaults.items():
        flag = name.replace("_", "-")
        if isinstance(value, bool):
            lines.append(f"  --no-{flag}")
        else:
            choices = "|".join(_CHOICES.get(name, ())) or type(value).__name__.upper()
            lines.append(f"  --{flag} {choices}  (default: {value!r})")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> Config:
    """``--tcp-port 47001 --ipv6 require --no-selftest ...``: one option per Config field
    (``--no-NAME`` for a flag that is on by default, ``--NAME VALUE`` for the rest)."""
    defaults = vars(Config())
    switches = {f"--no-{n.replace('_', '-')}": n for n, v in defaults.items()
                if isinstance(v, bool)}
    options = {f"--{n.replace('_', '-')}": n for n, v in defaults.items()
               if not isinstance(v, bool)}
    values: dict[str, Any] = {}
    args = iter(argv)
    for arg in args:
        if arg in ("-h", "--help"):
            sys.stdout.write(usage(defaults) + "\n")
            raise SystemExit(0)
        if arg in switches:
            values[switches[arg]] = False
            continue
        name = options.get(arg)
        if name is None:
            raise UsageError(f"unrecognized argument: {arg}")
        text = next(args, None)
        if text is None:
            raise UsageError(f"{arg} expects a value")
        kind = type(defaults[name])
        try:
            value = kind(text)
        except ValueError:
            raise UsageError(f"{arg}: invalid {kind.__name__} value: {text!r}") from None
        if name in _CHOICES and value not in _CHOICES[name]:
            raise UsageError(f"{arg}: {text!r} is not one of {', '.join(_CHOICES[name])}")
        values[name] = value
    cfg = Config(**values)
    ports = (cfg.tcp_port, cfg.udp_port, cfg.dns_port)
    if len(set(ports)) != 3 or not all(1024 <= port < 65536 for port in ports):
        raise UsageError("listener ports must be distinct, 1024..65535")
    if cfg.build_script and (cfg.build_uid <= 0 or cfg.build_gid <= 0):
        raise UsageError("the build must run as a non-root uid and gid "
                         "(--build-uid/--build-gid)")
    if not cfg.trap and not cfg.build_script:
        raise UsageError("--no-trap needs --build-script: there would be nothing to do")
    return cfg


def setup_trap(cfg: Config, log: EventLog) -> tuple[Trap, dict[str, Any]]:
    """Configure, verify and self-test the namespace; the READY fields (raises on failure)."""
    v6 = ipv6_enabled() and cfg.ipv6 != "off"
    if cfg.ipv6 == "require" and not v6:
        raise SetupError("IPv6 is disabled in this namespace; start the container with "
                         "sysctl net.ipv6.conf.{all,default,lo}.disable_ipv6=0")
    check_only_loopback()
    caps = effective_caps()
    can_attr = all(caps & (1 << cap) for cap in (CAP_SETUID, CAP_SETGID))
    fs_ids: FsIds | None = None
    if can_attr:
        try:
            fs_ids = FsIds()
        except (ImportError, OSError, AttributeError):
            can_attr = False
    diag: SockDiag | None = None
    with contextlib.suppress(OSError):
        diag = SockDiag()
    attributor = Attributor(pids=can_attr, fs_ids=fs_ids, diag=diag)
    nflog = Nflog(cfg.nflog_group)
    trap = Trap(cfg, log, nflog, attributor, FakeAddresses(), v6, Conntrack())
    trap.open_listeners()
    configure_addresses(cfg, v6)
    backend, digest = install_rules(cfg, v6)
    verify_addresses(cfg, v6)
    results: dict[str, str] = {}
    if cfg.selftest:
        results = selftest(trap, cfg, v6)
        failed = {k: v for k, v in results.items()
                  if v.startswith("failed") and not k.startswith("icmp")}
        if failed:
            raise SetupError(f"self-test failed: {failed}")
        trap.fakes = FakeAddresses()
    trap.drain_nflog(0.0)
    trap.close_pending()
    ready = {"kind": "ready", "version": VERSION, "trap": True, "backend": backend, "ipv6": v6,
             "listeners": {"tcp": cfg.tcp_port, "udp": cfg.udp_port, "dns": cfg.dns_port},
             "nflog_group": cfg.nflog_group, "mark": f"{MARK:#x}",
             "lo_addresses": [cfg.lo4] + ([cfg.lo6] if v6 else []),
             "resolvers": read_resolvers(),
             "attribution": "pid" if can_attr else "uid", "ruleset_sha256": digest,
             "selftest": results,
             "limits": {"rate": cfg.rate, "burst": cfg.burst, "max_events": cfg.max_events,
                        "max_forged": cfg.max_forged},
             "pid": os.getpid()}
    return trap, ready


AGENT_DIR = "/run"


def close_agent_dir(path: str = AGENT_DIR) -> None:
    """Make the agent's scratch directory root-only before anything untrusted runs.

    The host asks for a mode-0700 tmpfs there, but Docker copies the image's directory
    mode (0755) onto it, so the build could list what the agent keeps. The agent owns the
    tmpfs root, so it needs no capability to fix it; failing to is a setup failure.
    """
    if not os.path.isdir(path):
        return
    if os.stat(path).st_mode & 0o7777 != 0o700:
        try:
            os.chmod(path, 0o700)
        except OSError as exc:
            raise SetupError(f"cannot make {path} root-only: {exc}") from exc


def supervise_only(sup: Supervisor, wake_r: int, stopping: list[int]) -> None:
    """Without the trap: relay the build's output until it exits or we are told to stop."""
    sel = selectors.DefaultSelector()
    if sup.fd is not None:
        sel.register(sup.fd, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    while not stopping and not sup.exited():
        for key, _mask in sel.select(1.0):
            if key.fd == wake_r:
                with contextlib.suppress(OSError):
                    os.read(wake_r, 512)
            elif not sup.pump():
                sel.unregister(key.fd)
    with contextlib.suppress(KeyError, ValueError):
        sel.unregister(sup.fd)  # type: ignore[arg-type]
    sel.close()


def main(argv: list[str] | None = None, stream: TextIO | None = None) -> int:
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    out = stream if stream is not None else sys.stdout
    log = EventLog(out, rate=cfg.rate, burst=cfg.burst, cap=cfg.max_events,
                   forged_cap=cfg.max_forged)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    stopping: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        stopping.append(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(signum, on_signal)
    # A handler (doing nothing) so a child's exit wakes the loop through the wake-up fd.
    signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
    trap: Trap | None = None
    digest = backend = ""
    try:
        close_agent_dir()
        if cfg.trap:
            trap, ready = setup_trap(cfg, log)
            backend, digest = ready["backend"], ready["ruleset_sha256"]
        else:
            ready = {"kind": "ready", "version": VERSION, "trap": False, "pid": os.getpid()}
    except (SetupError, OSError) as exc:
        log.write_event(new_event("error", detail=f"trap setup failed: {exc}"[:2000]))
        return 1
    if stopping:
        return 0
    log.t0 = time.monotonic()
    log.write_line(f"{READY_PREFIX} {json.dumps(ready, sort_keys=True)}")
    sup: Supervisor | None = None
    if cfg.build_script:
        sup = Supervisor(cfg)
        try:
            sup.start()
        except OSError as exc:
            log.write_event(new_event("error", detail=f"could not start the build: {exc}"))
            return 1
    build_over: Callable[[], bool] = sup.exited if sup is not None else (lambda: False)
    if trap is not None:
        trap.sel.register(wake_r, selectors.EVENT_READ, trap._wake)
        if sup is not None and sup.fd is not None:
            trap.reaper = sup.reap

            def relay(fileobj: Any) -> None:
                if not sup.pump():
                    trap.sel.unregister(fileobj)

            trap.sel.register(sup.fd, selectors.EVENT_READ, relay)
        trap.serve(until=lambda: bool(stopping) or build_over())
        if sup is not None:
            with contextlib.suppress(KeyError, ValueError):
                trap.sel.unregister(sup.fd)  # type: ignore[arg-type]
    elif sup is not None:
        supervise_only(sup, wake_r, stopping)
    if sup is not None:
        sup.finish(log, stopped=bool(stopping))
        # Every process of the build is gone: its outputs can be read without a race.
        if sup.ended_cleanly and not stopping and cfg.inline_outputs:
            fs_ids = trap.attr.fs_ids if trap is not None else None
            if fs_ids is None:
                with contextlib.suppress(ImportError, OSError, AttributeError):
                    fs_ids = FsIds()
            write_outputs(log, cfg.inline_outputs, uid=cfg.build_uid, gid=cfg.build_gid,
                          fs_ids=fs_ids)
    if trap is not None:
        trap.drain()
        trap.close()
        if current_ruleset_digest(backend) != digest:
            log.emit(new_event("error", detail="the ruleset changed after READY"))
    log.tick(final=True)
    if sup is not None or stopping[0] == signal.SIGUSR1:
        if sup is not None and stopping and stopping[0] != signal.SIGUSR1:
            return 0  # SIGTERM/SIGINT: the host is not waiting for DONE
        log.write_line(DONE_LINE)
        # Keep the namespace (and the output volume) up until we are removed.
        seen = len(stopping)
        while len(stopping) <= seen:
            with contextlib.suppress(OSError):
                select.select([wake_r], [], [], 1.0)
                os.read(wake_r, 512)
    return 0


if __name__ == "__main__":
    sys.exit(main())
