"""Boolean query parameters: one parser (serverless/gateway/query_params.py) as a table, and
every route with a flag refusing a bad value with the same 400 over real HTTP."""

from __future__ import annotations

import pytest
from multidict import MultiDict, MultiDictProxy

from serverless.errors import BadRequest
from serverless.gateway.query_params import query_flag
from tests.gateway.conftest import Gateway


@pytest.mark.parametrize("raw,expected", [
    ("true", True), ("TRUE", True), ("True", True), ("tRuE", True), ("1", True),
    ("false", False), ("FALSE", False), ("False", False), ("fAlSe", False), ("0", False),
])
def test_true_false_1_and_0_in_any_case_are_flags(raw: str, expected: bool) -> None:
    assert query_flag({"f": raw}, "f") is expected
    assert query_flag({"f": raw}, "f", default=not expected) is expected  # a given value beats the default


@pytest.mark.parametrize("default", [False, True])
def test_an_absent_flag_is_its_default(default: bool) -> None:
    assert query_flag({"other": "true"}, "f", default=default) is default


def test_the_default_default_is_false() -> None:
    assert query_flag({}, "f") is False


@pytest.mark.parametrize("raw", ["", "yes", "no", "on", "off", "t", "f", "2", "-1", "01", " true", "true "])
def test_anything_else_is_a_400_naming_the_parameter_the_value_and_the_fix(raw: str) -> None:
    with pytest.raises(BadRequest) as refused:
        query_flag({"f": raw}, "f", default=True)
    assert str(refused.value) == f"f={raw!r} is not a flag; use ?f=true or ?f=false"
    assert refused.value.status_code == 400


def test_a_request_query_is_read_like_a_dict() -> None:
    # aiohttp's request.query is a MultiDictProxy; .get() gives the first of repeated values
    query = MultiDictProxy(MultiDict([("f", "0"), ("f", "yes")]))
    assert query_flag(query, "f", default=True) is False


@pytest.mark.parametrize("name,method,path,body", [
    ("update_if_exists", "POST", "/v1/endpoints?update_if_exists=yes", {"name": "x", "template_id": "tpl-x"}),
    ("low_priority", "POST", "/v1/batches?endpoint_id={ep}&low_priority=yes", None),
])
async def test_every_route_refuses_a_bad_flag_with_the_same_400(
    gateway: Gateway, registered: str, name: str, method: str, path: str, body: dict | None,
) -> None:
    data = b"1\n" if method == "POST" and body is None else None
    answer = await gateway.call(method, path.format(ep=registered), json=body, data=data)
    assert answer.status == 400, answer.body
    assert answer.body == {"error": f"{name}='yes' is not a flag; use ?{name}=true or ?{name}=false"}
