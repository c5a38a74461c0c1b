"""Reports: the typed model (:mod:`.model`) and one module per output format.

:mod:`.formats` is the registry of formats (JSON, JUnit, SARIF). The model's names are
re-exported here because every command builds one.
"""

from reprobuild.report.model import (
    SCHEMA,
    BuildInfo,
    DifferenceInfo,
    DiffoscopeInfo,
    FetchInfo,
    OutputInfo,
    RecipeInfo,
    Report,
    SourceInfo,
    ToolchainInfo,
    Verdict,
    decide_verdict,
    exit_code_for,
)

__all__ = ["SCHEMA", "BuildInfo", "DifferenceInfo", "DiffoscopeInfo", "FetchInfo", "OutputInfo",
           "RecipeInfo", "Report", "SourceInfo", "ToolchainInfo", "Verdict", "decide_verdict",
           "exit_code_for"]
