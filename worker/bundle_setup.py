"""Getting a model bundle ready on a worker: fetch its zip, unpack it, install its requirements.

The zip is read from the object store directly (PODQ_DATA_DIR or PODQ_OBJECT_STORE, which the
bundle's template env sets to the gateway's), so a worker needs no gateway key. Everything is
cached under PODQ_BUNDLE_CACHE (default ~/.cache/podq/bundles) and shared by the workers of a
host:

    <cache>/code/<sha256 of the zip>/        the unpacked bundle (its digest checked first)
    <cache>/venvs/<hash of requirements>/    a venv with --system-site-packages (podq's own
                                              dependencies stay visible), made once per set

A bundle without requirements gets no venv. The venv is made with this interpreter and its
site-packages put at the front of sys.path: the bundle runs in the worker process itself, like
any handler (no second interpreter to start or talk to). Each step runs under a file lock and
ends by renaming a finished directory into place (or writing a marker), so workers starting at
once never see half a bundle and a crash leaves nothing that looks finished.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from serverless.errors import ConfigError
from serverless.objects import open_store
from serverless.settings import Settings
from worker.bundle_calls import requirements_key

ENV = "PODQ_BUNDLE_"
CACHE_ENV = "PODQ_BUNDLE_CACHE"
PIP_TIMEOUT_S = 1_800


@dataclass(frozen=True)
class BundleSpec:
    """What the template env says about the bundle to run (serverless/gateway/bundle_routes)."""

    bundle_id: str
    archive: str
    sha256: str
    load_model_fn: str
    load_predict_fn: str
    requirements: list[str] = field(default_factory=list)
    app_config: str = ""  # JSON object text, "" for none
    concurrency: int = 1

    @classmethod
    def from_env(cls, env: dict[str, str] | os._Environ[str]) -> BundleSpec:
        missing = [k for k in ("ID", "ARCHIVE", "SHA256", "LOAD_MODEL_FN", "LOAD_PREDICT_FN")
                   if not env.get(ENV + k)]
        if missing:
            raise ConfigError(f"the bundle runner needs {', '.join(ENV + k for k in missing)}; "
                              "start it from a bundle's template (its `env` from GET /v1/bundles/{id})")
        concurrency = env.get(ENV + "CONCURRENCY", "1")
        if not concurrency.isdigit() or int(concurrency) < 1:
            raise ConfigError(f"{ENV}CONCURRENCY={concurrency!r}; use a whole number of 1 or more")
        return cls(
            bundle_id=env[ENV + "ID"], archive=env[ENV + "ARCHIVE"], sha256=env[ENV + "SHA256"],
            load_model_fn=env[ENV + "LOAD_MODEL_FN"], load_predict_fn=env[ENV + "LOAD_PREDICT_FN"],
            requirements=[r for r in env.get(ENV + "REQUIREMENTS", "").splitlines() if r.strip()],
            app_config=env.get(ENV + "APP_CONFIG", ""), concurrency=int(concurrency),
        )


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "podq" / "bundles")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def fetch_archive(spec: BundleSpec, settings: Settings) -> bytes:
    """The bundle's zip from the object store, its sha256 checked."""

    async def get() -> bytes:
        store = open_store(settings)
        try:
            return await store.get(spec.archive)
        finally:
            await store.close()

    data = asyncio.run(get())
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        raise ConfigError(f"bundle {spec.bundle_id!r}: the archive's sha256 is {digest}, the template "
                          f"expects {spec.sha256}; the bundle was replaced: update the endpoint")
    return data


def unpack(spec: BundleSpec, settings: Settings, root: Path) -> Path:
    """The bundle's code directory (fetched and unpacked on first use)."""
    target = root / "code" / spec.sha256
    with _locked(target):
        if target.is_dir():
            return target
        data = fetch_archive(spec, settings)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{spec.sha256[:12]}."))
        try:
            _extract(data, staging)
            staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return target


def _extract(data: bytes, into: Path) -> None:
    """Extract with every path checked again (the gateway checked too; this is the worker's
    own guard, as the archive crossed a store)."""
    base = into.resolve()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            dest = (base / info.filename).resolve()
            if dest != base and base not in dest.parents:
                raise ConfigError(f"bundle entry {info.filename!r} points outside the bundle")
        archive.extractall(base)


def venv_site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python*/site-packages"))
    if not found:
        raise ConfigError(f"venv {venv} has no lib/python*/site-packages")
    return found[0]


def install_requirements(requirements: list[str], root: Path) -> Path | None:
    """The site-packages of a venv holding `requirements` (made on first use); None when there
    are none."""
    if not requirements:
        return None
    venv = root / "venvs" / requirements_key(requirements)
    ready = venv / ".podq-ready"
    with _locked(venv):
        if not ready.exists():
            shutil.rmtree(venv, ignore_errors=True)  # a half-made one from a crash
            _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)])
            _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                  "-q", *requirements])
            ready.write_text("\n".join(requirements))
    return venv_site_packages(venv)


def _run(command: list[str]) -> None:
    print(f"podq bundle: {' '.join(command)}", file=sys.stderr, flush=True)
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=PIP_TIMEOUT_S, check=False)
    sys.stderr.write(done.stdout.decode(errors="replace"))
    if done.returncode:
        raise ConfigError(f"`{' '.join(command[:4])} ...` failed (exit {done.returncode}); see the "
                          "output above (read_endpoint_creation_logs)")


def prepare(spec: BundleSpec, settings: Settings) -> None:
    """Make the bundle importable: its code first on sys.path, its requirements' venv next."""
    root = cache_root()
    code = unpack(spec, settings, root)
    site = install_requirements(spec.requirements, root)
    if site is not None:
        sys.path.insert(0, str(site))
    sys.path.insert(0, str(code))
