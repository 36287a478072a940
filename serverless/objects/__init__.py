"""Where podq keeps files (batch inputs and results, model bundles): a directory or S3.

    store = open_store(settings)        # LocalStore(settings.data_dir) or S3Store(...)
    await store.put("bundles/b-1.zip", data)

See objects/base.py for the interface both stores implement.
"""

from __future__ import annotations

from serverless.errors import ConfigError
from serverless.objects.base import CHUNK_BYTES, ObjectStore, check_key
from serverless.objects.local import LocalStore
from serverless.settings import Settings

__all__ = ["CHUNK_BYTES", "LocalStore", "ObjectStore", "check_key", "open_store"]


def open_store(settings: Settings) -> ObjectStore:
    """The store PODQ_OBJECT_STORE names (`s3://bucket/prefix`), else PODQ_DATA_DIR."""
    target = settings.object_store.strip()
    if not target:
        return LocalStore(settings.data_dir)
    if target.startswith("s3://"):
        from serverless.objects.s3 import S3Store  # aiobotocore is loaded only when used

        return S3Store.from_url(target, endpoint_url=settings.s3_endpoint_url or None)
    raise ConfigError(f"PODQ_OBJECT_STORE={target!r} is not understood: use s3://bucket[/prefix], "
                      "or leave it empty to keep files in PODQ_DATA_DIR")
