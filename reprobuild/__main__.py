"""Allow ``python -m reprobuild``."""

from reprobuild.cli import main

main()
