"""reprobuild URL fetch: download a list of files through the fetch proxy, nothing else.

Standalone, stdlib-only (never imports ``reprobuild``), one file, run inside the fetch
container as ``python3 -I -S url_fetch.py JOB DEST``. ``JOB`` is a JSON list of
``{"url": ..., "name": ...}``; each URL is downloaded to ``DEST/<name>`` through the
proxy the environment names (``HTTPS_PROXY``/``HTTP_PROXY``: the relay to the allow-list
proxy; the container has no other network). Names are plain file names (no ``/``, no
leading dot). The host checks every file against the digest the registry publishes; this
program only refuses what it cannot write safely, caps each file's size, and stops at the
first failure with one line ``url_fetch: ERROR ...`` on stderr and exit 1.

Certificates: the default context, which honours ``SSL_CERT_FILE`` (the CA handed in).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

MAX_FILE_BYTES = 1024 * 1024 * 1024
CHUNK = 1024 * 1024
TIMEOUT_S = 120.0


def fail(message: str) -> None:
    """One error line and exit 1."""
    print(f"url_fetch: ERROR {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def safe_name(name: object) -> str:
    """A file name that stays in DEST: no separators, no leading dot, printable."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name \
            or name.startswith(".") or "\0" in name or not name.isprintable() or len(name) > 255:
        fail(f"refusing file name {name!r}")
    return str(name)


def download(url: str, target: Path) -> int:
    """Stream ``url`` into ``target`` (created, never overwritten); the bytes written."""
    if not url.startswith(("https://", "http://")):
        fail(f"not an http(s) URL: {url[:200]}")
    headers = {"User-Agent": "reprobuild-url-fetch/1", "Accept": "*/*"}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - scheme checked
    written = 0
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "wb") as handle:
                while chunk := response.read(CHUNK):
                    written += len(chunk)
                    if written > MAX_FILE_BYTES:
                        fail(f"{url[:200]} is larger than {MAX_FILE_BYTES} bytes")
                    handle.write(chunk)
    except urllib.error.HTTPError as exc:
        fail(f"{url[:200]}: HTTP {exc.code} {exc.reason}")
    except (urllib.error.URLError, OSError) as exc:
        fail(f"{url[:200]}: {getattr(exc, 'reason', exc)}")
    return written


def main(argv: list[str]) -> int:
    """Download every file of the job, in order."""
    if len(argv) != 2:
        fail("usage: url_fetch.py JOB DEST")
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    dest = Path(argv[1])
    dest.mkdir(parents=True, exist_ok=True)
    if not isinstance(job, list):
        fail("the job is not a list")
    for item in job:
        if not isinstance(item, dict) or not isinstance(item.get("url"), str):
            fail(f"bad job entry {item!r:.200}")
        name = safe_name(item.get("name"))
        size = download(item["url"], dest / name)
        print(f"url_fetch: {name} {size} bytes", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
