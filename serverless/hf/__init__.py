"""Hugging Face Inference Endpoints' API against podq: huggingface_hub's names and signatures.

    from serverless.hf import create_inference_endpoint
    endpoint = create_inference_endpoint("gpt2-echo", repository="gpt2", framework="pytorch",
        task="text-generation", accelerator="cpu", vendor="podq", region="local",
        instance_size="x1", instance_type="intel-icl", handler="examples/hf/handler.py")
    endpoint.wait().client.text_generation("I am")

endpoint.py: InferenceEndpoint and the module functions (over the /v1 admin API); mapping.py:
HF arguments -> podq template and endpoint fields (pure); raw.py: a podq endpoint as HF's
record (pure); errors.py: InferenceEndpointError, InferenceEndpointTimeoutError.
"""

from serverless.hf.endpoint import (
    InferenceEndpoint, create_inference_endpoint, get_inference_endpoint, list_inference_endpoints,
)
from serverless.hf.errors import InferenceEndpointError, InferenceEndpointTimeoutError
from serverless.model import EndpointStatus as InferenceEndpointStatus

__all__ = [
    "InferenceEndpoint",
    "InferenceEndpointError",
    "InferenceEndpointStatus",
    "InferenceEndpointTimeoutError",
    "create_inference_endpoint",
    "get_inference_endpoint",
    "list_inference_endpoints",
]
