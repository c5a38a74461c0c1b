"""Source acquisition: turn what the user gave (URL, local repo, plain directory) into bytes.

Only *committed* content of a git source is used, read straight from the object database
(``git ls-tree`` + ``git cat-file --batch``), never from the work tree and never through
``git archive`` (which applies ``export-ignore``/``export-subst`` attributes and would change
what gets built). A local repository is the user's: it is read in place and never modified
(no checkout, no fetch, no index refresh). Remote repositories are cloned bare into ``workdir``.

Every invocation of ``git`` runs with a scrubbed environment: no system config, no terminal
prompts, no hooks, no optional locks, no replace refs, ``ext::`` and other "user" transports
disabled (``file://`` is allowed explicitly, only where the user asked for it).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import NoReturn

from reprobuild.errors import EnvironmentFailure, SourceError, suggestion

__all__ = [
    "EntryKind",
    "SourceEntry",
    "SourceKind",
    "SourceLimits",
    "SourceTree",
    "acquire",
    "classify",
    "compute_tree_sha256",
    "normalise_subdir",
]

MiB = 1024 * 1024

#: Wall-clock limits for git; a hung clone must not hang reprobuild.
CLONE_TIMEOUT_S = 900.0
GIT_TIMEOUT_S = 300.0

_REMOTE_SCHEMES = frozenset({"http", "https", "ssh", "git", "file", "git+ssh", "ssh+git"})
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_HEXISH_RE = re.compile(r"^[0-9a-fA-F]{7,64}$")
_COMMITTER_RE = re.compile(rb"^committer .* (\d+) [+-]\d{4}$", re.MULTILINE)
#: Inherited GIT_* variables that only say *how* to reach a remote, never *which* repository.
_GIT_ENV_KEEP = frozenset(
    {"GIT_SSH", "GIT_SSH_COMMAND", "GIT_SSH_VARIANT", "GIT_SSL_CAINFO", "GIT_SSL_CAPATH"}
)


class SourceKind(Enum):
    """Where the source comes from; decides whether we clone or read in place."""

    GIT_REMOTE = "git-remote"
    GIT_LOCAL = "git-local"
    DIRECTORY = "directory"
    ARCHIVE = "archive"
    """A release's source archive (an sdist, a package tarball): ``verify`` only."""


class EntryKind(Enum):
    """What a tree entry is. Directories are implied by paths, as in git."""

    FILE = "file"
    SYMLINK = "symlink"


@dataclass(frozen=True)
class SourceEntry:
    """One file or symlink of the source tree.

    ``path`` is posix, relative to the tree root. ``mode`` is 0o644/0o755 for files and 0o777
    for symlinks. ``data`` is the file content, or the link target (bytes) for symlinks.
    """

    path: str
    kind: EntryKind
    mode: int
    data: bytes


@dataclass(frozen=True)
class SourceLimits:
    """Caps on what we read into memory, so a hostile or huge source fails fast."""

    max_files: int = 50_000
    max_total_bytes: int = 512 * MiB
    max_file_bytes: int = 100 * MiB


@dataclass(frozen=True)
class SourceTree:
    """The acquired source: identity (location/ref/commit) plus the full committed tree.

    ``location`` is the URL (credentials redacted), the repository's top level (a path inside
    a work tree becomes ``subdir``), or the resolved directory.

    ``entries`` (sorted by path) hold what the builds get: the whole tree, or with
    ``subdir`` and a :data:`Needs` hook the project plus what its ecosystem reads from
    above (``sent``). ``tree_sha256`` (of ``entries``) is described in
    :func:`compute_tree_sha256`.
    """

    location: str
    kind: SourceKind
    ref: str | None
    commit: str | None
    commit_time: int | None
    subdir: str
    entries: tuple[SourceEntry, ...]
    tree_sha256: str
    sent: tuple[tuple[str, str], ...] = ()
    """With ``subdir`` and a :data:`Needs` hook: what outside the project the builds get,
    as ``(path, why)`` (a file, or a directory and all below it; ``""`` is the whole
    repository). ``entries`` then hold exactly the project and these."""
    uncommitted: tuple[str, ...] = ()
    """Paths a local work tree has changed or added and not committed (they are not built)."""


# --------------------------------------------------------------------------- pure helpers


def compute_tree_sha256(entries: Iterable[SourceEntry]) -> str:
    """Content identity of a tree, independent of where and how it was obtained.

    SHA-256 over a canonical listing with one line per entry, entries sorted by path::

        f"{kind} {mode:o} {sha256(data)} {path}\\n"

    where ``kind`` is ``file`` or ``symlink``, ``mode`` is octal (``644``, ``755``, or ``777``
    for symlinks), ``sha256(data)`` is the lowercase hex digest of the content (the link target
    for symlinks) and ``path`` is posix relative to the tree root. Paths never contain a
    newline (such sources are refused), so the listing is unambiguous.
    """
    listing = hashlib.sha256()
    for entry in sorted(entries, key=lambda e: e.path):
        digest = hashlib.sha256(entry.data).hexdigest()
        listing.update(f"{entry.kind.value} {entry.mode:o} {digest} {entry.path}\n".encode())
    return listing.hexdigest()


def _is_scp_like(source: str) -> bool:
    """git's rule: ``[user@]host:path`` when a colon comes before any slash."""
    colon = source.find(":")
    if colon <= 0:
        return False
    slash = source.find("/")
    return slash == -1 or colon < slash


def classify(source: str) -> SourceKind:
    """Decide what SOURCE is without running git (git confirms later in :func:`acquire`).

    URLs (``https://``, ``ssh://``, ``file://``, ``git@host:path``) are remote. An existing
    local path is a git repository if it or one of its parents has ``.git`` or looks like a
    bare repository, else a plain directory. An existing local path wins over the scp-like
    form, as in ``git clone``. Remote-helper syntax (``ext::...``) is refused.
    """
    text = source.strip()
    if not text:
        raise SourceError("empty SOURCE", hint="give a git URL, a repository path or a directory")
    if "\0" in text:
        raise SourceError("SOURCE contains a NUL byte")
    match = _SCHEME_RE.match(text)
    if match:
        scheme = match.group(1).lower()
        if scheme not in _REMOTE_SCHEMES:
            raise SourceError(
                f"unsupported URL scheme {scheme!r} in {_redact(text)}",
                hint="use https://, ssh://, git@host:path or file://",
            )
        return SourceKind.GIT_REMOTE
    path = Path(text).expanduser()
    if os.path.lexists(path):
        resolved = path.resolve()
        if not resolved.is_dir():
            raise SourceError(
                f"{text} is not a git repository and not a directory",
                hint="point SOURCE at a repository, a directory, or a git URL",
            )
        for candidate in (resolved, *resolved.parents):
            if _has_git_dir(candidate / ".git") or _looks_bare(candidate):
                return SourceKind.GIT_LOCAL
        return SourceKind.DIRECTORY
    head = text.split("/", 1)[0]
    if "::" in head:
        raise SourceError(
            f"remote-helper syntax is not supported: {_redact(text)}",
            hint="use https://, ssh://, git@host:path or file://",
        )
    if _is_scp_like(text):
        return SourceKind.GIT_REMOTE
    raise SourceError(
        f"{text} does not exist",
        hint="check the path, or give a URL such as https://github.com/owner/repo",
    )


def _has_git_dir(dot_git: Path) -> bool:
    """A real ``.git`` directory, or a ``gitdir:`` pointer file (worktrees, submodules)."""
    if dot_git.is_file():
        with dot_git.open("rb") as fh:
            return fh.read(8) == b"gitdir: "
    return _looks_bare(dot_git)


def _looks_bare(path: Path) -> bool:
    return (path / "HEAD").is_file() and (path / "objects").is_dir() and (path / "refs").is_dir()


def normalise_subdir(subdir: str | None) -> str:
    """Posix-normalise a user-given subdirectory; ``""`` means the tree root.

    Refuses absolute paths, ``..`` components, backslashes and NUL, because the subdir is later
    used as a path inside the sandbox and must stay inside the tree.
    """
    if subdir is None:
        return ""
    text = subdir.strip()
    if "\0" in text or "\n" in text:
        raise SourceError(f"subdir {subdir!r} contains a control character")
    if "\\" in text:
        raise SourceError(f"subdir {subdir!r} contains a backslash", hint="use '/' separators")
    if text.startswith("/"):
        raise SourceError(
            f"subdir {subdir!r} is absolute", hint="give a path relative to the repository root"
        )
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise SourceError(
            f"subdir {subdir!r} contains '..'", hint="give a path inside the repository"
        )
    return "/".join(parts)


def _redact(url: str) -> str:
    """Hide a password/token in ``scheme://user:secret@host``; it must never reach a report."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@", r"\1***@", url)


def _shown(raw: bytes) -> str:
    """A file name as a message may show it: undecodable bytes and controls as ``\\xNN``."""
    text = raw.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _entry_name(raw: bytes) -> str:
    """A tree entry's name as text; a name that is not UTF-8 is refused (shown escaped).

    Names go into tar headers, the report and the builds' tools as text; carrying other
    bytes through would change them on the way, so they are refused rather than guessed.
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SourceError(
            f"refusing source entry whose name is not UTF-8: {_shown(raw)}",
            hint="rename it to a UTF-8 name in the repository (git mv) and commit",
        ) from None


def _check_entry_path(path: str) -> None:
    """Refuse tree paths that could escape the sandbox's workspace or corrupt our listing."""
    if not path or path.startswith("/") or "\0" in path or "\n" in path:
        raise SourceError(f"refusing source entry with an unsafe name: {path!r}")
    for part in path.split("/"):
        if part in ("", ".", "..", ".git"):
            raise SourceError(f"refusing source entry with an unsafe name: {path!r}")


# --------------------------------------------------------------------------- git plumbing


def _git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") or k in _GIT_ENV_KEEP}
    env.update(
        {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_PROTOCOL_FROM_USER": "0",
            "GIT_OPTIONAL_LOCKS": "0",
            "GIT_NO_REPLACE_OBJECTS": "1",
            "GIT_NO_LAZY_FETCH": "1",
            "LC_ALL": "C",
        }
    )
    return env


def _git(
    args: Sequence[str],
    *,
    repo: Path | None,
    allow_file: bool = False,
    stdin: bytes | None = None,
    timeout: float = GIT_TIMEOUT_S,
) -> subprocess.CompletedProcess[bytes]:
    """Run git with hooks, fsmonitor and dangerous transports switched off."""
    exe = shutil.which("git")
    if exe is None:
        raise EnvironmentFailure("git is not installed", hint="install git (apt-get install git)")
    cmd = [exe]
    if repo is not None:
        cmd += ["-C", str(repo)]
    cmd += [
        "-c", "core.hooksPath=/dev/null",
        "-c", "core.fsmonitor=false",
        "-c", "protocol.ext.allow=never",
        "-c", f"protocol.file.allow={'always' if allow_file else 'never'}",
        "-c", "submodule.recurse=false",
    ]  # fmt: skip
    cmd += list(args)
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_git_env(),
            start_new_session=True,  # no controlling tty: ssh cannot prompt and hang
        )
    except FileNotFoundError as exc:
        raise EnvironmentFailure("git is not installed", hint=str(exc)) from exc
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        _stop_group(proc)
        raise SourceError(
            f"git {args[0]} timed out after {timeout:.0f} s",
            hint="check network access to the repository",
        ) from exc
    except BaseException:  # Ctrl-C: git's helpers (remote-https, ssh) must not outlive us
        _stop_group(proc)
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill git and every helper it started (its own session, so its own process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def _last_line(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return _redact(lines[-1]) if lines else "(no message from git)"


_MISSING_OBJECT_RES = (
    re.compile(r"could not fetch ([0-9a-f]{40,64}) from promisor remote"),
    re.compile(r"[Cc]ould not read ([0-9a-f]{40,64})"),
    re.compile(r"(?:missing|bad) (?:blob|tree|commit|object) ([0-9a-f]{40,64})"),
    re.compile(r"unable to read (?:tree )?\(?([0-9a-f]{40,64})"),
)
#: git's boilerplate after the line that says what went wrong.
_GIT_BOILERPLATE = ("could not read from remote repository", "please make sure you have",
                    "and the repository exists")
_SSH_HOST_RE = re.compile(r"^ssh: (?:connect to host |Could not resolve hostname )([^\s:]+)[: ]"
                          r"\s*(?:port \d+: )?(.*)$")
_CURL_HOST_RE = re.compile(r"(Could not resolve host|Failed to connect to|Connection timed out "
                           r"after|Resolving timed out)[: ]*([^\s:]+)?")


def _missing_object(stderr: bytes) -> str | None:
    """The object id a git error says the repository does not have, if it says one."""
    text = stderr.decode("utf-8", "replace")
    for pattern in _MISSING_OBJECT_RES:
        match = pattern.search(text)
        if match:
            return match.group(1)
    return None


def _lacks(oid: str) -> SourceError:
    return SourceError(
        f"the repository lacks object {oid} (a partial clone or a damaged copy)",
        hint="fetch the missing objects (`git fetch --refetch`, or clone again without "
             "--filter), or give the repository's URL instead of the local copy",
    )


def _git_failure(stderr: bytes) -> str:
    """The line of a failed clone or fetch that says what went wrong, not git's boilerplate.

    An unreachable host (ssh or curl could not resolve or connect) is said as such.
    """
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    for line in lines:
        ssh = _SSH_HOST_RE.match(line)
        if ssh:
            return _redact(f"could not reach host {ssh.group(1)} ({ssh.group(2).strip()})")
        curl = _CURL_HOST_RE.search(line)
        if curl and "unable to access" in line:
            host = curl.group(2) or "(unknown)"
            return _redact(f"could not reach host {host} ({line.rsplit(': ', 1)[-1]})")
    for line in lines:
        if "no space left on device" in line.lower():
            return "no space left on device"
    useful = [ln for ln in lines if not ln.lower().startswith(("cloning into", "warning:"))
              and not any(b in ln.lower() for b in _GIT_BOILERPLATE)]
    if useful:
        return _redact(useful[0].removeprefix("fatal: ").removeprefix("error: "))
    return _last_line(stderr)


def _check_git(proc: subprocess.CompletedProcess[bytes], what: str) -> None:
    """Raise the one clear error a failed git command deserves (a missing object is named)."""
    if proc.returncode == 0:
        return
    oid = _missing_object(proc.stderr)
    if oid is not None:
        raise _lacks(oid)
    raise SourceError(f"{what}: {_git_failure(proc.stderr)}")


_PINNED = "refs/reprobuild/pinned"
_UNKNOWN_REF_MARKERS = ("couldn't find remote ref", "not our ref", "unadvertised object",
                        "no such remote ref", "invalid refspec", "is not a valid")


def _remote(url: str, args: Sequence[str], repo: Path, *,
            stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """git against the remote ``origin`` of a cache repository; the URL (credentials and
    all) is given on each command line, never written to the repository's config."""
    return _git(["-c", f"remote.origin.url={url}", *args], repo=repo, stdin=stdin,
                allow_file=url.lower().startswith("file://"), timeout=CLONE_TIMEOUT_S)


def _fetch_failed(url: str, proc: subprocess.CompletedProcess[bytes], where: Path) -> NoReturn:
    """Raise the one-line error of a failed fetch (a full disk is the machine's, exit 5)."""
    cause = _git_failure(proc.stderr)
    if cause == "no space left on device":
        raise EnvironmentFailure(
            f"could not clone {_redact(url)}: no space left on device in {where}",
            hint="free space there, or point TMPDIR / XDG_CACHE_HOME at a larger filesystem",
        )
    raise SourceError(
        f"could not clone {_redact(url)}: {cause}",
        hint="check the URL, your credentials (ssh-agent / credential helper) and network",
    )


@contextlib.contextmanager
def _cache_repository(url: str, cache: Path | None, workdir: Path) -> Iterator[Path]:
    """The bare repository that keeps a URL's fetched objects, held locked while in use.

    With ``cache`` it lives across runs (one per URL, credentials left out of the key), so
    a second run fetches only what it lacks; without, a fresh one under ``workdir``.
    It is a partial clone of ``origin``: blobs are fetched only for the files read.
    """
    if cache is None:
        workdir.mkdir(parents=True, exist_ok=True)
        repo = Path(tempfile.mkdtemp(prefix="source-", dir=workdir)) / "repo.git"
    else:
        repo = cache / f"{hashlib.sha256(_redact(url).encode()).hexdigest()[:32]}.git"
    try:
        repo.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(f"{repo}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise EnvironmentFailure(f"cannot create the source cache {repo.parent}: "
                                 f"{exc.strerror}", hint="check the directory's "
                                 "permissions and free space") from exc
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (repo / "HEAD").is_file():
            for args in (["init", "--bare", "--quiet", "--template=", str(repo)],
                         ["-C", str(repo), "config", "core.repositoryformatversion", "1"],
                         ["-C", str(repo), "config", "extensions.partialClone", "origin"],
                         ["-C", str(repo), "config", "remote.origin.promisor", "true"],
                         ["-C", str(repo), "config", "remote.origin.partialclonefilter",
                          "blob:none"]):
                proc = _git(args, repo=None)
                if proc.returncode != 0:
                    _fetch_failed(url, proc, repo.parent)
        yield repo
    finally:
        os.close(lock)


def _fetch_commit(url: str, repo: Path, ref: str | None) -> str:
    """Fetch only the commit REF names (shallow, trees without blobs where the server
    allows a filter) and return its id. A short SHA cannot be asked for by name: then the
    branches and tags are fetched (still without blobs) and it is looked up among them."""
    if ref is not None and (not ref.strip() or ref.startswith("-") or "\0" in ref):
        raise SourceError(f"invalid ref {ref!r}", hint="give a branch, tag or commit SHA")
    want = ref if ref is not None else "HEAD"
    base = ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--filter=blob:none"]
    proc = _remote(url, [*base, "--depth=1", "origin", f"+{want}:{_PINNED}"], repo)
    if proc.returncode == 0:
        return _resolve(repo, _PINNED, shown=want)
    text = proc.stderr.decode("utf-8", "replace").lower()
    if ref is None or not any(m in text for m in _UNKNOWN_REF_MARKERS):
        _fetch_failed(url, proc, repo.parent)
    if not _HEXISH_RE.match(ref):
        listing = _remote(url, ["ls-remote", "--heads", "--tags", "origin"], repo)
        names = {line.split("\t", 1)[-1].removeprefix("refs/heads/").removeprefix("refs/tags/")
                 .removesuffix("^{}") for line in listing.stdout.decode("utf-8", "replace")
                 .splitlines() if "\t" in line}
        raise SourceError(f"unknown ref {ref!r}",
                          hint=suggestion(ref, sorted(names), listing="known branches/tags",
                                          empty="the repository has no branches or tags"))
    unshallow = ["--unshallow"] if (repo / "shallow").is_file() else []
    every = _remote(url, [*base, *unshallow, "origin", "+refs/heads/*:refs/heads/*",
                          "+refs/tags/*:refs/tags/*"], repo)
    if every.returncode != 0:
        _fetch_failed(url, every, repo.parent)
    return _resolve(repo, ref)


def _fetch_blobs(url: str, repo: Path, commit: str, ref: str | None,
                 oids: Sequence[str]) -> None:
    """Fetch the blobs of the files to read that the cache lacks (all at once, as git's
    own lazy fetch asks); a server that will not serve single objects sends the pinned
    commit whole instead."""
    if not oids:
        return
    have = _git(["rev-list", "--objects", "--missing=print", commit], repo=repo)
    _check_git(have, f"cannot list commit {commit}")
    absent = {line[1:].strip() for line in have.stdout.decode().splitlines()
              if line.startswith("?")}
    missing = sorted(absent.intersection(oids))
    if not missing:
        return
    proc = _remote(url, ["-c", "fetch.negotiationAlgorithm=noop", "fetch", "--quiet",
                         "--no-tags", "--no-write-fetch-head", "--recurse-submodules=no",
                         "--filter=blob:none", "--stdin", "origin"], repo,
                   stdin="".join(f"{o}\n" for o in missing).encode())
    if proc.returncode == 0:
        return
    whole = _remote(url, ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
                          "--refetch", "--no-filter", "--depth=1", "origin",
                          f"+{ref if ref is not None else 'HEAD'}:{_PINNED}"], repo)
    if whole.returncode != 0:
        _fetch_failed(url, whole, repo.parent)


def _locate_local(path: Path) -> tuple[Path, str]:
    """Return (repository root, prefix of ``path`` inside the work tree).

    A work tree (the common case) answers all three questions in one git run; a bare
    repository, where ``--show-toplevel`` is an error, is then told apart on its own.
    """
    proc = _git(["rev-parse", "--is-bare-repository", "--show-toplevel", "--show-prefix"],
                repo=path, allow_file=True)
    lines = proc.stdout.decode("utf-8", "surrogateescape").splitlines()
    if proc.returncode == 0 and len(lines) >= 2 and lines[0] == "false":
        return Path(lines[1]), lines[2].rstrip("/") if len(lines) > 2 else ""
    proc = _git(["rev-parse", "--is-bare-repository"], repo=path, allow_file=True)
    if proc.returncode != 0:
        raise SourceError(
            f"{path} looks like a git repository but git cannot read it: {_last_line(proc.stderr)}",
            hint="if git reports 'dubious ownership', run it as the repository's owner",
        )
    if proc.stdout.strip() == b"true":
        return path, ""
    proc = _git(["rev-parse", "--show-toplevel", "--show-prefix"], repo=path, allow_file=True)
    if proc.returncode != 0:
        raise SourceError(
            f"{path} is inside a git directory, not a work tree: {_last_line(proc.stderr)}",
            hint="point SOURCE at the repository's work tree",
        )
    lines = proc.stdout.decode("utf-8", "surrogateescape").splitlines()
    toplevel = Path(lines[0])
    prefix = lines[1].rstrip("/") if len(lines) > 1 else ""
    return toplevel, prefix


def _list_refs(repo: Path) -> list[str]:
    proc = _git(["for-each-ref", "--format=%(refname:short)", "refs/heads", "refs/tags"], repo=repo)
    if proc.returncode != 0:
        return []
    return proc.stdout.decode("utf-8", "replace").split()


def _resolve(repo: Path, ref: str | None, *, allow_file: bool = False,
             shown: str | None = None, known: Sequence[str] | None = None) -> str:
    """The commit REF names in ``repo`` (``known``: the refs to suggest, else the repo's)."""
    if ref is not None and (not ref.strip() or ref.startswith("-") or "\0" in ref):
        raise SourceError(f"invalid ref {ref!r}", hint="give a branch, tag or commit SHA")
    spec = f"{ref if ref is not None else 'HEAD'}^{{commit}}"
    args = ["rev-parse", "--verify", "--quiet", "--end-of-options", spec]
    proc = _git(args, repo=repo, allow_file=allow_file)
    if proc.returncode != 0:
        named = _git(["rev-parse", "--verify", "--quiet", "--end-of-options",
                      ref if ref is not None else "HEAD"], repo=repo, allow_file=allow_file)
        oid = named.stdout.decode().strip()
        if named.returncode == 0 and oid:
            if _git(["cat-file", "-e", oid], repo=repo).returncode != 0:
                raise _lacks(oid)
            raise SourceError(f"{shown or ref or 'HEAD'} does not name a commit (it is {oid})",
                              hint="give a branch, tag or commit SHA")
        if ref is None:
            raise SourceError(
                "the repository has no commits (HEAD does not resolve)",
                hint="commit something first, or pass --ref",
            )
        hint = suggestion(ref, list(known) if known is not None else _list_refs(repo),
                          listing="known branches/tags",
                          empty="the repository has no branches or tags")
        raise SourceError(f"unknown ref {ref!r}", hint=hint)
    return proc.stdout.decode().strip()


def _commit_time(repo: Path, commit: str) -> int:
    proc = _git(["cat-file", "commit", commit], repo=repo)
    _check_git(proc, f"cannot read commit {commit}")
    match = _COMMITTER_RE.search(proc.stdout.split(b"\n\n", 1)[0])
    if match is None:
        raise SourceError(f"cannot read commit {commit}: {_last_line(proc.stderr)}")
    return int(match.group(1))


@dataclass(frozen=True)
class _Listed:
    """One blob of a commit's tree, before its content is read."""

    path: str
    git_mode: int
    oid: str
    size: int | None
    """None when the blob is not in the repository yet (a partial fetch)."""

    @property
    def kind(self) -> EntryKind:
        return EntryKind.SYMLINK if stat.S_ISLNK(self.git_mode) else EntryKind.FILE


def _list_git_tree(repo: Path, commit: str, limits: SourceLimits, *,
                   partial: bool) -> list[_Listed]:
    """Every blob of ``commit`` (gitlinks, i.e. submodules, are skipped). In a partial
    repository sizes are not known until the blobs are fetched."""
    sizes = [] if partial else ["-l"]
    proc = _git(["ls-tree", "-r", "-z", *sizes, "--full-tree", commit], repo=repo)
    _check_git(proc, f"cannot list commit {commit}")
    listed: list[_Listed] = []
    total = 0
    for record in proc.stdout.split(b"\0"):
        if not record:
            continue
        meta, _, raw_path = record.partition(b"\t")
        mode_s, otype, oid, *size_s = meta.decode().split()
        path = _entry_name(raw_path)
        if otype == "commit":  # gitlink: a submodule, not content of this tree
            continue
        if otype != "blob":
            raise SourceError(f"unexpected {otype} entry in tree: {path!r}")
        _check_entry_path(path)
        size = None
        if size_s:
            if not size_s[0].isdigit():  # git prints "BAD" (or "-") for a missing object
                raise SourceError(f"the repository lacks the content of {path!r} (object "
                                  f"{oid} is missing: a partial clone or an incomplete copy)",
                                  "fetch the missing objects (`git fetch --refetch`, or clone "
                                  "without --filter) and run again")
            size = int(size_s[0])
            if size > limits.max_file_bytes:
                raise _too_big(path, size, limits)
            total += size
        listed.append(_Listed(path, int(mode_s, 8), oid, size))
        _check_counts(len(listed), total, limits)
    return listed


def _read_listed(repo: Path, listed: Sequence[_Listed], limits: SourceLimits,
                 known: dict[str, SourceEntry]) -> list[SourceEntry]:
    """The entries of ``listed`` (those in ``known`` are not read again)."""
    blobs = _cat_blobs(repo, sorted({item.oid for item in listed if item.path not in known}))
    entries: list[SourceEntry] = []
    total = 0
    for item in listed:
        if item.path in known:
            entries.append(known[item.path])
        else:
            data = blobs[item.oid]
            if len(data) > limits.max_file_bytes:
                raise _too_big(item.path, len(data), limits)
            if item.kind is EntryKind.SYMLINK:
                entries.append(SourceEntry(item.path, EntryKind.SYMLINK, 0o777, data))
            else:
                mode = 0o755 if item.git_mode & 0o111 else 0o644
                entries.append(SourceEntry(item.path, EntryKind.FILE, mode, data))
        total += len(entries[-1].data)
        _check_counts(len(entries), total, limits)
    return entries


def _cat_blobs(repo: Path, oids: list[str]) -> dict[str, bytes]:
    if not oids:
        return {}
    proc = _git(["cat-file", "--batch"], repo=repo, stdin="".join(f"{o}\n" for o in oids).encode())
    _check_git(proc, "cannot read blobs")
    out = proc.stdout
    blobs: dict[str, bytes] = {}
    pos = 0
    for oid in oids:
        eol = out.index(b"\n", pos)
        header = out[pos:eol].decode().split()
        if header == [oid, "missing"]:
            raise _lacks(oid)
        if len(header) != 3 or header[0] != oid:
            raise SourceError(f"cannot read blob {oid}: {' '.join(header)}")
        size = int(header[2])
        blobs[oid] = out[eol + 1 : eol + 1 + size]
        pos = eol + 1 + size + 1  # content is followed by a newline
    return blobs


# --------------------------------------------------------------------------- plain directory


def _walk_directory(root: Path, limits: SourceLimits) -> list[SourceEntry]:
    """Files and symlinks under ``root``; skips ``.git``, sockets, fifos and devices."""
    entries: list[SourceEntry] = []
    total = 0
    stack: list[tuple[Path, str]] = [(root, "")]
    while stack:
        directory, rel = stack.pop()
        try:
            children = sorted(os.scandir(directory), key=lambda d: d.name)
        except OSError as exc:
            raise SourceError(f"cannot read directory {directory}: {exc.strerror}") from exc
        for child in children:
            if child.name == ".git":
                continue
            path = _entry_name(os.fsencode(f"{rel}/{child.name}" if rel else child.name))
            st = child.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                stack.append((Path(child.path), path))
                continue
            if stat.S_ISLNK(st.st_mode):
                _check_entry_path(path)
                target = os.fsencode(Path(child.path).readlink())
                entries.append(SourceEntry(path, EntryKind.SYMLINK, 0o777, target))
                total += len(target)
            elif stat.S_ISREG(st.st_mode):
                _check_entry_path(path)
                if st.st_size > limits.max_file_bytes:
                    raise _too_big(path, st.st_size, limits)
                data = _read_nofollow(Path(child.path), limits.max_file_bytes)
                if len(data) > limits.max_file_bytes:
                    raise _too_big(path, len(data), limits)
                mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
                entries.append(SourceEntry(path, EntryKind.FILE, mode, data))
                total += len(data)
            else:
                continue  # socket, fifo, device: not source code
            _check_counts(len(entries), total, limits)
    return entries


def _read_nofollow(path: Path, cap: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as fh:
        return fh.read(cap + 1)


def _too_big(path: str, size: int, limits: SourceLimits) -> SourceError:
    return SourceError(
        f"source file {path} is {size} bytes, over the {limits.max_file_bytes}-byte limit",
        hint="remove large artifacts from the source, or raise the source limits",
    )


def _check_counts(files: int, total: int, limits: SourceLimits) -> None:
    if files > limits.max_files:
        raise SourceError(
            f"source has more than {limits.max_files} files",
            hint="raise the source limits, or give --subdir (then only the project and what "
                 "it reads from above are read)",
        )
    if total > limits.max_total_bytes:
        raise SourceError(
            f"source is larger than {limits.max_total_bytes} bytes",
            hint="remove large artifacts from the source, or raise the source limits",
        )


# --------------------------------------------------------------------------- subdir + acquire


def _check_subdir(entries: Sequence[SourceEntry | _Listed], subdir: str) -> None:
    """The subdir must be a directory of the tree; otherwise suggest siblings."""
    if not subdir:
        return
    for entry in entries:
        if entry.path == subdir:
            what = "a symlink" if entry.kind is EntryKind.SYMLINK else "a file"
            raise SourceError(f"subdir {subdir!r} is {what}, not a directory")
    dirs: set[str] = set()
    for entry in entries:
        parents = PurePosixPath(entry.path).parents
        dirs.update(str(p) for p in parents if str(p) != ".")
    if subdir in dirs:
        return
    # Deepest ancestor that exists, then list its subdirectories.
    parent = str(PurePosixPath(subdir).parent)
    while parent != "." and parent not in dirs:
        parent = str(PurePosixPath(parent).parent)
    level = "" if parent == "." else parent
    siblings = sorted(d for d in dirs if str(PurePosixPath(d).parent) == (level or "."))
    where = f"under {level!r}" if level else "at the top level"
    hint = suggestion(subdir, siblings, listing=f"directories {where}",
                      empty=f"there are no directories {where}")
    raise SourceError(f"subdir {subdir!r} does not exist in the source", hint=hint)


def _join_subdir(prefix: str, subdir: str) -> str:
    return "/".join(p for p in (prefix, subdir) if p)


Needs = Callable[[SourceTree], Sequence[tuple[str, str]]]
"""What a project reads outside its directory, given a tree of the project, every file of
the directories above it and every file named in ``manifest_names`` anywhere: ``(path,
why)`` pairs (a file or a directory; ``""`` is the whole repository)."""


def _in(path: str, directory: str) -> bool:
    return not directory or path == directory or path.startswith(f"{directory}/")


def _first_look(path: str, subdir: str, names: frozenset[str]) -> bool:
    """Whether a file is read to decide what the project needs from above: the project's
    own, those of the directories above it, manifests anywhere (workspace members)."""
    parent = str(PurePosixPath(path).parent)
    parent = "" if parent == "." else parent
    return (_in(path, subdir) or _in(subdir, parent)
            or PurePosixPath(path).name in names)


def _uncommitted(toplevel: Path) -> tuple[str, ...]:
    """What the work tree changed or added without committing (read only: no index
    refresh is written, as GIT_OPTIONAL_LOCKS=0 is set)."""
    proc = _git(["status", "--porcelain=v1", "-z", "--untracked-files=normal",
                 "--ignore-submodules=all"], repo=toplevel, allow_file=True)
    if proc.returncode != 0:
        return ()
    found: list[str] = []
    records = iter(proc.stdout.split(b"\0"))
    for record in records:
        if len(record) < 4:
            continue
        found.append(_shown(record[3:]))
        if record[:1] in (b"R", b"C"):
            next(records, None)  # the original name of a rename or copy
    return tuple(found)


def acquire(
    source: str,
    *,
    ref: str | None,
    subdir: str | None,
    workdir: Path,
    limits: SourceLimits = SourceLimits(),
    cache: Path | None = None,
    needs: Needs | None = None,
    manifest_names: frozenset[str] = frozenset(),
) -> SourceTree:
    """Fetch SOURCE (fetch a URL's commit, read a local repository in place, or walk a
    directory).

    A URL's pinned commit alone is fetched (shallow; trees first, then the blobs of the
    files read, where the server allows a filter) into a repository under ``cache``, kept
    across runs, or under ``workdir`` when there is no cache; nothing else is written.
    ``ref`` (branch, tag, full or short SHA; ``None`` = HEAD) is refused for plain
    directories, which have no history. With ``subdir`` and ``needs``, only the project
    and what ``needs`` says it reads from above are read and returned (``sent``).
    """
    kind = classify(source)
    sub = normalise_subdir(subdir)
    text = source.strip()
    uncommitted: tuple[str, ...] = ()
    if kind is SourceKind.DIRECTORY:
        if ref is not None:
            raise SourceError(
                f"--ref {ref!r} given but {text} is not a git repository",
                hint="drop --ref, or point SOURCE at a git repository",
            )
        root = Path(text).expanduser().resolve()
        walked = {e.path: e for e in _walk_directory(root, limits)}
        location = str(root)
        _check_nonempty(walked, location, committed=False)
        _check_subdir(list(walked.values()), sub)
        picked, sent = _pick(sorted(walked), sub, needs, manifest_names,
                             lambda paths: [walked[p] for p in paths], ref, location, kind)
        entries = [walked[p] for p in picked]
        commit: str | None = None
        commit_time: int | None = None
    else:
        with contextlib.ExitStack() as stack:
            if kind is SourceKind.GIT_REMOTE:
                location = _redact(text)
                repo = stack.enter_context(_cache_repository(text, cache, workdir))
                commit = _fetch_commit(text, repo, ref)
                partial = True
            else:
                repo, prefix = _locate_local(Path(text).expanduser().resolve())
                location = str(repo)
                sub = _join_subdir(prefix, sub)
                commit = _resolve(repo, ref, allow_file=True)
                partial = False
            # Three independent git runs at once: the commit's time and, for a local work
            # tree, what it has not committed (a warning), beside the tree's listing.
            beside = stack.enter_context(
                concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="reprobuild-git"))
            timed = beside.submit(_commit_time, repo, commit)
            changes = beside.submit(_uncommitted, repo) if (
                kind is SourceKind.GIT_LOCAL and ref is None and (repo / ".git").exists()
            ) else None
            listed = {item.path: item for item in _list_git_tree(repo, commit, limits,
                                                                 partial=partial)}
            commit_time = timed.result()
            if changes is not None:
                uncommitted = changes.result()
            _check_nonempty(listed, location, committed=True)
            _check_subdir(list(listed.values()), sub)
            read: dict[str, SourceEntry] = {}

            def load(paths: Sequence[str]) -> list[SourceEntry]:
                items = [listed[p] for p in paths]
                if partial:
                    _fetch_blobs(text, repo, commit, ref,
                                 [i.oid for i in items if i.path not in read])
                got = _read_listed(repo, items, limits, read)
                read.update((e.path, e) for e in got)
                return got

            picked, sent = _pick(sorted(listed), sub, needs, manifest_names, load, ref,
                                 location, kind)
            entries = load(picked)
    entries.sort(key=lambda e: e.path)
    return SourceTree(
        location=location,
        kind=kind,
        ref=ref,
        commit=commit,
        commit_time=commit_time,
        subdir=sub,
        entries=tuple(entries),
        tree_sha256=compute_tree_sha256(entries),
        sent=sent,
        uncommitted=uncommitted,
    )


def _check_nonempty(found: Mapping[str, object], location: str, *, committed: bool) -> None:
    if not found:
        raise SourceError(
            f"{location} has no files" + (" committed" if committed else ""),
            hint="commit the sources first" if committed else "check the path",
        )


def _pick(paths: Sequence[str], sub: str, needs: Needs | None, names: frozenset[str],
          load: Callable[[Sequence[str]], list[SourceEntry]], ref: str | None,
          location: str, kind: SourceKind) -> tuple[list[str], tuple[tuple[str, str], ...]]:
    """The paths the builds get, and what beyond the project they are (see :data:`Needs`)."""
    if not sub or needs is None:
        return list(paths), ()
    first = [p for p in paths if _first_look(p, sub, names)]
    look = SourceTree(location=location, kind=kind, ref=ref, commit=None, commit_time=None,
                      subdir=sub, entries=tuple(load(first)), tree_sha256="")
    asked = dict.fromkeys((path, why) for path, why in needs(look))
    whole = tuple((path, why) for path, why in asked if not path)
    if whole:
        return list(paths), whole
    # Only what the commit has: a lockfile may name a directory that is not there.
    sent = tuple((d, why) for d, why in asked if any(_in(p, d) for p in paths))
    return [p for p in paths if _in(p, sub) or any(_in(p, d) for d, _ in sent)], sent
