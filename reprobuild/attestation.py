"""An in-toto Statement v1 with a SLSA Provenance v1 predicate for a verified release.

Written only for a match (``verify`` with every published file rebuilt bit for bit): its
subjects are the rebuilt published files' sha256 (a source archive the rebuild started
from is its source, not a subject), so anyone holding those files can check that
this statement speaks of them; the predicate says what reproduced them (the source commit
or source archive digest, the recipe, the toolchain image and its package versions, the
inferred release conditions, the fetch phase's pins and hashes, and the digest of the
egress log, which is empty for a clean build). README "Attestations" shows how a third
party checks it with standard tools. Signing (Sigstore) is left to the user's own
identity; an unsigned statement is a claim of this machine, which the reader reproduces.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any

from reprobuild import __version__
from reprobuild.report.model import Report, Verdict

__all__ = ["BUILD_TYPE", "PREDICATE_TYPE", "STATEMENT_TYPE", "egress_digest", "statement"]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "urn:reprobuild:verify:v1"
"""What ``buildDefinition`` means: reprobuild's ``verify`` rebuild of a published release."""


def _canonical(data: object) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def egress_digest(report: Report) -> str:
    """sha256 of the egress log as the report holds it (canonical JSON; ``[]`` if clean)."""
    return hashlib.sha256(_canonical([asdict(a) for a in report.egress])).hexdigest()


def statement(report: Report, *, started: str, finished: str) -> dict[str, Any]:
    """The statement for a verified match; ValueError for any other verdict."""
    info = report.verify
    if info is None or report.verdict is not Verdict.REPRODUCIBLE:
        raise ValueError("an attestation is only written when every published file matched")
    source: dict[str, Any] = {"uri": report.source.url}
    if report.source.commit:
        source["digest"] = {"gitCommit": report.source.commit}
    elif info.source_sha256:
        source["digest"] = {"sha256": info.source_sha256}
    else:
        source["digest"] = {"sha256": report.source.tree_sha256}
        source["annotations"] = {"digestOf": "reprobuild tree_sha256 of the source files"}
    dependencies = [source, {
        "uri": f"docker-image:{report.toolchain.image}",
        "digest": {"sha256": report.toolchain.image_id.removeprefix("sha256:")},
        "annotations": {"definition_sha256": report.toolchain.definition_sha256,
                        "versions": report.toolchain.versions}}]
    if report.fetch is not None:
        for spec, digest in sorted(report.fetch.hashes.items()):
            algo, _, value = digest.partition(":")
            dependencies.append({"name": spec, "digest": {algo: value}})
    conditions = info.conditions
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": a.name, "digest": {"sha256": a.published_sha256}}
                    for a in info.artifacts if a.equivalence == "identical"],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "source": report.source.url, "subdir": report.source.subdir,
                    "release": info.release, "recipe": report.recipe.name,
                    "overrides": list(conditions.overrides)},
                "internalParameters": {
                    "commands": list(report.recipe.commands),
                    "conditions": {"facts": list(conditions.facts),
                                   "pins": list(conditions.pins),
                                   "env": conditions.env, "cutoff": conditions.cutoff,
                                   "details": conditions.details},
                    "fetch": None if report.fetch is None else {
                        "strategy": report.fetch.strategy, "key": report.fetch.key,
                        "pins": report.fetch.pins}},
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {"id": "urn:reprobuild:builder",
                            "version": {"reprobuild": __version__}},
                "metadata": {"startedOn": started, "finishedOn": finished},
                "byproducts": [{"name": "egress-log",
                                "digest": {"sha256": egress_digest(report)},
                                "annotations": {"attempts": len(report.egress)}}],
            },
        },
    }


def render(data: dict[str, Any]) -> bytes:
    """The statement as indented JSON (what ``--attest`` writes)."""
    return (json.dumps(data, indent=2, sort_keys=False) + "\n").encode()
