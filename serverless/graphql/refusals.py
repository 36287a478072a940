"""RunPod GraphQL fields podq does not serve, and the validation rule that names them.

The `runpod` package's other admin functions (pods, users, network volumes, container
registry auths) select fields podq's schema does not declare. graphql-core's own rule would
answer "Cannot query field 'pods' on type 'User'."; `RunpodFieldsRule` answers with why podq
has no such thing and what to use instead. Any other unknown field keeps graphql-core's
message (with its "Did you mean ...?"). Either way the error names the field, and the request
gets a GraphQL error, never an HTTP error.
"""

from __future__ import annotations

from typing import Any

from graphql import FieldNode, GraphQLError, specified_rules
from graphql.validation import ASTValidationRule, FieldsOnCorrectTypeRule

_PODS = ("podq serves no pods: it runs serverless endpoints only; create one with "
         "create_template and create_endpoint, then call runpod.Endpoint(id)")
_USERS = ("podq has no user accounts: one admin key (the gateway's PODQ_API_KEY) manages it, "
          "and `podq keys` makes keys for clients")
_VOLUMES = "podq has no network volumes: mount storage through the worker image or the backend"
_REGISTRY_AUTH = ("podq keeps no container registry credentials: log the worker hosts' Docker "
                  "engine in (docker login) or use a Kubernetes image pull secret")
_BILLING = "podq has no billing"

# (parent type, field) -> why podq refuses it
REFUSED: dict[tuple[str, str], str] = {
    **{("Query", f): _PODS for f in ("pod", "pods")},
    ("User", "pods"): _PODS,
    **{("Mutation", f): _PODS for f in (
        "podFindAndDeployOnDemand", "podRentInterruptable", "deployCpuPod", "podStop",
        "podResume", "podBidResume", "podTerminate", "podEditJob", "podReset", "podRestart",
    )},
    **{("User", f): _USERS for f in ("id", "pubKey", "email", "currentSpendPerHr", "clientBalance")},
    ("Mutation", "updateUserSettings"): _USERS,
    ("User", "networkVolumes"): _VOLUMES,
    **{("Mutation", f): _VOLUMES for f in (
        "createNetworkVolume", "updateNetworkVolume", "deleteNetworkVolume")},
    **{("Mutation", f): _REGISTRY_AUTH for f in (
        "saveRegistryAuth", "updateRegistryAuth", "deleteRegistryAuth")},
    ("User", "containerRegistryCreds"): _REGISTRY_AUTH,
    ("User", "serverlessDiscount"): _BILLING,
}


def refusal(parent: str, field: str) -> str | None:
    """The message for a RunPod field podq refuses (it names the field), or None."""
    why = REFUSED.get((parent, field))
    return None if why is None else f"{parent}.{field} is not served: {why}"


class RunpodFieldsRule(FieldsOnCorrectTypeRule):
    """graphql-core's FieldsOnCorrectTypeRule, with podq's reason for RunPod fields it refuses."""

    def enter_field(self, node: FieldNode, *args: Any) -> None:
        parent = self.context.get_parent_type()
        if parent is not None and self.context.get_field_def() is None:
            message = refusal(parent.name, node.name.value)
            if message is not None:
                self.report_error(GraphQLError(message, node))
                return
        super().enter_field(node, *args)


# the specification's rules, with the field rule replaced by podq's
RULES: tuple[type[ASTValidationRule], ...] = tuple(
    RunpodFieldsRule if rule is FieldsOnCorrectTypeRule else rule for rule in specified_rules
)
