"""RunPod settings podq cannot apply, and why: one text each, for every API that takes them
(GraphQL's saveTemplate / saveEndpoint in serverless/graphql/mapping.py, the Python admin
functions in serverless/admin.py). A value that asks for something is refused with this reason,
never dropped; an empty one (what RunPod's clients send by default) is accepted."""

from __future__ import annotations

NETWORK_VOLUMES = "podq has no network volumes; mount storage through the template's image or the backend"
LOCATIONS = ("podq places workers on its own backend (process, docker, swarm, kubernetes), not in "
             "RunPod data centers")
CUDA_VERSIONS = "podq does not pick hosts by CUDA version; the worker image decides"
REGISTRY_AUTH = ("podq keeps no registry credentials; log the worker hosts' Docker engine in "
                 "(docker login) or use a Kubernetes pull secret")


def refusal(field: str, value: object, why: str, empty: str = "an empty string") -> str:
    """The message for a refused setting: what was given, why it cannot apply, what to send."""
    return f"{field} {value!r} cannot be applied: {why}; leave {field} out or set it to {empty}"
