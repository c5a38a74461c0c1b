"""reprobuild fetch proxy: the only way out of the dependency fetch container, and its log.

Standalone, stdlib-only (never imports ``reprobuild``), one file. The host runs it twice,
as ``python3 -I -S -c "<this source>" MODE ...``:

``proxy SOCKET ALLOW``
    In the trusted **proxy** container (default bridge network, non-root, no capabilities,
    read-only root). Listens on the unix socket ``SOCKET`` only (it lives on a volume shared
    with the fetch container), never on TCP. ``ALLOW`` is a comma-separated list of
    ``host:port`` pairs (``pypi.org:443,files.pythonhosted.org:443``). Serves HTTP proxy
    requests: ``CONNECT host:port`` (https) is tunnelled, absolute-form ``GET
    http://host/path`` (plain http) is forwarded with ``Connection: close``. A request for a
    host:port off the list is answered ``403`` *without resolving or connecting anything*.
    Every request or tunnel is logged as one JSON line on stdout::

        {"event": "request", "host": "pypi.org", "port": 443, "method": "CONNECT",
         "target": "pypi.org:443", "allowed": true, "status": 200, "time": 1764080000.1}

    ``status`` is what the client was answered (200 tunnel open, 403 refused, 400 malformed,
    502 upstream unreachable). The first line is ``{"event": "ready", ...}``; SIGTERM/SIGINT
    logs ``{"event": "stopped", ...}`` and exits 0. After ``MAX_LOG_LINES`` request lines
    further ones are counted, not written (``"dropped"`` in the stop line).

``relay PORT SOCKET``
    Inside the **fetch** container, which has no network at all (``network_mode=none``: only
    ``lo``, so no DNS, no route to the host or to other containers). Listens on
    ``127.0.0.1:PORT`` and pipes every connection to the proxy's unix socket, so tools that
    only speak TCP proxies (pip, npm) get ``HTTPS_PROXY=http://127.0.0.1:PORT``. It decides
    nothing; a process that bypasses it reaches the same proxy. It prints ``ready`` once
    listening.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 30.0
IDLE_TIMEOUT_S = 300.0
MAX_CONNECTIONS = 256
MAX_LOG_LINES = 20_000
_CHUNK = 64 * 1024
_HOST = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
_HOP_HEADERS = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authorization",
                          "proxy-authenticate", "te", "trailer", "upgrade"})


class Log:
    """Thread-safe JSON-lines writer with a cap on request lines."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self.requests = 0
        self.dropped = 0

    def event(self, **fields: object) -> None:
        """Write one event line (``request`` lines count against the cap)."""
        with self._lock:
            if fields.get("event") == "request":
                if self.requests >= MAX_LOG_LINES:
                    self.dropped += 1
                    return
                self.requests += 1
            self._stream.write(json.dumps(fields, sort_keys=True) + "\n")
            self._stream.flush()


def parse_allow(text: str) -> frozenset[tuple[str, int]]:
    """``"a.org:443,b.org:80"`` -> {("a.org", 443), ("b.org", 80)}; malformed entries fail."""
    allowed: set[tuple[str, int]] = set()
    for item in filter(None, (part.strip() for part in text.split(","))):
        host, sep, port = item.rpartition(":")
        if not sep or not _HOST.fullmatch(host.lower()) or not port.isdigit():
            raise ValueError(f"bad allow-list entry {item!r}; want host:port")
        allowed.add((host.lower(), int(port)))
    return frozenset(allowed)


def normalise_host(host: str) -> str | None:
    """A lower-case DNS name without the trailing dot, or None for anything else (IPs too)."""
    host = host.strip().lower().removesuffix(".")
    if not _HOST.fullmatch(host) or len(host) > 253:
        return None
    if host.replace(".", "").isdigit():  # a dotted IPv4 literal is not a name
        return None
    return host


def read_head(conn: socket.socket) -> tuple[bytes, bytes] | None:
    """Read up to the blank line ending a request head: (head, bytes after it)."""
    data = b""
    conn.settimeout(HEAD_TIMEOUT_S)
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEAD_BYTES:
            return None
        chunk = conn.recv(_CHUNK)
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def parse_target(method: str, target: str) -> tuple[str, int, str] | None:
    """(raw host, port, origin-form path) of a proxy request, or None when malformed."""
    if method == "CONNECT":
        host, sep, port_text = target.rpartition(":")
        if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            return None
        return host.strip("[]"), int(port_text), ""
    try:
        parts = urlsplit(target)
        port = parts.port or 80
    except ValueError:
        return None
    if parts.scheme.lower() != "http" or not parts.hostname:
        return None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.hostname, port, path


def splice(a: socket.socket, b: socket.socket, first_to_b: bytes = b"") -> None:
    """Copy bytes both ways until both sides finished or nothing moved for IDLE_TIMEOUT_S."""
    if first_to_b:
        b.sendall(first_to_b)
    a.setblocking(True)
    b.setblocking(True)
    peer = {a: b, b: a}
    open_ = {a, b}
    with selectors.DefaultSelector() as sel:
        for sock in open_:
            sel.register(sock, selectors.EVENT_READ)
        while open_:
            ready = sel.select(timeout=IDLE_TIMEOUT_S)
            if not ready:
                return
            for key, _ in ready:
                src: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    chunk = src.recv(_CHUNK)
                except OSError:
                    chunk = b""
                if chunk:
                    try:
                        peer[src].sendall(chunk)
                    except OSError:
                        return
                    continue
                sel.unregister(src)
                open_.discard(src)
                with contextlib.suppress(OSError):
                    peer[src].shutdown(socket.SHUT_WR)


def _answer(conn: socket.socket, status: int, reason: str, text: str) -> None:
    body = text.encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    with contextlib.suppress(OSError):
        conn.sendall(head + body)


def _rewrite_head(lines: list[bytes], method: str, path: str, host_header: str) -> bytes:
    out = [f"{method} {path} HTTP/1.1".encode()]
    for line in lines[1:]:
        name = line.split(b":", 1)[0].strip().lower().decode("latin-1")
        if name in _HOP_HEADERS or name == "host":
            continue
        out.append(line)
    out += [f"Host: {host_header}".encode(), b"Connection: close"]
    return b"\r\n".join(out) + b"\r\n\r\n"


def handle(conn: socket.socket, allow: frozenset[tuple[str, int]], log: Log,
           connect: Callable[[tuple[str, int], float], socket.socket]) -> None:
    """Serve one client connection: one request (tunnel or forwarded http), then close."""
    got = read_head(conn)
    if got is None:
        log.event(event="request", host=None, port=None, method=None, target=None,
                  allowed=False, status=400, time=time.time())
        _answer(conn, 400, "Bad Request", "reprobuild proxy: malformed request\n")
        return
    head, rest = got
    lines = head.split(b"\r\n")
    words = lines[0].decode("latin-1").split(" ")
    method = words[0].upper() if words else ""
    target = words[1] if len(words) == 3 else ""
    parsed = parse_target(method, target) if target else None
    raw_host, port, path = parsed if parsed else ("", 0, "")
    host = normalise_host(raw_host) if parsed else None
    allowed = host is not None and (host, port) in allow
    entry: dict[str, object] = {"event": "request", "host": host or raw_host or None,
                                "port": port or None, "method": method[:16] or None,
                                "target": target[:2048] or None, "allowed": allowed}
    if parsed is None:
        log.event(**entry, status=400, time=time.time())
        _answer(conn, 400, "Bad Request", "reprobuild proxy: want CONNECT host:port or an "
                "absolute http:// URL\n")
        return
    if not allowed or host is None:
        # Refused before any name lookup or connection: nothing leaves for this request.
        log.event(**entry, status=403, time=time.time())
        _answer(conn, 403, "Forbidden", f"reprobuild proxy: {raw_host}:{port} is not on the "
                "fetch allow-list\n")
        return
    try:
        upstream = connect((host, port), CONNECT_TIMEOUT_S)
    except OSError as exc:
        log.event(**entry, status=502, time=time.time(), error=str(exc)[:200])
        _answer(conn, 502, "Bad Gateway", f"reprobuild proxy: cannot reach {host}:{port}\n")
        return
    with upstream:
        log.event(**entry, status=200, time=time.time())
        if method == "CONNECT":
            with contextlib.suppress(OSError):
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            splice(conn, upstream, rest)
        else:
            host_header = host if port == 80 else f"{host}:{port}"
            splice(conn, upstream, _rewrite_head(lines, method, path, host_header) + rest)


def _serve(listener: socket.socket, work: Callable[[socket.socket], None]) -> None:
    slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def run(conn: socket.socket) -> None:
        try:
            with conn:
                work(conn)
        except Exception as exc:  # noqa: BLE001 - one bad connection must not stop the proxy
            sys.stderr.write(f"connection error: {exc!r}\n")
        finally:
            slots.release()

    while True:
        conn, _ = listener.accept()
        slots.acquire()
        threading.Thread(target=run, args=(conn,), daemon=True).start()


def run_proxy(socket_path: str, allow_text: str, stream: TextIO) -> int:
    """The ``proxy`` mode: listen on a unix socket, log, enforce the allow-list."""
    allow = parse_allow(allow_text)
    log = Log(stream)

    def stop(signum: int, _frame: object) -> None:
        log.event(event="stopped", signal=signum, requests=log.requests, dropped=log.dropped)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with contextlib.suppress(FileNotFoundError):
        Path(socket_path).unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    Path(socket_path).chmod(0o666)  # the fetch container runs as another uid
    listener.listen(64)
    log.event(event="ready", socket=socket_path, allow=sorted(f"{h}:{p}" for h, p in allow),
              pid=os.getpid())

    def connect(address: tuple[str, int], timeout: float) -> socket.socket:
        return socket.create_connection(address, timeout=timeout)

    _serve(listener, lambda conn: handle(conn, allow, log, connect))
    return 0  # pragma: no cover - _serve never returns


def run_relay(port: int, socket_path: str, stream: TextIO) -> int:
    """The ``relay`` mode: 127.0.0.1:port -> the proxy's unix socket, nothing else."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)

    def pipe(conn: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with upstream:
            upstream.connect(socket_path)
            splice(conn, upstream)

    stream.write("ready\n")
    stream.flush()
    _serve(listener, pipe)
    return 0  # pragma: no cover - _serve never returns


def main(argv: list[str]) -> int:
    """Dispatch on the mode word; usage errors exit 2."""
    if len(argv) == 3 and argv[0] == "proxy":
        return run_proxy(argv[1], argv[2], sys.stdout)
    if len(argv) == 3 and argv[0] == "relay" and argv[1].isdigit():
        return run_relay(int(argv[1]), argv[2], sys.stdout)
    sys.stderr.write("usage: proxy SOCKET HOST:PORT[,...] | relay PORT SOCKET\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
