"""Downloading published release files through the fetch phase, and proving they are the
files the registry publishes.

Registry metadata and release files are fetched the same way as dependencies: in the
fetch container with no network but the relay to the allow-list proxy, which admits only
the hosts of the URLs asked for and logs every request. What comes out is checked against
the digest the registry publishes for each file (a mismatch stops the run, exit 2); sha256
files are kept in the content-addressed cache's blobs, so a second run downloads nothing.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import docker

from reprobuild.ecosystems.interface import DEPS_DIR, FetchPlan
from reprobuild.errors import DependencyIntegrityError, InputError
from reprobuild.evidence import FetchRequest
from reprobuild.fetch.cache import DepsCache
from reprobuild.fetch.runner import FetchLimits, Runner
from reprobuild.hashing import file_digest
from reprobuild.images import ToolchainImage
from reprobuild.incontainer import program_path
from reprobuild.progress import Progress
from reprobuild.sandbox.engine import RunLabels

__all__ = ["Downloaded", "RemoteFile", "UrlJob", "allow_list_of", "download"]

_FILES = "files"


@dataclass(frozen=True)
class RemoteFile:
    """One file to download, with the digest its registry publishes (``sha256:<hex>``,
    ``sha512:<hex>``; None for metadata, which is trusted only as far as TLS goes)."""

    name: str
    url: str
    digest: str | None = None
    uploaded: str | None = None
    """When the registry says it was uploaded (ISO 8601), if it says."""


@dataclass(frozen=True)
class Downloaded:
    """Where each downloaded file is, and every request the proxy saw."""

    paths: dict[str, Path]
    requests: tuple[FetchRequest, ...]
    failure: str | None = None
    cache_hit: bool = False


def allow_list_of(urls: Sequence[str]) -> tuple[tuple[str, int], ...]:
    """The ``host:port`` pairs a list of http(s) URLs needs, nothing more."""
    found: dict[tuple[str, int], None] = {}
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise InputError(f"{url[:200]} is not an http(s) URL",
                             "give an https:// URL, a local file or a registry release")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        found[(parts.hostname.lower(), port)] = None
    return tuple(found)


class UrlJob:
    """The fetch-container job that downloads URLs (``incontainer/url_fetch.py``)."""

    def __init__(self, allow_list: tuple[tuple[str, int], ...]) -> None:
        self.allow_list = allow_list

    def fetch_command(self, plan: FetchPlan) -> str:
        """Run the downloader on the planned job into ``/deps/files``."""
        del plan
        return f"/usr/bin/python3 -I -S url_fetch.py job.json {DEPS_DIR}/{_FILES}\n"

    def fetch_env(self, plan: FetchPlan, *, proxy: str, ca_file: str | None) -> dict[str, str]:
        """urllib takes the proxy from HTTPS_PROXY/HTTP_PROXY; OpenSSL the CA from here."""
        del plan, proxy
        return {"SSL_CERT_FILE": ca_file} if ca_file else {}


def _cached(cache: DepsCache, item: RemoteFile) -> Path | None:
    if item.digest is None or not item.digest.startswith("sha256:"):
        return None
    blob = cache.blob(item.digest.removeprefix("sha256:"))
    if blob.is_file() and file_digest(blob, "sha256") == item.digest:
        return blob
    return None


def _check(path: Path, item: RemoteFile) -> None:
    if item.digest is None:
        return
    algo = item.digest.split(":", 1)[0]
    actual = file_digest(path, algo)
    if actual != item.digest:
        raise DependencyIntegrityError(item.name, item.digest, actual,
                                       source="the digest its registry publishes")


def download(client: docker.DockerClient, labels: RunLabels, files: Sequence[RemoteFile], *,
             toolchain: ToolchainImage, ca: bytes | None, cache_dir: Path, dest: Path,
             progress: Progress, cancel: threading.Event,
             limits: FetchLimits | None = None) -> Downloaded:
    """Download ``files`` into ``dest`` (checked against their digests), or find them in
    the cache. A refused request or a failed download comes back as ``failure``."""
    dest.mkdir(parents=True, exist_ok=True)
    cache = DepsCache(cache_dir)
    found = {item.name: _cached(cache, item) for item in files}
    if all(path is not None for path in found.values()):
        paths = {}
        for item in files:
            source = found[item.name]
            assert source is not None
            shutil.copyfile(source, dest / item.name)
            paths[item.name] = dest / item.name
        return Downloaded(paths=paths, requests=(), cache_hit=True)
    job = UrlJob(allow_list_of([item.url for item in files]))
    plan = FetchPlan(strategy="download", project_dir="", files=(
        ("url_fetch.py", program_path("url_fetch").read_bytes()),
        ("job.json", json.dumps([{"url": i.url, "name": i.name} for i in files]).encode())),
        pin_source="registry")
    cache_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".download-", dir=cache_dir))
    try:
        progress.detail("downloading " + ", ".join(i.name for i in files)
                        + " through the fetch proxy")
        runner = Runner(client, labels, cancel, progress, limits or FetchLimits())
        outcome = runner.run(job, plan, toolchain, ca, scratch / "deps")
        blocked = sorted({f"{r.host}:{r.port}" for r in outcome.requests if not r.allowed})
        if blocked or outcome.exit_code != 0 or outcome.timed_out:
            lines = [line for line in outcome.log.splitlines() if "url_fetch: ERROR" in line]
            failure = (f"refused {', '.join(blocked)}" if blocked else "timed out"
                       if outcome.timed_out else (lines[-1] if lines else
                                                  f"exit {outcome.exit_code}"))
            return Downloaded(paths={}, requests=outcome.requests,
                              failure=f"downloading the published files failed: {failure}")
        paths = {}
        got = {f.path: f for f in outcome.files}
        for item in files:
            member = got.get(f"{_FILES}/{item.name}")
            if member is None:
                return Downloaded(paths={}, requests=outcome.requests,
                                  failure=f"the download left no {item.name}")
            staged = outcome.staging / member.path
            _check(staged, item)
            target = dest / item.name
            shutil.copyfile(staged, target)
            paths[item.name] = target
            if item.digest is not None and item.digest.startswith("sha256:"):
                blob = cache.blob(member.sha256)
                blob.parent.mkdir(parents=True, exist_ok=True)
                tmp = blob.with_name(f".{blob.name}.tmp")
                shutil.copyfile(staged, tmp)
                tmp.replace(blob)
        return Downloaded(paths=paths, requests=outcome.requests)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
