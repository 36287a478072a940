"""Backend fixtures: the session's Docker engine and a docker backend on it.

Both skip, with dockerd's own words, where no Docker engine can run (tests/backends/docker_engine.py).
"""

from __future__ import annotations

import pytest

from scaler.backends.docker import DockerBackend
from tests.backends.docker_engine import DockerEngine, docker_engine  # noqa: F401  (a fixture)


@pytest.fixture
def docker_backend(docker_engine: DockerEngine) -> DockerBackend:  # noqa: F811
    """A DockerBackend on the test engine, whose default image runs the host's Python."""
    return DockerBackend(docker_engine.options())
