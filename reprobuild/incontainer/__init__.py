"""Programs that run inside containers, not in reprobuild's process.

Each module here is shipped into a container as its own source (or bytecode) and run by
the image's ``/usr/bin/python3 -I -S``: the sandbox's PID 1 (:mod:`.trap_agent`) and the
fetch phase's allow-list proxy and relay (:mod:`.fetch_proxy`). So they import the
standard library only, never ``reprobuild`` (the images do not have it), which
``tests/unit/test_layout.py`` enforces. Their host-side counterparts are
:mod:`reprobuild.sandbox.agent` and :mod:`reprobuild.fetch`.
"""

from pathlib import Path

__all__ = ["program_path"]


def program_path(name: str) -> Path:
    """Where the in-container program ``name`` (a module of this folder) lives."""
    return Path(__file__).with_name(f"{name}.py")
