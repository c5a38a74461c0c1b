"""Unit tests never reach a Docker engine: make any attempt fail loudly."""

from __future__ import annotations

from typing import Any

import docker
import pytest


def _no_docker(*_args: Any, **_kwargs: Any) -> Any:
    raise AssertionError("unit tests must not talk to Docker; use tests/integration")


@pytest.fixture(autouse=True)
def _forbid_docker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(docker, "from_env", _no_docker)
    monkeypatch.setattr(docker, "DockerClient", _no_docker)
