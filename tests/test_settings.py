from __future__ import annotations

import pytest

from serverless.errors import ConfigError, RedisUnavailable, redact_url
from serverless.queue import connect
from serverless.settings import load_settings
from serverless.redis_server import free_port


def test_settings_from_env() -> None:
    s = load_settings({"PODQ_REDIS_URL": "redis://h:1/2", "PODQ_LEASE_MS": "5000", "PODQ_ENDPOINT_ID": "e"})
    assert (s.redis_url, s.lease_ms, s.endpoint_id, s.max_attempts) == ("redis://h:1/2", 5000, "e", 3)


def test_bad_setting_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="PODQ_LEASE_MS has an invalid value"):
        load_settings({"PODQ_LEASE_MS": "soon"})


def test_redis_url_password_is_redacted() -> None:
    assert redact_url("redis://user:secret@host:6379/0") == "redis://user:***@host:6379/0"


async def test_unreachable_redis_error_names_url_and_fix() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(RedisUnavailable, match=f"Redis not reachable at {url}.*set PODQ_REDIS_URL"):
        await connect(url)


def test_an_s3_endpoint_without_an_s3_object_store_is_refused() -> None:
    with pytest.raises(ConfigError, match="PODQ_S3_ENDPOINT_URL='http://s3:8333' has no effect unless "
                                          "PODQ_OBJECT_STORE is s3://"):
        load_settings({"PODQ_S3_ENDPOINT_URL": "http://s3:8333"})
    both = load_settings({"PODQ_S3_ENDPOINT_URL": "http://s3:8333", "PODQ_OBJECT_STORE": "s3://b/p"})
    assert (both.object_store, both.s3_endpoint_url) == ("s3://b/p", "http://s3:8333")


def test_max_attempts_below_one_is_refused() -> None:
    with pytest.raises(ConfigError, match="PODQ_MAX_ATTEMPTS has an invalid value .*>= 1"):
        load_settings({"PODQ_MAX_ATTEMPTS": "0"})
