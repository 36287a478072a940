"""The pure part of the admin routes: bodies derived from the records, patches and versions."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from serverless.errors import BadRequest
from serverless.gateway.admin_routes import (
    EndpointBody,
    EndpointPatch,
    TemplateBody,
    fields_of,
    patched_endpoint,
    rolled,
)
from serverless.model import EndpointConfig, EndpointStatus, ScalerType

CURRENT = EndpointConfig(
    id="ep-1", name="a", template_id="tpl-1", status=EndpointStatus.RUNNING, updated_at=1
)


@pytest.mark.parametrize("changes,version", [
    ({"workers_max": 5}, 1),            # scaling settings apply to running workers
    ({"paused": True}, 1),              # pausing stops workers; nothing to roll
    ({"idle_timeout": 30}, 1),
    ({"template_id": "tpl-2"}, 2),      # a new template: old workers run the old one
    ({"gpu_count": 2}, 2),              # workers hold the GPUs they were started with
    ({"gpu_ids": "AMPERE_80"}, 2),
    ({"backend": "docker"}, 2),
    ({"template_id": "tpl-1"}, 1),      # the same template is no change
])
def test_a_patch_bumps_the_version_when_workers_must_be_replaced(
    changes: dict[str, Any], version: int
) -> None:
    new = patched_endpoint(CURRENT, changes, now=99)
    assert new.version == version and new.updated_at == 99
    assert all(getattr(new, k) == v for k, v in changes.items())


def test_a_patched_or_rolled_record_carries_no_status() -> None:
    # the status lives apart (Registry.set_status); writing it into the config would be stale
    for record in (patched_endpoint(CURRENT, {}, now=2), rolled(CURRENT, now=2)):
        assert (record.status, record.status_reason) == (EndpointStatus.PENDING, "")
        assert b"status" not in msgspec.json.encode(record)
    assert rolled(CURRENT, now=2).version == 2


def test_bodies_have_the_records_fields_and_defaults() -> None:
    body = msgspec.json.decode(b'{"name": "a", "template_id": "t"}', type=EndpointBody)
    assert fields_of(body) == {
        f: getattr(EndpointConfig(id="x", name="a", template_id="t"), f)
        for f in fields_of(body)
    }
    assert fields_of(body)["scaler_type"] is ScalerType.QUEUE_DELAY
    template = msgspec.json.decode(b'{"name": "a", "id": "tpl-x"}', type=TemplateBody)
    assert template.id == "tpl-x" and "id" not in fields_of(template)


def test_a_patch_sets_only_the_fields_it_names() -> None:
    patch = msgspec.json.decode(b'{"workers_max": 2, "scaler_type": "REQUEST_COUNT"}',
                                type=EndpointPatch)
    assert fields_of(patch) == {"workers_max": 2, "scaler_type": ScalerType.REQUEST_COUNT}
    bad = msgspec.json.decode(b'{"scaler_type": "fast"}', type=EndpointPatch)
    message = "unknown scaler_type 'fast'; use QUEUE_DELAY or REQUEST_COUNT"
    with pytest.raises(BadRequest, match=message):
        fields_of(bad)
