"""Launch's arguments -> podq's fields (serverless/launch/mapping.py), and the bundle runner's
pure request handling (worker/bundle_calls.py): tables."""

from __future__ import annotations

from typing import Any

import pytest

from serverless.errors import BadRequest
from serverless.launch import mapping
from serverless.launch.mapping import EndpointArgs
from serverless.launch.model import launch_status, response_of, traceback_of
from worker import bundle_calls
from worker.bundle_calls import ArgsRequest, UrlRequest


@pytest.mark.parametrize("memory,gb", [
    ("4Gi", 4.0), ("512Mi", 0.5), ("1Ti", 1024.0), ("8G", 8e9 / 2**30), (2**30, 1.0), ("1.5Gi", 1.5),
])
def test_memory_quantities_become_gib(memory: str | int, gb: float) -> None:
    assert mapping.memory_gb(memory) == pytest.approx(gb)


@pytest.mark.parametrize("memory", ["0Gi", "-1Gi", "lots", "4GB", ""])
def test_memory_that_is_not_a_positive_quantity_is_refused(memory: str) -> None:
    with pytest.raises(BadRequest, match=f"memory {memory!r} is not a positive amount; use e.g. '4Gi'"):
        mapping.memory_gb(memory)


@pytest.mark.parametrize("gpus,gpu_type,gpu_ids", [
    (0, None, "ANY"),
    (1, None, "ANY"),
    (1, "nvidia-tesla-t4", "T4"),
    (1, "nvidia-ampere-a10", "A10"),
    (2, "nvidia-ampere-a100", "AMPERE_80"),
    (1, "nvidia-ampere-a100e", "AMPERE_80"),
    (8, "nvidia-hopper-h100", "ADA_80_PRO"),
])
def test_launch_gpu_types_map_to_gpu_ids(gpus: int, gpu_type: str | None, gpu_ids: str) -> None:
    assert mapping.gpu_ids(gpus, gpu_type) == gpu_ids
    assert mapping.gpu_type_of(gpu_ids, gpus) == (None if gpu_type is None or not gpus else
                                                  "nvidia-ampere-a100" if gpu_ids == "AMPERE_80" else gpu_type)


@pytest.mark.parametrize("gpus,gpu_type,message", [
    (1, "nvidia-voodoo", "unknown gpu_type 'nvidia-voodoo'; use one of nvidia-tesla-t4, nvidia-ampere-a10, "),
    (1, "nvidia-hopper-h100-1g20gb", "gpu_type 'nvidia-hopper-h100-1g20gb' is a MIG slice of an H100, "
                                     "which podq does not schedule"),
    (0, "nvidia-tesla-t4", "gpu_type 'nvidia-tesla-t4' is set but gpus is 0; set gpus to 1 or more"),
])
def test_gpu_types_podq_cannot_give_are_refused(gpus: int, gpu_type: str, message: str) -> None:
    with pytest.raises(BadRequest) as e:
        mapping.gpu_ids(gpus, gpu_type)
    assert str(e.value).startswith(message)


def args(**kw: Any) -> EndpointArgs:
    return EndpointArgs(**{"endpoint_name": "ep", "bundle_name": "b", **kw})


def test_launch_defaults_on_a_container_backend_are_container_limits() -> None:
    fields = mapping.endpoint_fields(args(), "docker")
    assert fields == {
        "name": "ep", "template_id": "launch-ep", "gpu_count": 0, "gpu_ids": "ANY",
        "workers_min": 1, "workers_max": 1, "scaler_type": "REQUEST_COUNT", "scaler_value": 1,
        "cpus": 3.0, "memory_gb": 8.0, "labels": {}, "backend": "docker", "webhook": None,
    }


def test_on_the_process_backend_cpus_and_memory_are_not_applied_and_said_so() -> None:
    cpus, gb, note = mapping.resources(args(cpus=1), "process")
    assert (cpus, gb) == (0.0, 0.0)
    assert note == ("cpus=1 and memory=8Gi are not applied: the process backend cannot limit a worker; "
                    "use LaunchClient(..., backend='docker') (or swarm, kubernetes) to have them "
                    "applied as container limits")
    assert mapping.resources(args(cpus=2, memory="1Gi"), "kubernetes") == (2.0, 1.0, None)


@pytest.mark.parametrize("kw,field,value", [
    ({"per_worker": 4}, "scaler_value", 4),  # Launch: each worker serves per_worker requests
    ({"min_workers": 0, "max_workers": 5, "endpoint_type": "async"}, "workers_max", 5),
    ({"labels": {"team": "t"}}, "labels", {"team": "t"}),
    ({"post_inference_hooks": ["callback"], "default_callback_url": "https://h/x"}, "webhook", "https://h/x"),
    ({"default_callback_url": "https://h/x"}, "webhook", None),  # no callback hook: no webhook
])
def test_launch_settings_become_endpoint_fields(kw: dict[str, Any], field: str, value: Any) -> None:
    mapping.check_args(args(**kw))
    assert mapping.endpoint_fields(args(**kw), "process")[field] == value


def test_the_template_carries_the_bundle_per_worker_type_and_hooks() -> None:
    bundle = {"handler": "/x/worker/bundle.py", "env": {"PODQ_BUNDLE_ID": "b"}}
    fields = mapping.template_fields(args(per_worker=3, endpoint_type="streaming"), bundle)
    assert fields == {"name": "launch ep", "handler": "/x/worker/bundle.py", "image_name": "", "env": {
        "PODQ_BUNDLE_ID": "b", "PODQ_BUNDLE_CONCURRENCY": "3", "PODQ_LAUNCH_ENDPOINT_TYPE": "streaming",
        "PODQ_LAUNCH_HOOKS": ""}}


@pytest.mark.parametrize("kw,message", [
    ({"endpoint_type": "batch"}, "endpoint_type 'batch' is unknown; use sync, async or streaming"),
    ({"min_workers": 0}, "sync endpoints require at least 1 min_worker (Launch's rule)"),
    ({"min_workers": 0, "endpoint_type": "streaming"}, "streaming endpoints require at least 1 min_worker"),
    ({"per_worker": 0}, "per_worker is 0; use 1 or more requests per worker"),
    ({"cpus": 0}, "cpus is 0; use a positive number of CPUs"),
    ({"endpoint_name": "bad name"}, "endpoint_name 'bad name' is invalid"),
    ({"post_inference_hooks": ["logging"]}, "unknown post_inference_hooks 'logging'; podq has callback"),
    ({"post_inference_hooks": ["callback"]}, "the 'callback' post_inference_hook needs default_callback_url"),
])
def test_launch_rules_are_checked_first(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest) as e:
        mapping.check_args(args(**kw))
    assert str(e.value).startswith(message)


@pytest.mark.parametrize("status,launch", [
    ("pending", "UPDATE_PENDING"), ("initializing", "UPDATE_IN_PROGRESS"), ("running", "READY"),
    ("scaledToZero", "READY"), ("paused", "PAUSED"), ("failed", "UPDATE_FAILED"),
])
def test_endpoint_statuses_in_launchs_words(status: str, launch: str) -> None:
    assert mapping.launch_status(status) == launch


def test_settings_read_back_from_a_record() -> None:
    record = {"cpus": 2.0, "memory_gb": 4.0, "gpu_count": 1, "gpu_ids": "T4", "workers_min": 1,
              "workers_max": 3, "scaler_value": 2.0}
    assert mapping.resource_settings(record) == {"cpus": 2.0, "memory": "4Gi", "gpus": 1,
                                                 "gpu_type": "nvidia-tesla-t4"}
    assert mapping.worker_settings(record) == {"min_workers": 1, "max_workers": 3, "per_worker": 2}


# ---- responses ------------------------------------------------------------------------------

ERROR = '{"error_type": "<class \'ValueError\'>", "error_message": "x", "error_traceback": "Traceback: x"}'


@pytest.mark.parametrize("body,status,result,traceback", [
    ({"status": "COMPLETED", "output": {"a": 1}}, "SUCCESS", '{"a": 1}', None),
    ({"status": "COMPLETED", "output": None}, "SUCCESS", "null", None),
    ({"status": "FAILED", "error": ERROR}, "FAILURE", None, "Traceback: x"),
    ({"status": "FAILED", "error": "plain text"}, "FAILURE", None, "plain text"),
    ({"status": "TIMED_OUT"}, "FAILURE", None, "the job ended TIMED_OUT"),
    ({"status": "IN_QUEUE"}, "PENDING", None, None),
    ({"status": "IN_PROGRESS"}, "PENDING", None, None),
])
def test_job_bodies_become_launch_responses(body: dict[str, Any], status: str, result: str | None,
                                            traceback: str | None) -> None:
    response = response_of(None, body)
    assert (response.status, response.result, response.traceback, response.result_url) == (
        status, result, traceback, None)
    assert launch_status(body["status"]) == status
    if traceback:
        assert traceback_of(body) == traceback


# ---- the bundle runner's requests --------------------------------------------------------------


@pytest.mark.parametrize("value,expected", [
    ({"args": {"x": 1}}, ArgsRequest({"x": 1})),
    ({"args": [1, 2], "return_pickled": False}, ArgsRequest([1, 2])),
    ({"url": "https://files.example/a.jpg"}, UrlRequest("https://files.example/a.jpg")),
])
def test_requests_are_args_or_a_url(value: Any, expected: Any) -> None:
    assert bundle_calls.parse_request(value) == expected


@pytest.mark.parametrize("value,message", [
    ({"args": 1, "url": "http://x"}, "exactly one of `url` and `args` must be given"),
    ({}, "exactly one of `url` and `args` must be given"),
    ([1], "a Launch request is a JSON object with `args` or `url`, got list"),
    ({"args": 1, "return_pickled": True}, "return_pickled=True is not supported: podq never pickles"),
    ({"args": 1, "kwargs": 2}, "unknown request field(s) kwargs; send `args` or `url`"),
    ({"url": "file:///etc/passwd"}, "url 'file:///etc/passwd' is not an http(s) URL with a host"),
    ({"url": "http://"}, "url 'http://' is not an http(s) URL with a host"),
])
def test_bad_requests_fail_with_the_fix(value: Any, message: str) -> None:
    with pytest.raises(ValueError) as e:
        bundle_calls.parse_request(value)
    assert str(e.value).startswith(message)


def _kw(x: int, y: int = 0) -> None: ...
def _one(request: dict[str, Any]) -> None: ...


@pytest.mark.parametrize("fn,args,expected", [
    (_kw, {"x": 1, "y": 2}, ((), {"x": 1, "y": 2})),  # Launch: keys are predict's parameters
    (_kw, {"x": 1}, ((), {"x": 1})),
    (_one, {"x": 1}, (({"x": 1},), {})),  # Launch: predict_fn(REQUEST)
    (_one, {"request": 1}, ((), {"request": 1})),  # binds by name: keywords win
    (_one, [1, 2], (([1, 2],), {})),
    (_kw, "text", (("text",), {})),
])
def test_args_are_keywords_when_they_bind_else_the_one_argument(fn: Any, args: Any, expected: Any) -> None:
    assert bundle_calls.call_args(fn, args) == expected


@pytest.mark.parametrize("path,expected", [
    ("a.b.fn", ("a.b", "fn")), ("a.b:fn", ("a.b", "fn")), ("mod.fn", ("mod", "fn")),
])
def test_function_paths_split_into_module_and_name(path: str, expected: tuple[str, str]) -> None:
    assert bundle_calls.split_path(path) == expected


def test_requirement_sets_share_a_venv_whatever_their_order() -> None:
    key = bundle_calls.requirements_key(["b==1", "a==2"])
    assert key == bundle_calls.requirements_key([" a==2", "b==1", ""])
    assert key != bundle_calls.requirements_key(["a==2"])
