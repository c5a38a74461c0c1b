"""The architecture as rules a test can check: layers, no cycles, knowledge where it belongs.

ARCHITECTURE.md draws the same map; when a module moves, both change together.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "reprobuild"

# Lowest first. A module may import modules of its own layer or below, never above.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("reprobuild",),
    ("reprobuild.errors", "reprobuild.progress", "reprobuild.atomic", "reprobuild.hashing",
     "reprobuild.evidence", "reprobuild.incontainer", "reprobuild.incontainer.*"),
    ("reprobuild.source", "reprobuild.hashlock", "reprobuild.images.definitions",
     "reprobuild.images"),
    ("reprobuild.archive", "reprobuild.variations", "reprobuild.forensics"),
    ("reprobuild.sandbox.engine", "reprobuild.sandbox.hardening", "reprobuild.sandbox.agent",
     "reprobuild.sandbox"),
    ("reprobuild.images.build", "reprobuild.sandbox.spec", "reprobuild.sandbox.container"),
    ("reprobuild.ecosystems.interface",),
    ("reprobuild.ecosystems.*",),
    ("reprobuild.ecosystems",),
    ("reprobuild.recipes",),
    ("reprobuild.report.*",),
    ("reprobuild.report", "reprobuild.attestation"),
    ("reprobuild.explain.*",),
    ("reprobuild.explain",),
    ("reprobuild.compare", "reprobuild.fetch.*"),
    ("reprobuild.fetch",),
    ("reprobuild.pipeline.*",),
    ("reprobuild.pipeline",),
    ("reprobuild.cli.*",),
    ("reprobuild.cli",),
    ("reprobuild.__main__",),
)

# Words only an ecosystem's own package may use in code (docstrings and comments count:
# knowledge written down belongs with the code that has it). pip is not among them: the
# toolchain images are assembled with pip (images.py) from locks in pip's hashed format
# (hashlock.py), whatever ecosystem a project belongs to.
ECOSYSTEM_WORDS = re.compile(
    r"\b(npm|pnpm|yarn|hatchling|uv\.lock|package-lock|nvmrc|engines\.node|go\.mod|go\.sum|"
    r"Cargo\.(toml|lock)|pyproject\.toml)\b")


def _module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports: ``from x import y`` is ``x.y`` when that is a module
    of ours (a submodule), else ``x``."""
    known = _modules()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in known else node.module)
    return found


def _layer(module: str) -> int:
    for index, layer in enumerate(LAYERS):
        for pattern in layer:
            if module == pattern or (pattern.endswith(".*")
                                     and module.startswith(pattern[:-1])):
                return index
    raise AssertionError(f"{module} is in no layer of tests/unit/test_layout.py")


def _internal_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {m for m in _imports(path) if m in modules and m != name}
            for name, path in modules.items()}


def test_every_module_has_a_layer() -> None:
    for module in _modules():
        _layer(module)


def test_no_module_imports_one_above_it() -> None:
    wrong = [f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})"
             for module, targets in _internal_graph().items() for target in targets
             if _layer(target) > _layer(module)]
    assert wrong == []


def test_no_import_cycles() -> None:
    graph = _internal_graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append([*trail[trail.index(target):], target])
            elif target not in state:
                visit(target, [*trail, target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


@pytest.mark.parametrize("path", sorted((PACKAGE / "incontainer").glob("*.py")),
                         ids=lambda p: p.name)
def test_programs_that_run_in_containers_import_the_standard_library_only(path: Path) -> None:
    foreign = sorted(m for m in _imports(path)
                     if m.split(".")[0] not in sys.stdlib_module_names
                     and m.split(".")[0] != "__future__")
    if path.name == "__init__.py":  # the package marker is imported by the host
        foreign = [m for m in foreign if not m.startswith("pathlib")]
    assert foreign == [], f"{path.name} must run with the image's bare python3 -I -S"


def test_ecosystem_knowledge_lives_in_its_ecosystem() -> None:
    leaks = []
    for module, path in _modules().items():
        if module.startswith(("reprobuild.ecosystems.", "reprobuild.incontainer")):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if ECOSYSTEM_WORDS.search(line):
                leaks.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert leaks == []


def test_the_rules_above_can_fail(tmp_path: Path) -> None:
    """The checks see real imports and words (a rule that finds nothing proves nothing)."""
    sample = tmp_path / "sample.py"
    sample.write_text("from reprobuild.cli import main\nimport docker\n# runs npm ci\n")
    assert {"reprobuild.cli", "docker"} <= _imports(sample)
    assert _layer("reprobuild.cli") > _layer("reprobuild.errors")
    assert ECOSYSTEM_WORDS.search(sample.read_text())


def test_bad_input_is_reported_without_loading_the_docker_sdk(tmp_path: Path) -> None:
    """The Docker SDK is a third of the start-up: a typo must not pay for it."""
    code = ("import sys\nfrom reprobuild.cli import main\n"
            "try:\n    main(['check', sys.argv[1]])\nexcept SystemExit as exc:\n"
            "    print(exc.code, 'docker' in sys.modules, 'rich' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "missing")],
                          capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["2", "False", "True"], proc.stdout + proc.stderr


def test_the_console_script_and_python_m_exit_through_run(tmp_path: Path) -> None:
    """Both entry points end in ``run``, which keeps main's exit codes and messages and
    freezes what is alive for a quick shutdown (a test calling ``main`` keeps its own gc)."""
    import tomllib  # noqa: PLC0415

    scripts = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"reprobuild": "reprobuild.cli:run"}
    assert "from reprobuild.cli import run\n\nrun()" in (PACKAGE / "__main__.py").read_text()
    code = ("import gc, sys\nfrom reprobuild.cli import run\n"
            "sys.argv[1:] = ['check', sys.argv[1]]\ntry:\n    run()\nexcept SystemExit as exc:\n"
            "    print(exc.code, gc.get_freeze_count() > 0)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "missing")],
                          capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["2", "True"], proc.stdout + proc.stderr
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr
    code = "import gc\nfrom reprobuild.cli import main\ntry:\n    main(['--version'])\n" \
           "except SystemExit as exc:\n    print(exc.code, gc.get_freeze_count())\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.split()[-2:] == ["0", "0"], proc.stdout + proc.stderr
