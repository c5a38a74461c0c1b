"""Unit tests for reprobuild.source, using throwaway git repositories made with the git CLI."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from reprobuild.errors import SourceError
from reprobuild.pipeline.plan import acquire_source, source_info, source_warnings
from reprobuild.source import (
    EntryKind,
    SourceEntry,
    SourceKind,
    SourceLimits,
    SourceTree,
    acquire,
    classify,
    compute_tree_sha256,
    normalise_subdir,
)

COMMIT_TIME = 1_700_000_000


def git(repo: Path, *args: str) -> str:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(repo),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_DATE": f"{COMMIT_TIME} +0000",
        "GIT_COMMITTER_DATE": f"{COMMIT_TIME} +0000",
    }
    cmd = [
        "git", "-C", str(repo),
        "-c", "user.name=Test", "-c", "user.email=test@example.com",
        "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false",
        "-c", "tag.gpgsign=false", "-c", "protocol.file.allow=always",
        *args,
    ]  # fmt: skip
    return subprocess.run(cmd, check=True, capture_output=True, env=env, text=True).stdout.strip()


def write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """main: v1 content, tagged v1; then v2 content; branch 'feature' with an extra file."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    write(root / "README.md", "v1\n")
    write(root / "pkg" / "server.py", "print('hi')\n")
    write(root / "pkg" / "run.sh", "#!/bin/sh\n", 0o755)
    write(root / "pkg" / "inner" / "data.txt", "data\n")
    (root / "link").symlink_to("pkg/server.py")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "v1")
    git(root, "tag", "v1")
    write(root / "README.md", "v2\n")
    git(root, "commit", "-q", "-am", "v2")
    git(root, "checkout", "-q", "-b", "feature")
    write(root / "feature.txt", "f\n")
    git(root, "add", "feature.txt")
    git(root, "commit", "-q", "-m", "feature")
    git(root, "checkout", "-q", "main")
    return root


def paths(tree: SourceTree) -> list[str]:
    return [e.path for e in tree.entries]


def entry(tree: SourceTree, path: str) -> SourceEntry:
    return next(e for e in tree.entries if e.path == path)


# --------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/o/r",
        "http://example.com/r.git",
        "ssh://git@example.com/o/r.git",
        "git@github.com:o/r.git",
        "file:///srv/r.git",
        "  https://github.com/o/r  ",
    ],
)
def test_classify_remote(url: str) -> None:
    assert classify(url) is SourceKind.GIT_REMOTE


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("ext::sh -c touch% /tmp/pwned", "remote-helper"),
        ("ftp://example.com/r", "unsupported URL scheme"),
        ("/definitely/not/here", "does not exist"),
        ("", "empty"),
    ],
)
def test_classify_refuses(source: str, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        classify(source)


def test_classify_local(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert classify(str(repo)) is SourceKind.GIT_LOCAL
    assert classify(str(repo / "pkg" / "inner")) is SourceKind.GIT_LOCAL
    plain = tmp_path / "plain"
    plain.mkdir()
    assert classify(str(plain)) is SourceKind.DIRECTORY
    # An existing local path wins over the scp-like reading, as in git clone.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "host:dir").mkdir()
    assert classify("host:dir") is SourceKind.DIRECTORY
    with pytest.raises(SourceError, match="not a directory"):
        classify(str(repo / "README.md"))


@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, ""), ("", ""), (".", ""), ("./a//b/", "a/b"), ("pkg", "pkg"), ("a/./b", "a/b")],
)
def test_normalise_subdir(given: str | None, expected: str) -> None:
    assert normalise_subdir(given) == expected


@pytest.mark.parametrize("bad", ["/abs", "a/../b", "..", "a\\b", "a\0b"])
def test_normalise_subdir_refuses(bad: str) -> None:
    with pytest.raises(SourceError):
        normalise_subdir(bad)


def test_compute_tree_sha256_format() -> None:
    entries = [
        SourceEntry("b", EntryKind.SYMLINK, 0o777, b"a"),
        SourceEntry("a", EntryKind.FILE, 0o755, b"x"),
    ]

    def h(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    listing = f"file 755 {h(b'x')} a\nsymlink 777 {h(b'a')} b\n"
    assert compute_tree_sha256(entries) == h(listing.encode())


# --------------------------------------------------------------------------- local git


def test_local_repo_only_committed_files(repo: Path, tmp_path: Path) -> None:
    write(repo / "README.md", "dirty\n")
    write(repo / "untracked.txt", "u\n")
    write(repo / "pkg" / "staged.txt", "s\n")
    git(repo, "add", "pkg/staged.txt")
    index_before = (repo / ".git" / "index").read_bytes()
    status_before = git(repo, "status", "--porcelain")

    tree = acquire(str(repo), ref=None, subdir=None, workdir=tmp_path / "work")

    assert tree.kind is SourceKind.GIT_LOCAL
    assert tree.location == str(repo.resolve())
    assert tree.commit == git(repo, "rev-parse", "HEAD")
    assert tree.commit_time == COMMIT_TIME
    assert tree.ref is None and tree.subdir == ""
    assert paths(tree) == ["README.md", "link", "pkg/inner/data.txt", "pkg/run.sh", "pkg/server.py"]
    assert entry(tree, "README.md").data == b"v2\n"
    assert entry(tree, "pkg/run.sh").mode == 0o755
    assert entry(tree, "pkg/server.py").mode == 0o644
    link = entry(tree, "link")
    assert (link.kind, link.mode, link.data) == (EntryKind.SYMLINK, 0o777, b"pkg/server.py")
    # The user's repository is untouched.
    assert (repo / ".git" / "index").read_bytes() == index_before
    assert git(repo, "status", "--porcelain") == status_before
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize(
    ("ref", "readme", "has_feature"),
    [("v1", b"v1\n", False), ("main", b"v2\n", False), ("feature", b"v2\n", True)],
)
def test_local_refs(repo: Path, tmp_path: Path, ref: str, readme: bytes, has_feature: bool) -> None:
    tree = acquire(str(repo), ref=ref, subdir=None, workdir=tmp_path)
    assert tree.ref == ref
    assert tree.commit == git(repo, "rev-parse", f"{ref}^{{commit}}")
    assert entry(tree, "README.md").data == readme
    assert ("feature.txt" in paths(tree)) is has_feature


def test_local_short_sha(repo: Path, tmp_path: Path) -> None:
    full = git(repo, "rev-parse", "v1^{commit}")
    tree = acquire(str(repo), ref=full[:10], subdir=None, workdir=tmp_path)
    assert tree.commit == full and len(full) == 40


def test_unknown_ref_lists_refs(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="unknown ref 'nope'") as info:
        acquire(str(repo), ref="nope", subdir=None, workdir=tmp_path)
    assert info.value.hint is not None
    assert "main" in info.value.hint and "v1" in info.value.hint
    with pytest.raises(SourceError) as close:
        acquire(str(repo), ref="featur", subdir=None, workdir=tmp_path)
    assert close.value.hint == "did you mean: feature?"


def test_option_like_ref_refused(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="invalid ref"):
        acquire(str(repo), ref="--output=/tmp/x", subdir=None, workdir=tmp_path)


def test_a_bare_repository_is_read_in_place_and_its_git_dir_is_refused(
        repo: Path, tmp_path: Path) -> None:
    """A bare repository (a mirror) has no work tree to ask about; the inside of a work
    tree's .git is neither."""
    bare = tmp_path / "mirror.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(bare))
    tree = acquire(str(bare), ref="v1", subdir=None, workdir=tmp_path / "work")
    assert tree.kind is SourceKind.GIT_LOCAL and tree.location == str(bare.resolve())
    assert tree.commit == git(repo, "rev-parse", "v1^{commit}")
    assert tree.commit_time == COMMIT_TIME and tree.subdir == ""
    assert entry(tree, "README.md").data == b"v1\n"
    assert acquire(str(bare), ref=None, subdir=None, workdir=tmp_path).uncommitted == ()
    with pytest.raises(SourceError, match="not a work tree"):
        acquire(str(repo / ".git"), ref=None, subdir=None, workdir=tmp_path)


def test_path_inside_work_tree_becomes_subdir(repo: Path, tmp_path: Path) -> None:
    tree = acquire(str(repo / "pkg"), ref=None, subdir="inner", workdir=tmp_path)
    assert tree.location == str(repo.resolve())
    assert tree.subdir == "pkg/inner"
    assert "README.md" in paths(tree)  # the whole tree is kept


def test_subdir_missing_suggests(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="'pkg/iner' does not exist") as info:
        acquire(str(repo), ref=None, subdir="pkg/iner", workdir=tmp_path)
    assert info.value.hint == "did you mean: pkg/inner?"
    with pytest.raises(SourceError) as listing:
        acquire(str(repo), ref=None, subdir="zzz/deep", workdir=tmp_path)
    assert listing.value.hint == "directories at the top level: pkg"
    with pytest.raises(SourceError, match="is a file"):
        acquire(str(repo), ref=None, subdir="README.md", workdir=tmp_path)


def test_gitlinks_skipped(repo: Path, tmp_path: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    git(repo, "update-index", "--add", "--cacheinfo", f"160000,{head},vendor/sub")
    git(repo, "commit", "-q", "-m", "submodule")
    assert "160000 commit" in git(repo, "ls-tree", "-r", "HEAD")
    tree = acquire(str(repo), ref=None, subdir=None, workdir=tmp_path)
    assert not any(p.startswith("vendor") for p in paths(tree))


def test_a_missing_object_is_named_not_a_crash(repo: Path, tmp_path: Path) -> None:
    (repo / "big.cast").write_bytes(b"recording\n" * 100)
    git(repo, "add", "big.cast")
    git(repo, "commit", "-q", "-m", "big")
    oid = git(repo, "rev-parse", "HEAD:big.cast").strip()
    (repo / ".git" / "objects" / oid[:2] / oid[2:]).unlink()  # what a partial snapshot lacks
    with pytest.raises(SourceError, match=f"lacks the content of 'big.cast' \\(object {oid}"):
        acquire(str(repo), ref=None, subdir=None, workdir=tmp_path)


def test_empty_repository(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    git(root, "init", "-q")
    with pytest.raises(SourceError, match="no commits"):
        acquire(str(root), ref=None, subdir=None, workdir=tmp_path)


def test_limits(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="more than 2 files"):
        acquire(
            str(repo), ref=None, subdir=None, workdir=tmp_path, limits=SourceLimits(max_files=2)
        )
    with pytest.raises(SourceError, match="over the 5-byte limit"):
        acquire(
            str(repo),
            ref=None,
            subdir=None,
            workdir=tmp_path,
            limits=SourceLimits(max_file_bytes=5),
        )
    with pytest.raises(SourceError, match="larger than 20 bytes"):
        acquire(
            str(repo),
            ref=None,
            subdir=None,
            workdir=tmp_path,
            limits=SourceLimits(max_total_bytes=20),
        )


# --------------------------------------------------------------------------- remote (file://)


def test_file_url_clone(repo: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    tree = acquire(f"file://{repo}", ref="v1", subdir="pkg", workdir=work)
    assert tree.kind is SourceKind.GIT_REMOTE
    assert tree.location == f"file://{repo}"
    assert tree.commit == git(repo, "rev-parse", "v1^{commit}")
    assert tree.subdir == "pkg"
    assert entry(tree, "README.md").data == b"v1\n"
    local = acquire(str(repo), ref="v1", subdir="pkg", workdir=work)
    assert tree.tree_sha256 == local.tree_sha256
    assert list(work.glob("*/repo.git"))  # the bare clone lives under workdir
    default = acquire(f"file://{repo}", ref=None, subdir=None, workdir=work)
    assert default.commit == git(repo, "rev-parse", "main")


def test_file_url_unadvertised_sha_is_fetched(repo: Path, tmp_path: Path) -> None:
    git(repo, "checkout", "-q", "-b", "temp")
    write(repo / "hidden.txt", "h\n")
    git(repo, "add", "hidden.txt")
    git(repo, "commit", "-q", "-m", "hidden")
    hidden = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "main")
    git(repo, "branch", "-q", "-D", "temp")
    git(repo, "config", "uploadpack.allowAnySHA1InWant", "true")
    tree = acquire(f"file://{repo}", ref=hidden, subdir=None, workdir=tmp_path / "w")
    assert tree.commit == hidden
    assert "hidden.txt" in paths(tree)


def test_clone_failure_reports_git_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="could not clone") as info:
        acquire(f"file://{tmp_path}/missing.git", ref=None, subdir=None, workdir=tmp_path / "w")
    assert "missing.git" in str(info.value)


def test_credentials_are_redacted(tmp_path: Path) -> None:
    url = f"file://user:s3cret@localhost{tmp_path}/missing.git"
    with pytest.raises(SourceError) as info:
        acquire(url, ref=None, subdir=None, workdir=tmp_path / "w")
    assert "s3cret" not in str(info.value)


# --------------------------------------------------------------------------- plain directory


def test_plain_directory(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    write(root / "a.py", "a\n")
    write(root / "bin" / "tool", "#!/bin/sh\n", 0o755)
    write(root / ".git" / "config", "not a repo, must be skipped anyway\n")
    write(root / "outside" / "secret", "s\n")
    (root / "dirlink").symlink_to("bin")
    (root / "filelink").symlink_to("a.py")
    os.mkfifo(root / "pipe")
    tree = acquire(str(root), ref=None, subdir="bin", workdir=tmp_path / "w")
    assert tree.kind is SourceKind.DIRECTORY  # a stray .git without HEAD/objects is no repo
    assert paths(tree) == ["a.py", "bin/tool", "dirlink", "filelink", "outside/secret"]
    assert entry(tree, "bin/tool").mode == 0o755
    assert entry(tree, "dirlink").kind is EntryKind.SYMLINK
    assert entry(tree, "dirlink").data == b"bin"
    assert tree.commit is None and tree.commit_time is None


def test_plain_directory_kind_and_ref_refused(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    write(root / "a.py", "a\n")
    tree = acquire(str(root), ref=None, subdir=None, workdir=tmp_path / "w")
    assert tree.kind is SourceKind.DIRECTORY
    assert tree.location == str(root.resolve())
    with pytest.raises(SourceError, match="not a git repository"):
        acquire(str(root), ref="main", subdir=None, workdir=tmp_path / "w")


def test_tree_sha256_stable_and_sensitive(repo: Path, tmp_path: Path) -> None:
    """Same committed content gives the same hash whether read from git or from a directory."""
    export = tmp_path / "export"
    export.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", "--format=tar", "HEAD"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(export)], input=archive, check=True)
    from_git = acquire(str(repo), ref=None, subdir=None, workdir=tmp_path)
    from_dir = acquire(str(export), ref=None, subdir=None, workdir=tmp_path)
    assert from_git.tree_sha256 == from_dir.tree_sha256
    assert acquire(str(export), ref=None, subdir=None, workdir=tmp_path) == from_dir

    (export / "pkg" / "server.py").write_text("print('changed')\n")
    changed = acquire(str(export), ref=None, subdir=None, workdir=tmp_path)
    assert changed.tree_sha256 != from_dir.tree_sha256
    (export / "pkg" / "server.py").write_text("print('hi')\n")
    (export / "pkg" / "server.py").chmod(0o755)
    mode = acquire(str(export), ref=None, subdir=None, workdir=tmp_path)
    assert mode.tree_sha256 not in (from_dir.tree_sha256, changed.tree_sha256)


# --------------------------------------------------------------------------- hostile input


def test_a_file_name_that_is_not_utf8_is_refused_with_the_name_escaped(
    repo: Path, tmp_path: Path
) -> None:
    name = os.fsdecode(b"caf\xe9.txt")
    (repo / name).write_bytes(b"x")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "latin-1 name")
    with pytest.raises(SourceError) as info:
        acquire(str(repo), ref=None, subdir=None, workdir=tmp_path)
    message = str(info.value)
    assert "caf\\xe9.txt" in message and "UTF-8" in message
    message.encode("utf-8")  # printable: no lone surrogate reaches the terminal
    plain = tmp_path / "plain"
    (plain / "dir").mkdir(parents=True)
    (plain / "dir" / name).write_bytes(b"x")
    with pytest.raises(SourceError, match=r"dir/caf\\xe9\.txt"):
        acquire(str(plain), ref=None, subdir=None, workdir=tmp_path)


def test_a_missing_tree_is_named(repo: Path, tmp_path: Path) -> None:
    oid = git(repo, "rev-parse", "HEAD:pkg/inner")
    (repo / ".git" / "objects" / oid[:2] / oid[2:]).unlink()
    with pytest.raises(SourceError) as info:
        acquire(str(repo), ref=None, subdir=None, workdir=tmp_path)
    assert f"lacks object {oid}" in str(info.value)
    assert "\n" not in str(info.value)


def test_a_missing_commit_is_named_not_called_an_empty_repository(
    repo: Path, tmp_path: Path
) -> None:
    head = git(repo, "rev-parse", "HEAD")
    (repo / ".git" / "objects" / head[:2] / head[2:]).unlink()
    with pytest.raises(SourceError) as info:
        acquire(str(repo), ref=None, subdir=None, workdir=tmp_path)
    assert f"lacks object {head}" in str(info.value)
    assert "no commits" not in str(info.value)


def test_a_partial_clone_names_the_object_it_lacks(repo: Path, tmp_path: Path) -> None:
    git(repo, "config", "uploadpack.allowFilter", "true")
    partial = tmp_path / "partial"
    git(tmp_path, "clone", "-q", "--no-checkout", "--filter=blob:none", f"file://{repo}",
        str(partial))
    with pytest.raises(SourceError) as info:
        acquire(str(partial), ref=None, subdir=None, workdir=tmp_path / "w")
    assert "lacks object" in str(info.value) and "partial clone" in str(info.value)


def test_a_missing_repository_names_the_cause_not_gits_last_line(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as info:
        acquire(f"file://{tmp_path}/missing.git", ref=None, subdir=None, workdir=tmp_path / "w")
    message = str(info.value)
    assert "does not appear to be a git repository" in message
    assert "and the repository exists" not in message


@pytest.mark.parametrize("url", ["git@unreachable.invalid:x/y.git",
                                 "ssh://git@unreachable.invalid/x/y.git",
                                 "https://unreachable.invalid/x/y.git"])
def test_an_unreachable_host_is_said_so(url: str, tmp_path: Path) -> None:
    with pytest.raises(SourceError) as info:
        acquire(url, ref=None, subdir=None, workdir=tmp_path / "w")
    message = str(info.value)
    assert "could not reach host unreachable.invalid" in message
    assert "and the repository exists" not in message


# ------------------------------------------------------------------ what is fetched and sent


def _objects(repo: Path) -> set[str]:
    out = subprocess.run(["git", "-C", str(repo), "cat-file", "--batch-all-objects",
                          "--batch-check=%(objectname)"], capture_output=True, text=True,
                         check=True, env={**os.environ, "GIT_NO_LAZY_FETCH": "1"}).stdout
    return set(out.split())


def test_a_url_fetches_only_the_pinned_commit_and_the_blobs_it_reads(
    repo: Path, tmp_path: Path
) -> None:
    write(repo / "assets" / "big.bin", "x" * 100_000)
    git(repo, "add", "assets")
    git(repo, "commit", "-q", "-m", "assets")
    git(repo, "config", "uploadpack.allowFilter", "true")
    cache = tmp_path / "cache"
    tree = acquire(f"file://{repo}", ref=None, subdir="pkg", workdir=tmp_path / "w",
                   cache=cache, needs=lambda tree: ())
    assert paths(tree) == ["pkg/inner/data.txt", "pkg/run.sh", "pkg/server.py"]
    assert tree.sent == ()
    (kept,) = cache.glob("*.git")
    objects = _objects(kept)
    assert git(repo, "rev-parse", "HEAD") in objects
    assert git(repo, "rev-parse", "HEAD~1") not in objects  # no history
    assert git(repo, "rev-parse", "HEAD:assets/big.bin") not in objects  # not read
    assert git(repo, "rev-parse", "HEAD:pkg/server.py") in objects
    assert not (tmp_path / "w").exists()  # with a cache, nothing goes to the workdir


def test_fetched_objects_are_kept_across_runs(repo: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = acquire(f"file://{repo}", ref="v1", subdir=None, workdir=tmp_path / "w1",
                    cache=cache)
    second = acquire(f"file://{repo}", ref="main", subdir=None, workdir=tmp_path / "w2",
                     cache=cache)
    assert entry(first, "README.md").data == b"v1\n"
    assert entry(second, "README.md").data == b"v2\n"
    (kept,) = cache.glob("*.git")
    objects = _objects(kept)
    assert {first.commit, second.commit} <= objects
    assert git(repo, "rev-parse", "v1:README.md") in objects  # the first run's, still there
    again = acquire(f"file://{repo}", ref="v1", subdir="pkg", workdir=tmp_path / "w3",
                    cache=cache)
    assert again.commit == first.commit
    assert list(cache.glob("*.git")) == [kept]  # one repository per URL


def test_the_url_and_its_credentials_stay_out_of_the_cache(repo: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    acquire(f"file://{repo}", ref=None, subdir=None, workdir=tmp_path / "w", cache=cache)
    (kept,) = cache.glob("*.git")
    assert str(repo) not in (kept / "config").read_text()


def test_needs_decides_what_beyond_the_subdir_is_read_and_sent(repo: Path, tmp_path: Path) -> None:
    write(repo / "other" / "deep" / "manifest.toml", "m\n")
    write(repo / "other" / "deep" / "code.py", "c\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "other")
    seen: list[list[str]] = []

    def needs(look: SourceTree) -> list[tuple[str, str]]:
        seen.append(paths(look))
        return [("README.md", "the root readme"), ("other/deep", "a sibling")]

    for source in (str(repo), f"file://{repo}"):
        seen.clear()
        tree = acquire(source, ref=None, subdir="pkg/inner", workdir=tmp_path / "w",
                       cache=tmp_path / "cache", needs=needs,
                       manifest_names=frozenset({"manifest.toml"}))
        # the project, every file of the directories above it, manifests anywhere
        assert seen == [["README.md", "link", "other/deep/manifest.toml", "pkg/inner/data.txt",
                         "pkg/run.sh", "pkg/server.py"]]
        assert paths(tree) == ["README.md", "other/deep/code.py", "other/deep/manifest.toml",
                               "pkg/inner/data.txt"]
        assert tree.sent == (("README.md", "the root readme"), ("other/deep", "a sibling"))
        assert tree.tree_sha256 == compute_tree_sha256(tree.entries)


def test_needs_may_ask_for_the_whole_repository(repo: Path, tmp_path: Path) -> None:
    tree = acquire(str(repo), ref=None, subdir="pkg", workdir=tmp_path,
                   needs=lambda look: [("", "cannot tell")])
    assert paths(tree) == ["README.md", "link", "pkg/inner/data.txt", "pkg/run.sh",
                           "pkg/server.py"]
    assert tree.sent == (("", "cannot tell"),)


def test_uncommitted_changes_are_listed_not_built(repo: Path, tmp_path: Path) -> None:
    clean = acquire(str(repo), ref=None, subdir=None, workdir=tmp_path)
    assert clean.uncommitted == ()
    write(repo / "README.md", "edited\n")
    write(repo / "new\x1bfile.txt", "n\n")
    tree = acquire(str(repo), ref=None, subdir=None, workdir=tmp_path)
    assert entry(tree, "README.md").data == b"v2\n"
    assert set(tree.uncommitted) == {"README.md", "new\\x1bfile.txt"}
    assert acquire(str(repo), ref="v1", subdir=None, workdir=tmp_path).uncommitted == ()


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def fixture_repo(tmp_path: Path, name: str) -> Path:
    root = tmp_path / name
    shutil.copytree(FIXTURES / name, root)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", name)
    return root


def test_an_npm_workspace_member_gets_the_root_manifest_and_lockfile(tmp_path: Path) -> None:
    root = fixture_repo(tmp_path, "monorepo")
    tree = acquire_source(str(root), ref=None, subdir="src/notes-ts")
    assert set(dict(tree.sent)) == {"package.json", "package-lock.json"}
    assert not any(p.startswith("src/weather-py/") for p in paths(tree))
    assert "README.md" not in paths(tree)
    assert source_info(tree).sent["package-lock.json"].startswith("npm:")
    python = acquire_source(str(root), ref=None, subdir="src/weather-py")
    assert python.sent == ()
    assert all(p.startswith("src/weather-py/") for p in paths(python))


def test_a_pnpm_member_gets_the_workspace_root_and_its_projects(tmp_path: Path) -> None:
    root = fixture_repo(tmp_path, "pnpm-server")
    tree = acquire_source(str(root), ref=None, subdir="packages/notes-mcp")
    assert set(dict(tree.sent)) == {"package.json", "pnpm-lock.yaml", "pnpm-workspace.yaml",
                                    "packages/notes-core"}
    assert "packages/notes-core/index.js" in paths(tree)
    assert source_info(tree).sent["packages/notes-core"].startswith("pnpm:")


def test_a_project_no_recipe_detects_is_sent_whole_and_says_why(tmp_path: Path) -> None:
    root = fixture_repo(tmp_path, "monorepo")
    tree = acquire_source(str(root), ref=None, subdir="src/weather-py/src")
    assert "README.md" in paths(tree) and "src/notes-ts/package.json" in paths(tree)
    assert "no recipe detects" in source_info(tree).sent["."]


def test_uncommitted_changes_become_a_report_warning(repo: Path, tmp_path: Path) -> None:
    write(repo / "pkg" / "server.py", "print('edited')\n")
    tree = acquire_source(str(repo), ref=None, subdir=None)
    (warning,) = source_warnings(tree)
    assert "1 uncommitted change(s)" in warning and "pkg/server.py" in warning
    assert "are not built" in warning


def test_a_server_that_will_not_serve_single_blobs_sends_the_commit_whole(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Protocol v0 without uploadpack.allowAnySHA1InWant refuses a blob by id (an older
    server): the blobs come with the pinned commit instead, still without history."""
    git(repo, "config", "uploadpack.allowFilter", "true")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[protocol]\n\tversion = 0\n")
    monkeypatch.setenv("HOME", str(home))
    tree = acquire(f"file://{repo}", ref=None, subdir="pkg", workdir=tmp_path / "w",
                   cache=tmp_path / "cache", needs=lambda look: ())
    assert entry(tree, "pkg/server.py").data == b"print('hi')\n"
    (kept,) = (tmp_path / "cache").glob("*.git")
    assert git(repo, "rev-parse", "HEAD~1") not in _objects(kept)


def test_a_url_resolves_a_short_sha_and_suggests_for_an_unknown_ref(
    repo: Path, tmp_path: Path
) -> None:
    v1 = git(repo, "rev-parse", "v1^{commit}")
    tree = acquire(f"file://{repo}", ref=v1[:10], subdir=None, workdir=tmp_path / "w",
                   cache=tmp_path / "cache")
    assert tree.commit == v1 and entry(tree, "README.md").data == b"v1\n"
    with pytest.raises(SourceError, match="unknown ref 'featur'") as info:
        acquire(f"file://{repo}", ref="featur", subdir=None, workdir=tmp_path / "w",
                cache=tmp_path / "cache")
    assert "feature" in (info.value.hint or "")
