"""Allow ``python -m reprobuild``."""

from reprobuild.cli import run

run()
