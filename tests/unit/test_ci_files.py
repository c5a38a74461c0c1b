"""The CI files reprobuild ships are valid for the CIs that read them (SchemaStore's
schemas, as vendored by check-jsonschema: no network) and say what the docs say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).parents[2]
WORKFLOW = ROOT / "ci" / "github" / "reprobuild-nightly.yml"


@pytest.mark.parametrize(("path", "schema"), [
    (WORKFLOW, "vendor.github-workflows"),
    (ROOT / "action.yml", "vendor.github-actions"),
    (ROOT / "ci" / "gitlab" / "reprobuild.gitlab-ci.yml", "vendor.gitlab-ci"),
])
def test_ci_files_pass_their_schema(path: Path, schema: str) -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run([str(checker), "--builtin-schema", schema, str(path)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def steps(job: str) -> dict[str, dict[str, Any]]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    return {s.get("id") or s.get("name") or s.get("uses"): s
            for s in workflow["jobs"][job]["steps"]}


def test_the_workflow_shards_on_its_matrix_and_merges_everything() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    on = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads `on` as true
    assert "schedule" in on and "workflow_dispatch" in on
    check = workflow["jobs"]["check"]
    assert check["strategy"]["fail-fast"] is False
    assert check["strategy"]["matrix"]["shard"] == [1, 2, 3, 4]
    script = steps("check")["batch"]["run"]
    assert '--shard "${{ matrix.shard }}/${{ strategy.job-total }}"' in script
    merge = workflow["jobs"]["merge"]
    assert merge["needs"] == "check" and merge["if"] == "always()"
    assert merge["permissions"]["security-events"] == "write"
    assert "reprobuild merge shards/shard-*.json" in steps("merge")["merge"]["run"]
