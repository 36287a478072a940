"""Backend fixtures: the session's Docker engine (plain and in swarm mode), and the docker and
swarm backends on it.

They skip, with dockerd's own words, where no Docker engine or no swarm can run
(tests/backends/docker_engine.py).
"""

from __future__ import annotations

import pytest

from scaler.backends.docker import DockerBackend
from scaler.backends.swarm import SwarmBackend
from tests.backends.docker_engine import (  # noqa: F401  (fixtures)
    DockerEngine,
    SwarmNode,
    docker_engine,
    swarm_engine,
)

SWARM_GRACE_S = 5.0  # the services' StopGracePeriod in the tests


@pytest.fixture
def docker_backend(docker_engine: DockerEngine) -> DockerBackend:  # noqa: F811
    """A DockerBackend on the test engine, whose default image runs the host's Python."""
    return DockerBackend(docker_engine.options())


@pytest.fixture
def swarm_backend(swarm_engine: SwarmNode) -> SwarmBackend:  # noqa: F811
    """A SwarmBackend on the test engine's one-node swarm, running the host's Python."""
    return SwarmBackend(swarm_engine.engine.options(), grace_s=SWARM_GRACE_S)
