"""LaunchClient: Scale Launch's client, talking to a podq gateway.

    client = LaunchClient(api_key=KEY, endpoint="http://podq:8000", self_hosted=True)

is the only line that changes in a Launch user's code. Bundles go to /v1/bundles (a zip of the
code folders); an endpoint is a podq endpoint with its own template (serverless/launch/mapping);
predictions are podq jobs; a batch (`batch_async_request`) is a podq batch job on the bundle's
endpoint `launch-batch-<bundle>` (serverless/launch/batch.py). What podq refuses, and why, is
in docs/launch.md: pickled bundles (`create_model_bundle` with Python objects),
`return_pickled=True` and `serialization_format='pickle'`, hooks other than `callback`, MIG
gpu types.
"""

from __future__ import annotations

import io
import json
import time
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from serverless.errors import BadRequest, Conflict, NotFound
from serverless.launch import batch, mapping
from serverless.launch.endpoints import ENDPOINT_CLASSES, Endpoint
from serverless.launch.model import (
    EndpointResponse, ModelBundle, ModelEndpoint, async_response_dict, check_not_pickled,
    response_of,
)
from serverless.launch.transport import Transport

PICKLED_BUNDLE = ("create_model_bundle with Python objects ({given}) would need the worker to "
                  "unpickle code sent over the network, which podq never does; put the code in a "
                  "folder and use create_model_bundle_from_dirs(model_bundle_name, base_paths, "
                  "requirements_path, env_params, load_predict_fn_module_path, "
                  "load_model_fn_module_path)")
_SKIP = ("__pycache__", ".git")


def zip_dirs(base_paths: Sequence[str | Path]) -> bytes:
    """A zip of each folder, named from the folder itself (Launch: `my_module1/...`, without
    the root above it); __pycache__ and .git are left out."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for base in map(Path, base_paths):
            if not base.is_dir():
                raise BadRequest(f"base path {str(base)!r} is not a folder; pass the folders that hold the code")
            for path in sorted(base.resolve().rglob("*")):
                relative = path.relative_to(base.resolve().parent)
                if path.is_file() and not any(part in _SKIP for part in relative.parts):
                    archive.write(path, relative.as_posix())
    return buffer.getvalue()


def read_app_config(app_config: dict[str, Any] | str | Path | None) -> dict[str, Any] | None:
    """A dict, or a path to a YAML or JSON file holding one."""
    if app_config is None or isinstance(app_config, dict):
        return app_config
    text = Path(app_config).read_text()
    if str(app_config).endswith(".json"):
        return json.loads(text)
    try:
        import yaml
    except ImportError:
        raise BadRequest(f"app_config {str(app_config)!r} is YAML: `pip install pyyaml`, or pass a dict") from None
    return yaml.safe_load(text)


def _name(value: Any) -> str:
    """A bundle or endpoint object, or its name."""
    return str(getattr(value, "name", value))


class LaunchClient:
    """Scale Launch's Python client against a podq gateway.

    Args:
        api_key: podq's admin key (bundles and endpoints are admin operations).
        endpoint: the gateway's URL (default: $PODQ_ENDPOINT_BASE_URL or http://127.0.0.1:8000).
        self_hosted: accepted (podq is always self-hosted).
        backend: podq's backend for new endpoints: "process" (the default; it cannot limit cpus
            and memory, which are then not applied, with a warning), "docker", "swarm" or
            "kubernetes".
    """

    def __init__(self, api_key: str, endpoint: str | None = None, self_hosted: bool = False,
                 *, backend: str = "process") -> None:
        del self_hosted
        self.transport = Transport(endpoint, api_key)
        self.backend = backend

    # ---- bundles -----------------------------------------------------------------------------

    def create_model_bundle_from_dirs(
        self, model_bundle_name: str, base_paths: list[str], requirements_path: str | None,
        env_params: dict[str, str], load_predict_fn_module_path: str,
        load_model_fn_module_path: str, app_config: dict[str, Any] | str | None = None,
    ) -> ModelBundle:
        """Zip `base_paths`, upload them as a bundle. `env_params` is accepted and not used:
        the worker image decides the framework (docs/launch.md)."""
        del env_params
        requirements = Path(requirements_path).read_text() if requirements_path else ""
        return self._upload(model_bundle_name, zip_dirs(base_paths), requirements,
                            load_predict_fn_module_path, load_model_fn_module_path, app_config)

    def _upload(self, name: str, archive: bytes, requirements: str, load_predict_fn: str,
                load_model_fn: str, app_config: dict[str, Any] | str | None) -> ModelBundle:
        params = {"name": name, "load_predict_fn": load_predict_fn, "load_model_fn": load_model_fn}
        if requirements.strip():
            params["requirements"] = requirements
        config = read_app_config(app_config)
        if config is not None:
            params["app_config"] = json.dumps(config)
        return ModelBundle.from_record(self.transport.upload_bundle(params, archive))

    def create_model_bundle(
        self, model_bundle_name: str, env_params: dict[str, str], *, load_predict_fn: Any = None,
        predict_fn_or_cls: Any = None, requirements: list[str] | None = None, model: Any = None,
        load_model_fn: Any = None, bundle_url: str | None = None, app_config: Any = None,
        globals_copy: Any = None,
    ) -> ModelBundle:
        """Only the code-by-reference form: `bundle_url` (an http(s) URL or a path of a zip) with
        `load_predict_fn` and `load_model_fn` as dotted paths in it. Python objects are refused."""
        del env_params, globals_copy
        objects = {"predict_fn_or_cls": predict_fn_or_cls, "model": model,
                   "load_predict_fn": load_predict_fn, "load_model_fn": load_model_fn}
        given = [k for k, v in objects.items() if v is not None and not isinstance(v, str)]
        if given or bundle_url is None or not (isinstance(load_predict_fn, str) and isinstance(load_model_fn, str)):
            raise BadRequest(PICKLED_BUNDLE.format(given=", ".join(given) or "no bundle_url"))
        return self._upload(model_bundle_name, _read_url(bundle_url), "\n".join(requirements or []),
                            load_predict_fn, load_model_fn, app_config)

    def get_model_bundle(self, model_bundle: ModelBundle | str) -> ModelBundle:
        return ModelBundle.from_record(self._bundle_record(_name(model_bundle)))

    def _bundle_record(self, name: str) -> dict[str, Any]:
        try:
            return self.transport.admin.call("GET", f"bundles/{quote(name, safe='')}")
        except NotFound:
            raise NotFound(f"model bundle {name!r} does not exist; create it with "
                           "create_model_bundle_from_dirs, or list them with list_model_bundles()") from None

    def list_model_bundles(self) -> list[ModelBundle]:
        return [ModelBundle.from_record(r) for r in self.transport.admin.call("GET", "bundles")]

    def delete_model_bundle(self, model_bundle: ModelBundle | str) -> dict[str, Any]:
        return self.transport.admin.call("DELETE", f"bundles/{quote(_name(model_bundle), safe='')}")

    # ---- endpoints ---------------------------------------------------------------------------

    def create_model_endpoint(
        self, endpoint_name: str, model_bundle: ModelBundle | str, cpus: float = 3,
        memory: str = "8Gi", gpus: int = 0, min_workers: int = 1, max_workers: int = 1,
        per_worker: int = 1, gpu_type: str | None = None, endpoint_type: str = "sync",
        post_inference_hooks: list[str] | None = None, update_if_exists: bool = False,
        labels: dict[str, str] | None = None, default_callback_url: str | None = None,
    ) -> Endpoint:
        """Create (or with update_if_exists, update) an endpoint serving `model_bundle`."""
        args = mapping.EndpointArgs(
            endpoint_name, _name(model_bundle), cpus, memory, gpus, min_workers, max_workers,
            per_worker, gpu_type, endpoint_type, list(post_inference_hooks or []),
            default_callback_url, dict(labels or {}),
        )
        existing = self._endpoint_record(endpoint_name)
        if existing is not None and not update_if_exists:
            raise Conflict(f"endpoint {endpoint_name!r} already exists; pass update_if_exists=True "
                           "to update it, or edit_model_endpoint")
        self._apply(args, existing, warn=True)
        return self.get_model_endpoint(endpoint_name)  # type: ignore[return-value]

    def _apply(self, args: mapping.EndpointArgs, existing: dict[str, Any] | None, warn: bool) -> None:
        mapping.check_args(args)
        fields = mapping.endpoint_fields(args, existing["backend"] if existing else self.backend)
        note = mapping.resources(args, fields["backend"])[2]
        if warn and note:
            warnings.warn(note, stacklevel=3)
        template = mapping.template_fields(args, self._bundle_record(args.bundle_name))
        template_id = fields["template_id"]
        admin = self.transport.admin
        if existing is not None:
            self._check_type_kept(args, existing)
            admin.update_template(template_id, template)
            admin.update_endpoint(args.endpoint_name, fields)
            return
        try:
            admin.create_template({**template, "id": template_id})
        except Conflict:  # left over from an endpoint deleted halfway: take it over
            admin.update_template(template_id, template)
        admin.create_endpoint({**fields, "id": args.endpoint_name})

    def _check_type_kept(self, args: mapping.EndpointArgs, existing: dict[str, Any]) -> None:
        current = self._model_endpoint(existing).endpoint_type
        if current != args.endpoint_type:
            raise BadRequest(f"endpoint {args.endpoint_name!r} is {current}; its type cannot change "
                             f"to {args.endpoint_type} (Launch's rule): delete it and create it again")

    def edit_model_endpoint(
        self, model_endpoint: ModelEndpoint | Endpoint | str, model_bundle: ModelBundle | str | None = None,
        cpus: float | None = None, memory: str | None = None, gpus: int | None = None,
        min_workers: int | None = None, max_workers: int | None = None, per_worker: int | None = None,
        gpu_type: str | None = None, post_inference_hooks: list[str] | None = None,
        default_callback_url: str | None = None,
    ) -> None:
        """Change the given settings; the rest stay. The name and the type cannot change."""
        name = _name(model_endpoint)
        existing = self._endpoint_record(name)
        if existing is None:
            raise NotFound(f"endpoint {name!r} does not exist; list them with list_model_endpoints()")
        current = self._current_args(self._model_endpoint(existing), existing)
        given = {"bundle_name": None if model_bundle is None else _name(model_bundle), "cpus": cpus,
                 "memory": memory, "gpus": gpus, "min_workers": min_workers, "max_workers": max_workers,
                 "per_worker": per_worker, "gpu_type": gpu_type,
                 "post_inference_hooks": post_inference_hooks, "default_callback_url": default_callback_url}
        args = replace(current, **{k: v for k, v in given.items() if v is not None})
        self._apply(args, existing, warn=cpus is not None or memory is not None)

    @staticmethod
    def _current_args(endpoint: ModelEndpoint, record: dict[str, Any]) -> mapping.EndpointArgs:
        settings = mapping.resource_settings(record)
        return mapping.EndpointArgs(
            endpoint.name, endpoint.bundle_name or "", cpus=settings["cpus"] or 1,
            memory=settings["memory"] or "1Gi", gpus=settings["gpus"], gpu_type=settings["gpu_type"],
            min_workers=record["workers_min"], max_workers=record["workers_max"],
            per_worker=int(record.get("scaler_value", 1)), endpoint_type=endpoint.endpoint_type,
            post_inference_hooks=endpoint.post_inference_hooks,
            default_callback_url=endpoint.default_callback_url, labels=dict(record.get("labels", {})),
        )

    def delete_model_endpoint(self, model_endpoint: ModelEndpoint | Endpoint | str) -> bool:
        """Delete the endpoint (its workers stop) and its template."""
        name = _name(model_endpoint)
        self.transport.admin.delete_endpoint(name)
        try:
            self.transport.admin.delete_template(mapping.TEMPLATE_PREFIX + name)
        except NotFound:
            pass
        return True

    def _endpoint_record(self, name: str) -> dict[str, Any] | None:
        try:
            return self.transport.admin.endpoint(name)
        except NotFound:
            return None
        except BadRequest:  # not a valid podq id: no such endpoint
            return None

    def _model_endpoint(self, record: dict[str, Any], template: dict[str, Any] | None = None) -> ModelEndpoint:
        if template is None:
            template = self.transport.admin.template(record["template_id"])
        env = template.get("env", {})
        hooks = [h for h in env.get(mapping.ENV_HOOKS, "").split(",") if h]
        return ModelEndpoint(
            name=record["id"], bundle_name=env.get(mapping.ENV_BUNDLE), status=record.get("status"),
            endpoint_type=env.get(mapping.ENV_TYPE, "sync"), post_inference_hooks=hooks,
            default_callback_url=record.get("webhook"), labels=dict(record.get("labels", {})), raw=record,
        )

    def read_model_endpoint(self, endpoint_name: str) -> ModelEndpoint:
        """The endpoint's current record (NotFound when it is gone)."""
        record = self._endpoint_record(endpoint_name)
        if record is None:
            raise NotFound(f"endpoint {endpoint_name!r} does not exist")
        return self._model_endpoint(record)

    def get_model_endpoint(self, endpoint_name: str) -> Endpoint | None:
        """The endpoint as a SyncEndpoint, AsyncEndpoint or StreamingEndpoint; None if there is
        none by that name (Launch's behaviour)."""
        record = self._endpoint_record(endpoint_name)
        if record is None:
            return None
        endpoint = self._model_endpoint(record)
        return ENDPOINT_CLASSES[endpoint.endpoint_type](endpoint, self)

    def list_model_endpoints(self) -> list[Endpoint]:
        """Every endpoint made through Launch's API (templates `launch-<name>`), not the ones
        batches run on (`launch-batch-<bundle>`)."""
        templates = {t["id"]: t for t in self.transport.admin.templates()}
        out: list[Endpoint] = []
        for record in self.transport.admin.endpoints():
            template = templates.get(record["template_id"])
            env = {} if template is None else template.get("env", {})
            if mapping.ENV_TYPE in env and mapping.ENV_BATCH not in env:
                endpoint = self._model_endpoint(record, template)
                out.append(ENDPOINT_CLASSES[endpoint.endpoint_type](endpoint, self))
        return out

    def read_endpoint_creation_logs(self, model_endpoint: ModelEndpoint | Endpoint | str) -> str:
        """The endpoint's worker log lines (bundle download, pip install, model loading), as text."""
        name = _name(model_endpoint)
        reply = self.transport.admin.call("GET", f"endpoints/{quote(name, safe='')}/logs?tail=5000")
        return "\n".join(line["line"] for line in reply.get("lines", []))

    # ---- requests ----------------------------------------------------------------------------

    def async_request(self, endpoint_name: str, url: str | None = None, args: Any = None,
                      return_pickled: bool | None = None) -> str:
        """Queue one prediction; its task id (`<endpoint>/<job id>`) for get_async_response."""
        check_not_pickled(return_pickled)
        if (url is None) == (args is None):
            raise BadRequest("exactly one of url and args must be given")
        payload = {"url": url} if url is not None else {"args": args}
        return f"{endpoint_name}/{self.transport.submit(endpoint_name, payload)}"

    def task_response(self, async_task_id: str) -> EndpointResponse:
        """The EndpointResponse of an async task now (PENDING while it runs)."""
        endpoint_name, sep, job_id = async_task_id.rpartition("/")
        if not sep or not endpoint_name:
            raise BadRequest(f"async task id {async_task_id!r} is not `<endpoint>/<job id>` "
                             "(what async_request returns)")
        return response_of(self, self.transport.status(endpoint_name, job_id))

    def get_async_response(self, async_task_id: str) -> dict[str, Any]:
        """`{"state": PENDING | SUCCESS | FAILURE, "result"?: JSON text, "traceback"?: str}`."""
        return async_response_dict(self.task_response(async_task_id))

    # ---- batch jobs --------------------------------------------------------------------------

    def batch_async_request(
        self, model_bundle: ModelBundle | str, urls: list[str] | None = None,
        inputs: list[Any] | None = None, batch_url_file_location: str | None = None,
        serialization_format: str = "json", batch_task_options: dict[str, Any] | None = None,
        labels: dict[str, str] | None = None, *, cpus: float | None = None,
        memory: str | None = None, gpus: int | None = None, gpu_type: str | None = None,
        max_workers: int | None = None, per_worker: int | None = None,
    ) -> str:
        """Run `model_bundle` on every one of `urls` (each is `{"url": ...}` to predict) or
        `inputs` (each is `{"args": ...}`) as a podq batch; its id, for get_batch_async_response.

        The bundle's batch endpoint `launch-batch-<bundle>` is created, or updated to these
        settings (`cpus`, `memory`, `gpus`, `gpu_type`, `max_workers`, `per_worker`, as keyword
        arguments or in `batch_task_options`; create_model_endpoint's defaults otherwise).
        `labels` go on that endpoint. Pickled results and `batch_url_file_location` are refused.
        """
        batch.check_format(serialization_format)
        if batch_url_file_location is not None:
            raise BadRequest(batch.LOCATION_REFUSED.format(location=batch_url_file_location))
        jobs = batch.job_inputs(urls, inputs)
        given = {"cpus": cpus, "memory": memory, "gpus": gpus, "gpu_type": gpu_type,
                 "max_workers": max_workers, "per_worker": per_worker}
        chosen = batch.settings(batch_task_options, given)
        args = batch.endpoint_args(_name(model_bundle), chosen, labels)
        explicit = {k for k, v in given.items() if v is not None} | set(batch_task_options or {})
        self._apply(args, self._endpoint_record(args.endpoint_name), warn=bool(explicit & {"cpus", "memory"}))
        # normal priority: the batch's backlog scales its own endpoint up to max_workers
        created = self.transport.batches.submit(args.endpoint_name, inputs=jobs, low_priority=False)
        return str(created["id"])

    def get_batch_async_response(self, batch_job_id: str) -> dict[str, Any]:
        """`{"status", "result", "duration", "num_tasks_pending", "num_tasks_completed",
        "num_tasks_failed"}`: status PENDING, RUNNING, SUCCESS, FAILURE or CANCELLED; `result`
        is the results file's URL once the batch has ended (GET it with the key), else None."""
        record = self._batch_record(batch_job_id)
        return batch.response(record, self._results_url(batch_job_id), int(time.time() * 1000))

    def get_batch_async_results(self, batch_job_id: str) -> list[dict[str, Any]]:
        """(podq's) The results file read back: one `{"index", "state", "result" | "traceback"}`
        per input, in input order (those finished so far while the batch runs)."""
        self._batch_record(batch_job_id)
        return [batch.input_result(json.loads(line)) for line in self.transport.batches.results(batch_job_id)]

    def _batch_record(self, batch_job_id: str) -> dict[str, Any]:
        try:
            return self.transport.batches.get(batch_job_id)
        except NotFound:
            raise NotFound(f"batch job {batch_job_id!r} does not exist (unknown or deleted); use the id "
                           "batch_async_request returned") from None

    def _results_url(self, batch_job_id: str) -> str:
        return f"{self.transport.base_url}/v1/batches/{quote(batch_job_id, safe='')}/results"

    def close(self) -> None:
        self.transport.close()


def _read_url(bundle_url: str) -> bytes:
    if bundle_url.startswith(("http://", "https://")):
        response = httpx.get(bundle_url, follow_redirects=True, timeout=300)
        if response.status_code != 200:
            raise BadRequest(f"bundle_url {bundle_url} answered HTTP {response.status_code}")
        return response.content
    path = Path(bundle_url.removeprefix("file://"))
    if not path.is_file():
        raise BadRequest(f"bundle_url {bundle_url!r} is neither an http(s) URL nor a zip file here")
    return path.read_bytes()
