"""The bundle runner's venv (worker/bundle_setup.py): made once per requirement set, offline
here (the requirement is a wheel file built by the test)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from worker.bundle_setup import install_requirements

pytestmark = pytest.mark.timeout(120)


def tiny_wheel(folder: Path) -> Path:
    """A pure-Python wheel of one module, `podqtiny` (a wheel is a zip with metadata)."""
    path = folder / "podqtiny-1.0-py3-none-any.whl"
    info = "podqtiny-1.0.dist-info"
    files = {
        "podqtiny.py": "ANSWER = 42\n",
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: podqtiny\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


def test_requirements_are_installed_once_into_a_cached_venv(tmp_path: Path) -> None:
    assert install_requirements([], tmp_path) is None  # no requirements: no venv
    wheel = tiny_wheel(tmp_path)
    site = install_requirements([str(wheel)], tmp_path / "cache")
    assert site is not None and (site / "podqtiny.py").read_text() == "ANSWER = 42\n"
    marker = next((tmp_path / "cache" / "venvs").glob("*/.podq-ready"))
    made = marker.stat().st_mtime_ns
    assert install_requirements([str(wheel)], tmp_path / "cache") == site  # reused, not rebuilt
    assert marker.stat().st_mtime_ns == made
