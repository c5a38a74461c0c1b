"""The batch file, shards and the combined exit code, without Docker."""

from __future__ import annotations

from pathlib import Path

import pytest

from reprobuild.errors import InputError
from reprobuild.pipeline.batch import (
    Target,
    combined_exit,
    default_jobs,
    load_batch,
    parse_shard,
    select_shard,
    shard_of,
)
from reprobuild.report.batch import merge


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "batch.toml"
    path.write_text(text)
    return path


def test_a_batch_file_is_read_into_targets_and_their_command_lines(tmp_path: Path) -> None:
    targets = load_batch(write(tmp_path, '''schema = 1
[[target]]
name = "time"
source = "https://git.example/servers.git"
ref = "2026.7.10"
subdir = "src/time"
verify = "pypi:mcp-server-time==2026.7.10"

[[target]]
name = "go.server"
source = "/srv/repo"
variations = "all,-cpus"
timeout = 600
explain_budget = "20m"
'''))
    assert [t.name for t in targets] == ["time", "go.server"]
    assert targets[0].argv() == ["verify", "https://git.example/servers.git", "--ref",
                                 "2026.7.10", "--subdir", "src/time", "--against",
                                 "pypi:mcp-server-time==2026.7.10"]
    assert targets[1].argv() == ["check", "/srv/repo", "--variations", "all,-cpus",
                                 "--timeout", "600", "--explain-budget", "20m"]


@pytest.mark.parametrize(("text", "message"), [
    ('[[target]]\nname = "a"\n', r"target 1 \(a\): missing source"),
    ('[[target]]\nname = "a"\nsource = "x"\nrefs = "v1"\n',
     r"unknown key 'refs'.*did you mean 'ref'"),
    ('[[target]]\nname = "a"\nsource = "x"\ntimeout = "long"\n', "timeout has the wrong type"),
    ('[[target]]\nname = "a"\nsource = "x"\ntimeout = true\n', "timeout has the wrong type"),
    ('[[target]]\nname = "a b"\nsource = "x"\n', "is not a simple name"),
    ('[[target]]\nname = "a"\nsource = "x"\n[[target]]\nname = "a"\nsource = "y"\n',
     "used twice"),
    ("schema = 2\n", "schema: 2 is not supported"),
    ("schema = 1\n", "no targets"),
    ("[[target]\n", "invalid TOML"),
    ("jobs = 3\n", "unknown key 'jobs'"),
    ('[[target]]\nname = "a"\nsource = "x"\nverify = true\nexplain_budget = 8\n',
     "explain_budget is for check targets"),
])
def test_bad_batch_files_say_what_and_where(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        load_batch(write(tmp_path, text))
    assert str(tmp_path / "batch.toml") in info.value.message


def test_shards_partition_the_targets_and_adding_one_moves_no_other() -> None:
    targets = [Target(index=i, name=f"server-{i}", source="x") for i in range(40)]
    shards = [select_shard(targets, (i, 4)) for i in (1, 2, 3, 4)]
    assert sorted(t.name for s in shards for t in s) == sorted(t.name for t in targets)
    assert all(shards), "40 targets over 4 shards leave none empty"
    before = {t.name: shard_of(t.name, 4) for t in targets}
    grown = [*targets, Target(index=40, name="new-server", source="y")]
    assert {t.name: shard_of(t.name, 4) for t in grown if t.name in before} == before
    assert select_shard(targets, None) == targets
    assert parse_shard("2/4") == (2, 4)
    for bad in ("0/4", "5/4", "2", "a/b"):
        with pytest.raises(InputError, match="is not I/N"):
            parse_shard(bad)


def test_the_batch_exit_code_is_the_most_severe() -> None:
    assert combined_exit([0, 1, 4, 3, 2]) == 3
    assert combined_exit([0, 1, 4, 2]) == 2
    assert combined_exit([0, 1, 4]) == 4
    assert combined_exit([0, 6, 1]) == 1
    assert combined_exit([0, 6]) == 6
    assert combined_exit([3, 5]) == 5
    assert combined_exit([5, 130]) == 130
    assert combined_exit([]) == 0
    assert default_jobs() >= 1


def test_merge_orders_by_the_batch_file_and_refuses_a_shard_twice() -> None:
    one = {"schema": "reprobuild.batch/v1", "targets": [
        {"index": 2, "name": "c", "exit_code": 1}, {"index": 0, "name": "a", "exit_code": 0}]}
    two = {"schema": "reprobuild.batch/v1", "targets": [{"index": 1, "name": "b",
                                                          "exit_code": 3}]}
    merged = merge([one, two], combined_exit=combined_exit)
    assert [t["name"] for t in merged["targets"]] == ["a", "b", "c"]
    assert merged["exit_code"] == 3 and merged["shard"] == "merged"
    with pytest.raises(ValueError, match="more than one report"):
        merge([one, one], combined_exit=combined_exit)


def test_history_says_what_changed_and_is_append_only(tmp_path: Path) -> None:
    from reprobuild.pipeline import history  # noqa: PLC0415

    night1 = history.HistoryRecord(name="srv", time=1796000000.0, verdict="reproducible",
                                   exit_code=0, commit="a" * 40, toolchain="sha256:1",
                                   pins="p1", egress=())
    night2 = history.HistoryRecord(name="srv", time=1796086400.0, verdict="egress",
                                   exit_code=3, commit="b" * 40, toolchain="sha256:2",
                                   pins="p2", egress=("x.example:443",))
    said = history.changes(night1, night2)
    assert said[0] == "regression: reproducible on 2026-11-30, egress now"
    assert "new egress destination(s): x.example:443" in said
    assert {"toolchain image changed", "fetched pins changed"} <= set(said)
    assert history.changes(night2, night1)[0].startswith("fixed: egress on 2026-12-01")
    assert history.changes(None, night1) == []
    assert history.changes(night1, night1) == []
    # Two writers (shards) at once never share a file; records come back in time order.
    for record in (night2, night1, night1):
        history.append(tmp_path, record)
    assert [r.verdict for r in history.load(tmp_path, "srv")] == [
        "reproducible", "reproducible", "egress"]
    assert len(list((tmp_path / "srv").glob("*.json"))) == 3
    (tmp_path / "srv" / "junk.json").write_text("{not json")
    assert len(history.load(tmp_path, "srv")) == 3
    with pytest.raises(InputError, match="not a target name"):
        history.load(tmp_path, "../etc")
