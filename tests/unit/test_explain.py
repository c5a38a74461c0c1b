"""The explanation without Docker: the search against a model of a build, the symptoms of
real archives, the classes, diffoscope's leaves, the findings and the report round trip."""

from __future__ import annotations

import gzip
import io
import itertools
import json
import tarfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

import pytest

from reprobuild import ecosystems
from reprobuild.errors import InputError
from reprobuild.explain.causes import (
    CAUSES,
    VARIATION_CLASS,
    CauseClass,
    classify,
    fix_hint,
    marked,
    reordered,
    shifted_by_clock,
    time_only,
)
from reprobuild.explain.findings import Sides, causes_of, findings, suspects
from reprobuild.explain.leaves import excerpt, leaves
from reprobuild.explain.search import (
    Attribution,
    AttributionKind,
    Budget,
    GroupSearch,
    bound,
    parse_budget,
)
from reprobuild.explain.symptoms import Aspect, Observation, Symptom, observe
from reprobuild.report import DifferenceInfo, DiffoscopeInfo, FindingInfo, Report, Verdict
from reprobuild.report.json import render
from reprobuild.report.load import load, parse
from reprobuild.report.markdown import index_markdown
from reprobuild.variations import Variation, markers, plan_pair

from .test_compare_report import _report

ALL = tuple(Variation)


# --------------------------------------------------------------------------- the search

Model = Callable[[frozenset[Variation]], set[str]]


def _model(causes: dict[str, set[Variation]], *, unstable: Iterable[str] = (),
           together: dict[str, set[Variation]] | None = None) -> Model:
    """A build: a symptom shows when any of its causes is varied (all, for ``together``);
    an unstable one in every build."""
    def build(group: frozenset[Variation]) -> set[str]:
        shown = {s for s, vs in causes.items() if vs & group} | set(unstable)
        shown |= {s for s, vs in (together or {}).items() if vs <= group}
        return shown
    return build


def _run(search: GroupSearch[str], build: Model) -> int:
    count = 0
    while tests := search.next_round():
        for test in tests:
            count += 1
            search.record(test, build(test.group))
    return count


def _b(build: Model) -> set[str]:
    return build(frozenset(ALL))


@pytest.mark.parametrize("culprit", ALL)
def test_one_culprit_is_found_within_the_bound(culprit: Variation) -> None:
    build = _model({"s": {culprit}})
    search = GroupSearch(ALL, _b(build))
    builds = _run(search, build)
    assert search.outcome()["s"] == Attribution(AttributionKind.VARIATION, (culprit,),
                                                search.outcome()["s"].evidence)
    assert builds <= bound(len(ALL), 0, 1) == 9


@pytest.mark.parametrize("pair", list(itertools.combinations(ALL, 2)))
def test_two_culprits_of_two_symptoms_are_both_found(pair: tuple[Variation, Variation]) -> None:
    build = _model({"first": {pair[0]}, "second": {pair[1]}})
    search = GroupSearch(ALL, _b(build))
    builds = _run(search, build)
    outcome = search.outcome()
    assert outcome["first"].culprits == (pair[0],)
    assert outcome["second"].culprits == (pair[1],)
    assert builds <= bound(len(ALL), 0, 2)


def test_a_symptom_either_variation_causes_names_both() -> None:
    build = _model({"s": {Variation.USER, Variation.HOME}})
    search = GroupSearch(ALL, _b(build))
    _run(search, build)
    assert search.outcome()["s"].kind is AttributionKind.VARIATION
    assert search.outcome()["s"].culprits == (Variation.USER, Variation.HOME)


def test_right_suspects_cost_one_build_each_plus_control_and_rest() -> None:
    build = _model({"modes": {Variation.UMASK}, "owners": {Variation.USER}})
    search = GroupSearch(ALL, _b(build), suspects=(Variation.UMASK, Variation.USER))
    assert _run(search, build) == 4  # control, umask, user, all the others
    assert search.outcome()["modes"].culprits == (Variation.UMASK,)
    assert search.outcome()["owners"].culprits == (Variation.USER,)
    assert bound(len(ALL), 2, 2) >= 4


def test_a_wrong_suspect_costs_a_build_and_the_answer_stays_right() -> None:
    build = _model({"s": {Variation.LOCALE}})
    search = GroupSearch(ALL, _b(build), suspects=(Variation.CLOCK,))
    builds = _run(search, build)
    assert search.outcome()["s"].culprits == (Variation.LOCALE,)
    assert builds <= bound(len(ALL), 1, 1)


def test_what_the_control_shows_is_unstable_and_not_searched() -> None:
    build = _model({"s": {Variation.CPUS}}, unstable=["random"])
    search = GroupSearch(ALL, _b(build))
    builds = _run(search, build)
    outcome = search.outcome()
    assert outcome["random"].kind is AttributionKind.UNSTABLE
    assert outcome["random"].culprits == ()
    assert outcome["random"].evidence == ("x1",)
    assert outcome["s"].culprits == (Variation.CPUS,)
    assert builds <= bound(len(ALL), 0, 1)


def test_only_unstable_symptoms_need_just_the_first_round() -> None:
    build = _model({}, unstable=["random"])
    search = GroupSearch(ALL, _b(build))
    assert _run(search, build) == 3  # control and the two halves


def test_a_combination_is_reported_together() -> None:
    build = _model({}, together={"s": {Variation.CLOCK, Variation.UMASK}})
    search = GroupSearch(ALL, _b(build))
    _run(search, build)
    found = search.outcome()["s"]
    assert found.kind is AttributionKind.TOGETHER
    assert {Variation.CLOCK, Variation.UMASK} <= set(found.culprits)


def test_a_failed_build_leaves_its_group_undecided() -> None:
    build = _model({"s": {Variation.TIMEZONE}})
    search = GroupSearch(ALL, _b(build))
    while tests := search.next_round():
        for test in tests:
            fails = Variation.TIMEZONE in test.group and len(test.group) < 4
            search.record(test, None if fails else build(test.group))
    found = search.outcome()["s"]
    assert found.kind is AttributionKind.UNDECIDED
    assert Variation.TIMEZONE in found.culprits


def test_one_variation_needs_only_the_control() -> None:
    build = _model({"s": {Variation.HOSTNAME}})
    search = GroupSearch((Variation.HOSTNAME,), {"s"})
    assert _run(search, build) == 1
    assert search.outcome()["s"] == Attribution(AttributionKind.VARIATION,
                                                (Variation.HOSTNAME,), ("b", "x1"))
    assert bound(1, 0, 1) == 1


@pytest.mark.parametrize(("text", "budget"), [
    ("8", Budget(builds=8)), ("8 builds", Budget(builds=8)), ("1 build", Budget(builds=1)),
    ("600s", Budget(seconds=600)), ("10m", Budget(seconds=600)), ("2.5min", Budget(seconds=150)),
])
def test_budget_parses_builds_or_time(text: str, budget: Budget) -> None:
    assert parse_budget(text) == budget


@pytest.mark.parametrize("text", ["", "x", "0", "-3", "1.5", "10h", "8 build s"])
def test_a_bad_budget_is_one_clear_error(text: str) -> None:
    with pytest.raises(InputError, match="--explain-budget"):
        parse_budget(text)


# --------------------------------------------------------------------------- symptoms


def _zip(path: Path, members: dict[str, tuple[bytes, int]]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, (data, mode) in members.items():
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 2, 3, 4, 6))
            info.external_attr = (0o100000 | mode) << 16
            info.create_system = 3
            archive.writestr(info, data)
    return path


def _tgz(path: Path, members: list[tuple[str, bytes, int, str]], *, header_time: int) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data, mtime, owner in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), mtime, 0o644
            info.uname = info.gname = owner
            archive.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(raw.getvalue(), mtime=header_time))
    return path


def test_identical_files_show_nothing(tmp_path: Path) -> None:
    a = _zip(tmp_path / "a.whl", {"x.py": (b"1", 0o644)})
    b = _zip(tmp_path / "b.whl", {"x.py": (b"1", 0o644)})
    assert observe("x.whl", a, b) == {}


def test_zip_symptoms_are_per_member_and_aspect(tmp_path: Path) -> None:
    a = _zip(tmp_path / "a.whl", {"pkg/a.py": (b"1", 0o644), "pkg/b.py": (b"2", 0o644)})
    b = _zip(tmp_path / "b.whl", {"pkg/a.py": (b"1", 0o664), "pkg/b.py": (b"3", 0o644),
                                  "pkg/new.py": (b"", 0o644)})
    found = observe("x.whl", a, b)
    assert set(found) == {Symptom("x.whl", "pkg/a.py", Aspect.MODE),
                          Symptom("x.whl", "pkg/b.py", Aspect.CONTENT),
                          Symptom("x.whl", "pkg/new.py", Aspect.PRESENCE)}
    assert found[Symptom("x.whl", "pkg/a.py", Aspect.MODE)] == Observation("-rw-r--r--",
                                                                           "-rw-rw-r--")


def test_tar_symptoms_read_times_owners_order_and_the_gzip_header(tmp_path: Path) -> None:
    a = _tgz(tmp_path / "a.tar.gz", [("p/A", b"a", 100, "builder"), ("p/B", b"b", 100, "x")],
             header_time=1_780_000_000)
    b = _tgz(tmp_path / "b.tar.gz", [("p/B", b"b", 100, "x"), ("p/A", b"a", 160, "rebuilder")],
             header_time=1_780_000_000 + 398 * 86400)
    found = observe("x.tar.gz", a, b)
    assert set(found) == {Symptom("x.tar.gz", "p/A", Aspect.MTIME),
                          Symptom("x.tar.gz", "p/A", Aspect.OWNER),
                          Symptom("x.tar.gz", "", Aspect.ORDER),
                          Symptom("x.tar.gz", "gzip_mtime", Aspect.HEADER_TIME)}
    assert found[Symptom("x.tar.gz", "p/A", Aspect.MTIME)].seconds == 60
    assert found[Symptom("x.tar.gz", "gzip_mtime", Aspect.HEADER_TIME)].seconds == 398 * 86400


def test_a_plain_file_or_a_missing_one_is_one_symptom(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"\x7fELF one")
    (tmp_path / "b").write_bytes(b"\x7fELF two")
    assert set(observe("server", tmp_path / "a", tmp_path / "b")) == {
        Symptom("server", "", Aspect.CONTENT)}
    assert set(observe("server", tmp_path / "a", None)) == {
        Symptom("server", "", Aspect.PRESENCE)}


# --------------------------------------------------------------------------- causes


def test_time_only_masks_dates_times_and_unix_seconds() -> None:
    assert time_only(b"built 2026-12-01T15:13:01.5+00:00\n", b"built 2026-12-01T15:13:09.1+00:00\n")
    assert time_only(b"Tue Dec  1 15:02:20 2026", b"Tue Dec  1 15:02:21 2026")
    assert time_only(b"stamp=1780000000", b"stamp=1780000042")
    assert not time_only(b"id=1568b2f91a0d7a62", b"id=80676610d8246c4b")
    assert not time_only(b"same", b"same")


def test_the_same_bytes_in_another_order_are_a_reordering() -> None:
    assert reordered(b"files=a,b,c\n", b"files=c,b,a\n")
    assert reordered(b"x\nlocale=stz\n", b"x\nlocale=szt\n")
    assert not reordered(b"cpus=2", b"cpus=1")
    assert not reordered(b"abc", b"abcd")


def test_the_clock_shift_is_recognised_in_dates_and_seconds() -> None:
    assert shifted_by_clock(b"date 2026-12-01", b"date 2028-01-03")
    assert shifted_by_clock(b"t=1780000000", b"t=" + str(1780000000 + 398 * 86400).encode())
    assert not shifted_by_clock(b"date 2026-12-01", b"date 2026-12-02")


def test_markers_name_the_variation_that_wrote_them() -> None:
    _, b = plan_pair(ALL, host_cpus=2)
    found = markers(b)
    assert marked(b"/home/builder", b"/home/rebuilder", found) == (Variation.HOME,)
    assert marked(b"by builder", b"by rebuilder", found) == (Variation.USER,)
    assert marked(b"at /build/src/x.py", b"at /var/tmp/rebuild/second-build/src/x.py",
                  found) == (Variation.BUILD_PATH,)
    assert marked(b"on reprobuild-a", b"on rebuild-b", found) == (Variation.HOSTNAME,)
    assert marked(b"+0000", b"+1400", found) == (Variation.TIMEZONE,)
    assert marked(b"same", b"same", found) == ()
    assert marked(b"umask=0o22", b"umask=0o2", found) == (Variation.UMASK,)
    assert marked(b"mode 0o2", b"mode 0o22", found) == ()
    _, only_user = plan_pair({Variation.USER}, host_cpus=2)
    assert set(markers(only_user)) == {Variation.USER}


VARIED = Attribution(AttributionKind.VARIATION, (), ("b",))


@pytest.mark.parametrize(("aspect", "attribution", "only_time", "expected"), [
    (Aspect.MTIME, replace(VARIED, kind=AttributionKind.UNSTABLE), False,
     CauseClass.EMBEDDED_TIMESTAMP),
    (Aspect.HEADER_TIME, replace(VARIED, culprits=(Variation.CLOCK,)), False,
     CauseClass.EMBEDDED_TIMESTAMP),
    (Aspect.MODE, replace(VARIED, culprits=(Variation.UMASK,)), False,
     CauseClass.ARCHIVE_METADATA),
    (Aspect.OWNER, replace(VARIED, culprits=(Variation.USER,)), False,
     CauseClass.ARCHIVE_METADATA),
    (Aspect.ORDER, replace(VARIED, culprits=(Variation.FILE_ORDER,)), False,
     CauseClass.ARCHIVE_METADATA),
    (Aspect.CONTENT, replace(VARIED, kind=AttributionKind.UNSTABLE), True,
     CauseClass.EMBEDDED_TIMESTAMP),
    (Aspect.CONTENT, replace(VARIED, kind=AttributionKind.UNSTABLE), False,
     CauseClass.RANDOMNESS),
    (Aspect.CONTENT, replace(VARIED, kind=AttributionKind.UNDECIDED,
                             culprits=(Variation.CLOCK, Variation.USER)), False,
     CauseClass.CONTENT),
    (Aspect.CONTENT, replace(VARIED, kind=AttributionKind.UNDECIDED,
                             culprits=(Variation.TIMEZONE, Variation.LOCALE)), False,
     CauseClass.LOCALE_TIMEZONE),
    *((Aspect.CONTENT, replace(VARIED, culprits=(v,)), False, c)
      for v, c in VARIATION_CLASS.items()),
])
def test_each_class_is_what_its_evidence_says(aspect: Aspect, attribution: Attribution,
                                              only_time: bool, expected: CauseClass) -> None:
    assert classify(aspect, attribution, only_time=only_time) is expected


def test_every_class_has_words_and_every_ecosystem_hint_a_class() -> None:
    assert set(CAUSES) == set(CauseClass)
    assert set(VARIATION_CLASS) == set(Variation)
    known = {c.value for c in CauseClass}
    for ecosystem in ecosystems.ECOSYSTEMS:
        assert set(ecosystem.fix_hints) <= known, ecosystem.name


def test_the_fix_is_sharpest_for_the_culprit_and_names_the_tool() -> None:
    python = ecosystems.get("python-build").fix_hints
    umask = fix_hint(CauseClass.ARCHIVE_METADATA, [Variation.UMASK], ecosystem=python)
    assert umask.startswith("file modes follow the builder's umask")
    assert "setuptools" in umask
    owner = fix_hint(CauseClass.ARCHIVE_METADATA, [Variation.USER])
    assert "--owner=0" in owner
    go = fix_hint(CauseClass.BUILD_PATH, [Variation.BUILD_PATH],
                  ecosystem=ecosystems.get("go-mod").fix_hints)
    assert "-trimpath" in go
    assert fix_hint(CauseClass.CONTENT, []) == CAUSES[CauseClass.CONTENT].fix


# --------------------------------------------------------------------------- leaves


DIFFOSCOPE = {
    "diffoscope-json-version": 1, "source1": "/in/a/x.whl", "source2": "/in/b/x.whl",
    "unified_diff": None,
    "details": [
        {"source1": "zipinfo {}", "source2": "zipinfo {}",
         "unified_diff": "@@ -1,4 +1,4 @@\n-Zip file size: 1254 bytes, number of entries: 2\n"
                         "+Zip file size: 1252 bytes, number of entries: 2\n"
                         "--rw-r--r--  2.0 unx 11 b- defN 26-Jan-02 03:04 pkg/_stamp.txt\n"
                         "+-rw-r--r--  2.0 unx 10 b- defN 26-Jan-02 03:04 pkg/_stamp.txt\n"
                         "-2 files, 688 bytes uncompressed, 534 bytes compressed:  22.4%\n"
                         "+2 files, 687 bytes uncompressed, 532 bytes compressed:  22.6%\n"},
        {"source1": "pkg/_stamp.txt", "source2": "pkg/_stamp.txt",
         "unified_diff": "@@ -1 +1 @@\n-built=2026-12-01\n+built=2028-01-03\n"},
        {"source1": "x.dist-info/RECORD", "source2": "x.dist-info/RECORD",
         "unified_diff": "@@ -1,2 +1,2 @@\n-pkg/_stamp.txt,sha256=abc,11\n"
                         "+pkg/_stamp.txt,sha256=def,10\n x.dist-info/RECORD,,\n"},
    ],
}


def test_leaves_put_the_changed_line_before_the_listing() -> None:
    found = leaves(DIFFOSCOPE)
    assert [x.path for x in found] == [("zipinfo {}",), ("pkg/_stamp.txt",),
                                       ("x.dist-info/RECORD",)]
    assert found[0].listing and not found[1].listing
    text = excerpt(found)
    lines = text.splitlines()
    assert lines[:3] == ["pkg/_stamp.txt", "  - built=2026-12-01", "  + built=2028-01-03"]
    assert "Zip file size" not in text and "bytes uncompressed" not in text
    assert lines[-3] == "zipinfo {}"


def test_the_excerpt_keeps_to_its_line_budget() -> None:
    many = {"details": [{"source1": f"m{i}", "unified_diff": "-a\n+b\n"} for i in range(30)]}
    text = excerpt(leaves(many), max_lines=10)
    assert len(text.splitlines()) <= 10
    assert text.splitlines()[-1].startswith("… 27 more difference(s)")


def test_a_deep_report_is_walked_without_recursion() -> None:
    node: dict[str, object] = {"source1": "leaf", "unified_diff": "-x\n+y\n"}
    for depth in range(5000):
        node = {"source1": f"d{depth}", "details": [node]}
    assert len(leaves(node)) == 1


# --------------------------------------------------------------------------- findings


def _diff_sides() -> tuple[dict[Symptom, Attribution], dict[Symptom, Observation], Sides]:
    stamp = Symptom("x.whl", "pkg/_stamp.txt", Aspect.CONTENT)
    record = Symptom("x.whl", "x.dist-info/RECORD", Aspect.CONTENT)
    mode = Symptom("x.whl", "pkg/__init__.py", Aspect.MODE)
    outcome = {stamp: Attribution(AttributionKind.VARIATION, (Variation.CLOCK,), ("x4",)),
               record: Attribution(AttributionKind.VARIATION, (Variation.CLOCK,), ("x4",)),
               mode: Attribution(AttributionKind.VARIATION, (Variation.UMASK,), ("x3",))}
    observed = {stamp: Observation("11 bytes", "10 bytes"),
                record: Observation("90 bytes", "89 bytes"),
                mode: Observation("-rw-r--r--", "-rw-rw-r--")}
    sides = Sides(a={stamp: b"built=2026-12-01\n"}, b={stamp: b"built=2028-01-03\n"},
                  control={})
    return outcome, observed, sides


def test_findings_group_members_by_cause_and_fold_manifests_into_their_source() -> None:
    outcome, observed, sides = _diff_sides()
    found = findings(outcome, observed, sides, leaves={"x.whl": leaves(DIFFOSCOPE)},
                     ecosystem_hints={"archive-metadata": "the tool's own advice"})["x.whl"]
    by_cause = {f.cause: f for f in found}
    assert set(by_cause) == {"embedded-timestamp", "archive-metadata"}
    stamp = by_cause["embedded-timestamp"]
    assert stamp.members == ("pkg/_stamp.txt", "x.dist-info/RECORD")
    assert stamp.culprits == ("clock",) and stamp.attribution == "variation"
    assert stamp.example == "pkg/_stamp.txt: built=2026-12-01 → built=2028-01-03"
    assert stamp.what == "content of 2 members"
    modes = by_cause["archive-metadata"]
    assert modes.example == "pkg/__init__.py mode: -rw-r--r-- → -rw-rw-r--"
    assert modes.hint.endswith("; the tool's own advice")
    assert causes_of(found) == ("embedded-timestamp", "archive-metadata")


def test_unstable_differences_are_build_time_or_nondeterministic() -> None:
    when = Symptom("x.whl", "stamp", Aspect.CONTENT)
    rand = Symptom("x.whl", "seed", Aspect.CONTENT)
    unstable = Attribution(AttributionKind.UNSTABLE, (), ("x1",))
    found = findings({when: unstable, rand: unstable},
                     {when: Observation("", ""), rand: Observation("", "")},
                     Sides(a={when: b"at 15:13:01.57", rand: b"id 1568b2f9"}, b={},
                           control={when: b"at 15:13:04.02", rand: b"id 80676610"}))["x.whl"]
    by_member = {f.members[0]: f for f in found}
    assert (by_member["stamp"].attribution, by_member["stamp"].culprits,
            by_member["stamp"].cause) == ("build-time", ("clock",), "embedded-timestamp")
    assert (by_member["seed"].attribution, by_member["seed"].culprits,
            by_member["seed"].cause) == ("nondeterministic", (), "randomness")


def test_suspects_come_from_what_the_difference_looks_like() -> None:
    _, b = plan_pair(ALL, host_cpus=2)
    content = Symptom("x", "m", Aspect.CONTENT)
    observed = {Symptom("x", "m", Aspect.MODE): Observation("", ""),
                Symptom("x", "n", Aspect.OWNER): Observation("", ""),
                Symptom("x", "gzip_mtime", Aspect.HEADER_TIME): Observation(
                    "", "", 398 * 86400.0 + 3),
                content: Observation("", "")}
    sides = Sides(a={content: b"HOME=/home/builder"}, b={content: b"HOME=/home/rebuilder"},
                  control={})
    assert suspects(observed, sides, markers(b)) == (
        Variation.USER, Variation.UMASK, Variation.HOME, Variation.CLOCK)


# --------------------------------------------------------------------------- report


def _explained_report() -> tuple[Report, FindingInfo]:
    finding = FindingInfo(cause="embedded-timestamp", label="embedded timestamp",
                          aspect="content", what="content of 1 member", members=("m",),
                          culprits=("clock",), attribution="variation", evidence=("x2",),
                          example="m: 2026 → 2028", hint="use SOURCE_DATE_EPOCH")
    info = DiffoscopeInfo(text="diffoscope/p w.whl/diffoscope.txt",
                          html="diffoscope/p w.whl/diffoscope.html", exit_code=1,
                          timed_out=False, excerpt="m\n  - ```x\n  + ````y\n",
                          json="diffoscope/p w.whl/diffoscope.json")
    report = replace(_report(Verdict.UNREPRODUCIBLE), differences=(
        DifferenceInfo(path="p w.whl", sha256_a="1", sha256_b="2", diffoscope=info,
                       findings=(finding,)),))
    return report, finding


def test_a_json_report_reads_back_as_the_same_report(tmp_path: Path) -> None:
    report, _ = _explained_report()
    path = tmp_path / "report.json"
    path.write_bytes(render(report))
    assert load(path) == report
    assert load(tmp_path) == report


@pytest.mark.parametrize(("data", "message"), [
    ({"verdict": "x"}, "not a reprobuild report"),
    ({"schema": "other/v9"}, "is not reprobuild.report/v1"),
    ({"schema": "reprobuild.report/v1", "verdict": "error", "builds": []}, "ended in an error"),
    ({"schema": "reprobuild.report/v1", "verdict": "maybe", "builds": [1]}, "verdict"),
])
def test_what_is_not_a_report_is_refused_naming_why(data: dict[str, object],
                                                     message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse(data)


def test_the_index_links_every_report_and_no_excerpt_escapes_its_block() -> None:
    report, _ = _explained_report()
    text = index_markdown(report)
    assert "[HTML](<diffoscope/p%20w.whl/diffoscope.html>)" in text
    assert "[report.json](<report.json>)" in text
    assert "| embedded timestamp | clock |" in text
    fence = next(line for line in text.splitlines() if line.startswith("```"))
    assert fence == "`````"  # longer than the longest run of backticks inside
    assert json.dumps(text)  # plain text, no control characters


# --------------------------------------------------------------------------- the terminal


def test_the_last_line_recaps_verdict_causes_and_evidence(
        capsys: pytest.CaptureFixture[str]) -> None:
    from reprobuild.cli.summary import print_summary  # noqa: PLC0415 - rich, lazily

    report, finding = _explained_report()
    hostile = replace(finding, example="m: \x1b]0;pwned\x07 → x", members=("\x1b[2Jm",))
    report = replace(report, out_dir="/results", differences=(
        replace(report.differences[0], findings=(hostile,)),))
    print_summary(report, verbose=True)
    shown = capsys.readouterr().out
    assert "\x1b" not in shown and "\x07" not in shown
    assert "\\x1b]0;pwned\\x07" in shown
    assert "fix (embedded timestamp): use SOURCE_DATE_EPOCH" in shown
    last = shown.rstrip("\n").splitlines()[-1]
    assert last == ("UNREPRODUCIBLE · 1 of 1 artifact(s) differ · causes: embedded timestamp "
                    "(clock) · 2.5s · evidence: /results/summary.md")


def test_network_attempts_are_one_row_per_destination_unless_verbose(
        capsys: pytest.CaptureFixture[str]) -> None:
    from reprobuild.cli.summary import print_egress  # noqa: PLC0415

    report = _report(Verdict.EGRESS, egress=8)
    print_egress(report)
    grouped = capsys.readouterr().out
    assert grouped.count("x.example") == 1
    assert "│ 8 " in grouped or " 8 │" in grouped
    print_egress(report, verbose=True)
    assert capsys.readouterr().out.count("x.example") == 8


def test_ci_reports_carry_each_finding_and_its_fix() -> None:
    from reprobuild.report.junit import render as junit  # noqa: PLC0415
    from reprobuild.report.sarif import to_sarif  # noqa: PLC0415

    report, _ = _explained_report()
    result = to_sarif(report)["runs"][0]["results"][0]
    assert result["ruleId"] == "RB001"
    assert "embedded timestamp (clock): content of 1 member; fix: use SOURCE_DATE_EPOCH" \
        in result["message"]["text"]
    assert b"embedded timestamp (clock): content of 1 member; fix: use SOURCE_DATE_EPOCH" \
        in junit(report)


def test_a_minified_line_is_cut_in_the_excerpt() -> None:
    diff = f"-{'a' * 5000}\n+{'b' * 5000}\n"
    one = {"details": [{"source1": "app.min.js", "unified_diff": diff}]}
    text = excerpt(leaves(one))
    assert len(text) < 1000 and "[line cut at 300 characters]" in text
