"""Launch fixtures: settings whose object store is a temporary folder, and the demo bundle."""

from __future__ import annotations

from pathlib import Path

import pytest

from serverless.settings import Settings

DEMO = Path(__file__).parent / "bundles" / "demo"


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return Settings(redis_url=redis_url, lease_ms=2_000, heartbeat_ms=300,
                    data_dir=str(tmp_path / "data"))
