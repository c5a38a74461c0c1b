"""A PyPI-JSON- and npm-registry-shaped index on loopback, serving files the test made.

Not a mock of reprobuild: reprobuild talks to it the way it talks to PyPI and npm, through
its fetch container and allow-list proxy (``localhost`` only, so the proxy runs in the
host's network namespace), and checks every file against the digest this index publishes.
Bound to 127.0.0.1; every request is recorded.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Index:
    """What the index serves: files by name, releases by (name, version)."""

    files: dict[str, bytes] = field(default_factory=dict)
    pypi: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    npm: dict[tuple[str, str], str] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    port: int = 0
    lie_about: set[str] = field(default_factory=set)
    """Files whose published digest is deliberately wrong (a registry that lies)."""

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}"

    def add_pypi(self, name: str, version: str, paths: list[Path]) -> None:
        for path in paths:
            self.files[path.name] = path.read_bytes()
        self.pypi[(name, version)] = [p.name for p in paths]

    def add_npm(self, name: str, version: str, path: Path) -> None:
        self.files[path.name] = path.read_bytes()
        self.npm[(name, version)] = path.name

    def _digest(self, name: str) -> bytes:
        data = self.files[name]
        return hashlib.sha256(data + (b"x" if name in self.lie_about else b"")).digest()

    def answer(self, path: str) -> tuple[int, bytes]:
        self.requests.append(path)
        parts = [p for p in path.split("/") if p]
        if len(parts) == 2 and parts[0] == "files" and parts[1] in self.files:
            return 200, self.files[parts[1]]
        if len(parts) == 3 and parts[0] == "pypi" and parts[2] == "json":
            releases = {version: [{
                "filename": n, "url": f"{self.url}/files/{n}",
                "digests": {"sha256": self._digest(n).hex()},
                "packagetype": "bdist_wheel" if n.endswith(".whl") else "sdist",
                "upload_time_iso_8601": "2026-01-03T00:00:00.000000Z"} for n in names]
                for (name, version), names in self.pypi.items() if name == parts[1]}
            if not releases:
                return 404, b'{"message": "Not Found"}'
            latest = sorted(releases)[-1]
            return 200, json.dumps({"info": {"name": parts[1], "version": latest},
                                    "releases": releases,
                                    "urls": releases[latest]}).encode()
        name = "/".join(parts[:-1]).replace("%2f", "/").replace("%2F", "/")
        tarball = self.npm.get((name, parts[-1])) if parts else None
        if tarball is not None:
            data = self.files[tarball]
            integrity = "sha512-" + base64.b64encode(
                hashlib.sha512(data + (b"x" if tarball in self.lie_about else b"")).digest()
            ).decode()
            return 200, json.dumps({"name": name, "version": parts[-1], "dist": {
                "tarball": f"{self.url}/files/{tarball}", "integrity": integrity}}).encode()
        return 404, b'{"error": "not found"}'


@contextmanager
def serve(index: Index) -> Iterator[Index]:
    """Serve ``index`` on 127.0.0.1 (an ephemeral port) for the duration of the block."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path.startswith("http://"):  # absolute form, as a proxy forwards it
                path = "/" + path.split("/", 3)[-1]
            status, body = index.answer(path)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    index.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield index
    finally:
        server.shutdown()
        server.server_close()
