"""The errors of serverless.hf, named as huggingface_hub names them (huggingface_hub.errors).

    PodqError
    └── InferenceEndpointError             the endpoint failed (to deploy or to update), or is
        │                                  not serving when a client is asked for
        └── InferenceEndpointTimeoutError  wait(timeout) passed (also a TimeoutError)

Errors of the admin API itself keep their podq types (BadRequest, NotFound, Conflict, ...).
"""

from __future__ import annotations

from serverless.errors import PodqError


class InferenceEndpointError(PodqError):
    """The endpoint ended `failed` or `updateFailed`, or it does not serve yet."""


class InferenceEndpointTimeoutError(InferenceEndpointError, TimeoutError):
    """wait(timeout) passed before the endpoint could take requests."""
