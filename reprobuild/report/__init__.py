"""Reports: the typed model (:mod:`.model`) and one module per output format.

:mod:`.formats` is the registry of formats (JSON, JUnit, SARIF). The model's names are
re-exported here because every command builds one.
"""

from reprobuild.report.model import (
    SCHEMA,
    ArtifactInfo,
    BuildInfo,
    ConditionsInfo,
    DifferenceInfo,
    DiffoscopeInfo,
    ExplainBuildInfo,
    ExplanationInfo,
    FetchInfo,
    FindingInfo,
    OutputInfo,
    PublishedInfo,
    RecipeInfo,
    Report,
    SourceInfo,
    ToolchainInfo,
    Verdict,
    VerifyInfo,
    decide_verdict,
    exit_code_for,
)

__all__ = ["SCHEMA", "ArtifactInfo", "BuildInfo", "ConditionsInfo", "DifferenceInfo",
           "DiffoscopeInfo", "ExplainBuildInfo", "ExplanationInfo", "FetchInfo", "FindingInfo",
           "OutputInfo", "PublishedInfo", "RecipeInfo", "Report",
           "SourceInfo", "ToolchainInfo", "Verdict", "VerifyInfo", "decide_verdict",
           "exit_code_for"]
