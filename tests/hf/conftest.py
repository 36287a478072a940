"""HF fixtures: the gateway fixtures of tests/gateway (a real gateway on a real port, in-test
workers over the real JobStore)."""

from __future__ import annotations

from tests.gateway.conftest import make_gateway, workers  # noqa: F401 (fixtures)
