"""serverless.hf.mapping: Hugging Face's arguments -> podq's template and endpoint fields.

Each row reads as a sentence from Hugging Face's docs and says where podq applies it."""

from __future__ import annotations

import msgspec
import pytest

from serverless.errors import BadRequest
from serverless.hf.mapping import (
    unapplied_size,
    HFArgs, access_of, compute, create_bodies, gpu_ids_of, image, joined_env, model_env,
    refuse_unsupported, scaler, scaling, size_of, start_cmd, type_of, update_bodies,
)
from serverless.model import EndpointAccess, EndpointConfig, Template
from serverless.registry import GPU_POOLS, check_gpu_ids

# the arguments of huggingface_hub's CPU example (hf_api.create_inference_endpoint's docstring)
CPU = HFArgs(repository="gpt2", framework="pytorch", task="text-generation", accelerator="cpu",
             vendor="aws", region="us-east-1", type="protected", instance_size="x2",
             instance_type="intel-icl", handler="examples/hf/handler.py")


@pytest.mark.parametrize("accelerator,instance_type,size,backend,expected", [
    # a GPU instance: its model, xN = N GPUs per replica
    ("gpu", "nvidia-a10g", "x1", "process", {"gpu_ids": "A10G", "gpu_count": 1}),
    ("gpu", "nvidia-t4", "x4", "docker", {"gpu_ids": "T4", "gpu_count": 4, "cpus": 0.0,
                                         "memory_gb": 0.0}),  # no CPU limits on a GPU
    ("gpu", "nvidia-l4", "x1", "process", {"gpu_ids": "L4", "gpu_count": 1}),
    ("gpu", "nvidia-l40s", "x8", "kubernetes", {"gpu_ids": "L40S", "gpu_count": 8, "cpus": 0.0,
                                               "memory_gb": 0.0}),
    # a pool id where the pool is that one model
    ("gpu", "nvidia-a100", "x2", "process", {"gpu_ids": "AMPERE_80", "gpu_count": 2}),
    ("gpu", "nvidia-h100", "x8", "process", {"gpu_ids": "ADA_80_PRO", "gpu_count": 8}),
    ("gpu", "nvidia-h200", "x1", "process", {"gpu_ids": "HOPPER_141", "gpu_count": 1}),
    ("gpu", "nvidia-b200", "x1", "process", {"gpu_ids": "BLACKWELL_180", "gpu_count": 1}),
    # podq's own pool ids and ANY are taken as the instance type too
    ("gpu", "AMPERE_24", "x1", "process", {"gpu_ids": "AMPERE_24", "gpu_count": 1}),
    ("gpu", "any", "x2", "process", {"gpu_ids": "ANY", "gpu_count": 2}),
    # a CPU: no GPU; the size limits the worker where the backend can (a container)
    ("cpu", "intel-icl", "x2", "process", {"gpu_ids": "ANY", "gpu_count": 0}),
    ("cpu", "intel-spr", "x4", "docker", {"gpu_ids": "ANY", "gpu_count": 0, "cpus": 4.0,
                                          "memory_gb": 8.0}),
])
def test_hardware_becomes_gpu_ids_and_counts(accelerator, instance_type, size, backend, expected) -> None:
    fields = compute(accelerator, instance_type, size, backend)
    assert fields == expected
    check_gpu_ids(fields["gpu_ids"])  # what the registry accepts


def test_every_pool_the_table_names_exists() -> None:
    from serverless.hf.mapping import GPU_TYPES
    assert {v for v in GPU_TYPES.values() if "_" in v} <= set(GPU_POOLS)


@pytest.mark.parametrize("call,message", [
    (lambda: compute("neuron", "inf2", "x1", "process"),
     "accelerator 'neuron' is not supported; podq runs workers on cpu or gpu"),
    (lambda: gpu_ids_of("nvidia-v100"), "instance_type 'nvidia-v100' is not a GPU podq knows"),
    (lambda: size_of("medium"), "instance_size 'medium' is not supported; use x1, x2, x4 or x8"),
    (lambda: size_of("x0"), "instance_size 'x0' is not supported"),
    (lambda: scaling(1, 2, 15), "scale_to_zero_timeout needs min_replica=0 (it is 1)"),
    (lambda: scaling(0, 2, -1), "scale_to_zero_timeout is -1; give minutes, 0 or more"),
    (lambda: scaler("hardwareUsage", 80), "scaling_metric 'hardwareUsage' is not supported"),
    (lambda: access_of("internal"), "type 'internal' is not an endpoint type"),
    (lambda: image({"vLLM": {"url": "vllm/vllm-openai"}}), "has no `url`; podq runs a worker image"),
    (lambda: image({"url": "me/w:1", "port": 80}), "custom_image field(s) port are not supported"),
    (lambda: image({"url": "me/w:1", "health_route": "/ping"}),
     "custom_image health_route '/ping' is not supported"),
    (lambda: start_cmd(None, ["--port", "80"]), "container_args need container_command"),
    (lambda: joined_env(("env", {"HF_MODEL_ID": "x"})), "env sets HF_MODEL_ID; it comes from repository="),
    (lambda: joined_env(("env", {"A": "1"}), ("secrets", {"A": "2"})), "A is set twice (secrets and before)"),
    (lambda: refuse_unsupported(domain="x.example.com"), "domain='x.example.com' is not supported"),
    (lambda: refuse_unsupported(tensor_parallel_size=8), "tensor_parallel_size=8 is not supported"),
])
def test_what_podq_cannot_honour_is_refused_naming_the_fix(call, message) -> None:
    with pytest.raises(BadRequest, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        call()


@pytest.mark.parametrize("min_replica,max_replica,minutes,expected", [
    (1, 1, None, {"workers_min": 1, "workers_max": 1}),  # HF's defaults: one replica, always
    (0, 4, 15, {"workers_min": 0, "workers_max": 4, "idle_timeout": 900}),  # idle 15 min -> zero
    (0, 1, 0, {"workers_min": 0, "workers_max": 1, "idle_timeout": 0}),
    (2, 6, None, {"workers_min": 2, "workers_max": 6}),
])
def test_replicas_and_scale_to_zero_timeout(min_replica, max_replica, minutes, expected) -> None:
    assert scaling(min_replica, max_replica, minutes) == expected


@pytest.mark.parametrize("metric,threshold,expected", [
    (None, None, {}),  # podq's default: QUEUE_DELAY
    ("pendingRequests", 3.0, {"scaler_type": "REQUEST_COUNT", "scaler_value": 3.0}),
    ("pendingRequests", None, {"scaler_type": "REQUEST_COUNT", "scaler_value": 1}),
])
def test_pending_requests_scaling_is_request_count(metric, threshold, expected) -> None:
    assert scaler(metric, threshold) == expected


@pytest.mark.parametrize("kind,access,reported", [
    ("public", EndpointAccess.PUBLIC, "public"),
    ("authenticated", EndpointAccess.PROTECTED, "authenticated"),  # huggingface_hub 2.x
    ("protected", EndpointAccess.PROTECTED, "protected"),  # huggingface_hub 0.x, HF's docs
    ("private", EndpointAccess.PRIVATE, "private"),
])
def test_type_is_access_and_is_reported_as_spelled(kind, access, reported) -> None:
    assert access_of(kind) is access
    assert type_of(access, kind) == reported
    assert type_of(EndpointAccess.PUBLIC, kind) == "public"  # an admin changed it since


def test_model_arguments_are_the_env_hf_containers_read() -> None:
    assert model_env("gpt2", "6c0e608", "text-generation") == {
        "HF_MODEL_ID": "gpt2", "HF_MODEL_REVISION": "6c0e608", "HF_TASK": "text-generation"}
    assert model_env("gpt2", None, None) == {"HF_MODEL_ID": "gpt2"}


@pytest.mark.parametrize("custom_image,expected", [
    (None, ("", {})),
    ({"url": "me/worker:1"}, ("me/worker:1", {})),
    # the seed's TGI example: health_route and env
    ({"health_route": "/health", "env": {"MAX_INPUT_LENGTH": 1024}, "url": "me/tgi-worker:1"},
     ("me/tgi-worker:1", {"MAX_INPUT_LENGTH": "1024"})),
    ({"custom": {"url": "me/worker:1", "healthRoute": "/health"}}, ("me/worker:1", {})),
])
def test_custom_image_is_the_template_image(custom_image, expected) -> None:
    assert image(custom_image) == expected


def test_create_bodies_for_huggingface_hubs_cpu_example() -> None:
    args = HFArgs(**{**{f: getattr(CPU, f) for f in CPU.__struct_fields__},
                     "env": {"MAX_TOKENS": "64"}, "secrets": {"API_TOKEN": "s3cret"},
                     "tags": ["dev", "text"], "min_replica": 0, "max_replica": 2,
                     "scale_to_zero_timeout": 15})
    template, endpoint = create_bodies("my-endpoint-name", args)
    assert template == {
        "id": "hf-my-endpoint-name", "name": "my-endpoint-name", "image_name": "",
        "docker_start_cmd": None, "handler": "examples/hf/handler.py",
        "env": {"MAX_TOKENS": "64", "API_TOKEN": "s3cret", "HF_MODEL_ID": "gpt2",
                "HF_TASK": "text-generation"},
    }
    assert endpoint == {
        "id": "my-endpoint-name", "name": "my-endpoint-name", "template_id": "hf-my-endpoint-name",
        "backend": "process", "access": "protected", "gpu_ids": "ANY", "gpu_count": 0,
        "workers_min": 0, "workers_max": 2, "idle_timeout": 900,
        "labels": {"hf.framework": "pytorch", "hf.vendor": "aws", "hf.region": "us-east-1",
                   "hf.accelerator": "cpu", "hf.instance_type": "intel-icl",
                   "hf.instance_size": "x2", "hf.type": "protected", "hf.secrets": "API_TOKEN",
                   "hf.tags": "dev,text"},
    }


def test_create_without_anything_to_run_names_the_fix() -> None:
    args = HFArgs(**{**{f: getattr(CPU, f) for f in CPU.__struct_fields__}, "handler": None})
    with pytest.raises(BadRequest, match=r"podq has no managed image for repository='gpt2': give "
                                         r"custom_image=\{'url': '<a podq worker image>'\}"):
        create_bodies("e", args)


def test_container_command_is_the_start_command() -> None:
    assert start_cmd(["python", "-u", "/app/handler.py"], ["--log", "debug info"]) == \
        "python -u /app/handler.py --log 'debug info'"


def _current() -> tuple[EndpointConfig, Template]:
    template_body, endpoint_body = create_bodies("e", CPU)
    return msgspec.convert(endpoint_body, EndpointConfig), Template(**template_body)


@pytest.mark.parametrize("changes,template_patch,endpoint_patch", [
    # a new model: the template's env (the endpoint rolls its workers)
    ({"repository": "gpt2-large"}, {"env": {"HF_MODEL_ID": "gpt2-large", "HF_TASK": "text-generation"}}, {}),
    ({"revision": "abc"}, {"env": {"HF_MODEL_ID": "gpt2", "HF_TASK": "text-generation",
                                   "HF_MODEL_REVISION": "abc"}}, {}),
    # replicas: the rest of the scaling stays
    ({"min_replica": 2, "max_replica": 6}, {}, {"workers_min": 2, "workers_max": 6}),
    ({"max_replica": 4}, {}, {"workers_min": 1, "workers_max": 4}),
    # a larger instance: the hardware is recomputed from the labels and what is given
    ({"instance_size": "x4"}, {}, {"gpu_ids": "ANY", "gpu_count": 0, "labels": {
        **_current()[0].labels, "hf.instance_size": "x4"}}),
    ({"accelerator": "gpu", "instance_type": "nvidia-l4"}, {}, {"gpu_ids": "L4", "gpu_count": 2, "labels": {
        **_current()[0].labels, "hf.accelerator": "gpu", "hf.instance_type": "nvidia-l4"}}),
    # secrets join the env; their names the label
    ({"secrets": {"TOKEN": "t"}}, {"env": {"HF_MODEL_ID": "gpt2", "HF_TASK": "text-generation",
                                           "TOKEN": "t"}},
     {"labels": {**_current()[0].labels, "hf.secrets": "TOKEN"}}),
    ({"custom_image": {"url": "me/w:2"}}, {"image_name": "me/w:2"}, {}),
    ({"framework": "custom"}, {}, {"labels": {**_current()[0].labels, "hf.framework": "custom"}}),
])
def test_update_bodies_change_only_what_is_given(changes, template_patch, endpoint_patch) -> None:
    endpoint, template = _current()
    assert update_bodies(endpoint, template, HFArgs(**changes)) == (template_patch, endpoint_patch)


def test_update_refuses_nothing_and_hardware_it_cannot_complete() -> None:
    endpoint, template = _current()
    with pytest.raises(BadRequest, match="update\\(\\) changes nothing"):
        update_bodies(endpoint, template, HFArgs())
    bare = EndpointConfig(id="plain", name="plain", template_id="t")  # made by podq, no labels
    with pytest.raises(BadRequest, match="endpoint 'plain' was not made by create_inference_endpoint "
                                         r"\(no accelerator, instance_size label\)"):
        update_bodies(bare, template, HFArgs(instance_type="nvidia-l4"))
    with pytest.raises(BadRequest, match="scale_to_zero_timeout needs min_replica=0 \\(it is 1\\)"):
        update_bodies(endpoint, template, HFArgs(scale_to_zero_timeout=5))


def test_update_from_a_cpu_to_a_gpu_drops_the_cpus_limits() -> None:
    template_body, endpoint_body = create_bodies("e", msgspec.structs.replace(CPU, backend="docker"))
    endpoint = msgspec.convert(endpoint_body, EndpointConfig)
    assert (endpoint.cpus, endpoint.memory_gb) != (0.0, 0.0)  # the CPU size's limits
    _, patch = update_bodies(endpoint, Template(**template_body),
                             HFArgs(accelerator="gpu", instance_type="nvidia-l4", instance_size="x1"))
    assert (patch["gpu_ids"], patch["gpu_count"], patch["cpus"], patch["memory_gb"]) == ("L4", 1, 0.0, 0.0)


@pytest.mark.parametrize("accelerator, backend, warned", [
    ("cpu", "process", True), ("cpu", "docker", False), ("gpu", "process", False),
])
def test_a_cpu_size_the_backend_cannot_apply_is_named(accelerator, backend, warned) -> None:
    note = unapplied_size(accelerator, "x4", backend)
    assert bool(note) is warned
    if warned:
        assert note.startswith("instance_size='x4' is not applied: the process backend cannot limit")
