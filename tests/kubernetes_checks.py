"""Checks that a Kubernetes object would pass the API server, for tests of anything podq renders
(worker Pods, the control plane's Deployments, StatefulSets, Services, RBAC).

`validate(obj)` = the official OpenAPI schemas (`kubernetes_validate`, strict: an unknown or
misspelt field fails) for every version in `SCHEMA_VERSIONS`, then `check_object(obj)`.

The schemas check structure only: a quantity is "int or string", an operator any string, a name
any string (shown in shared/reference/scale-out.md §2.2: `nvidia.com/gpu: "one"` and the affinity
operator `Contains` pass them). The API server's own validation catches those, and no API server
runs here, so `check_object` does that part for the fields podq writes:

- names: DNS-1123 labels of at most 63 characters (a pod's name is its hostname; a Service's
  is a DNS-1035 label; RBAC objects take path segments); namespaces: DNS-1123 labels;
- labels and selectors: qualified-name keys (`[prefix/]name`), values of at most 63 characters
  of `[A-Za-z0-9._-]`, alphanumeric at both ends; annotation keys alike;
- a workload's selector matches its pod template's labels;
- every `resources` quantity (`500m`, `2`, `2048Mi`, `1.5Gi`); requests never above limits;
  extended resources (`nvidia.com/gpu`) whole numbers, requests equal to limits;
- every `matchExpressions` operator in the set its selector kind allows (node selectors:
  In, NotIn, Exists, DoesNotExist, Gt, Lt; label selectors: the first four), with the values
  each operator requires; toleration operators and effects.

Each failure is an AssertionError that names the path of the bad field, the bad value and the
rule (the API server's wording where it has one). The rules are written here from the
Kubernetes API conventions, independently of the code under test, so a builder bug cannot pass
because its own helper agrees with it.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

import kubernetes_validate

# The oldest minor release still commonly served by managed clusters, and the newest that
# kubernetes_validate 1.37 bundles schemas for.
SCHEMA_VERSIONS = ("1.30", "1.37")

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # RFC 1123 label
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # RFC 1035 label (Service names)
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAME_PART = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")  # a qualified name's name
_QUANTITY = re.compile(r"^(?P<number>[+-]?(\d+(\.\d*)?|\.\d+))(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?$")
_RBAC_KINDS = frozenset({"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"})
_NODE_OPERATORS = frozenset({"In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"})
_LABEL_OPERATORS = frozenset({"In", "NotIn", "Exists", "DoesNotExist"})
_TOLERATION_OPERATORS = frozenset({"Exists", "Equal"})
_TAINT_EFFECTS = frozenset({"", "NoSchedule", "PreferNoSchedule", "NoExecute"})
# resources whose names need no domain prefix (the rest are extended resources, such as GPUs)
_NATIVE_RESOURCES = frozenset({"cpu", "memory", "storage", "ephemeral-storage", "pods"})
MAX_NAME = 63
MAX_LABEL_VALUE = 63


def validate(obj: dict) -> None:
    """The object against the official schemas (strict) of every version in SCHEMA_VERSIONS,
    then `check_object`.

    Raises:
        AssertionError: naming the version, the path of the bad field and what is wrong.
    """
    for version in SCHEMA_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path) or "(top)"
            raise AssertionError(
                f"{_describe(obj)} fails the Kubernetes {version} schema at {path}: {e.message}") from e
    check_object(obj)


def check_object(obj: dict) -> None:
    """What the API server checks and the schemas do not (the list is in the module docstring).

    Args:
        obj: any object (Pod, Deployment, StatefulSet, Service, ConfigMap, RBAC, ...) as a dict.

    Raises:
        AssertionError: naming the path of the bad field, its value and the rule.
    """
    kind = str(obj.get("kind", ""))
    metadata = obj.get("metadata") or {}
    _require(isinstance(metadata, dict) and (metadata.get("name") or metadata.get("generateName")),
             f"{_describe(obj)}: metadata.name is required")
    check_name(kind, str(metadata.get("name") or metadata["generateName"].rstrip("-") or "x"), "metadata.name")
    _walk(obj, "")


def check_name(kind: str, name: str, path: str) -> None:
    """A name as the API server validates it for `kind` (podq keeps every name a DNS label, so
    that it can serve as a pod hostname)."""
    if kind in _RBAC_KINDS:  # path segment names: "system:controller:x" is valid
        _require(name not in (".", "..") and not re.search(r"[/%]", name),
                 f"{path}: {kind} name {name!r} may not contain '/' or '%' nor be '.' or '..'")
        return
    if kind == "Service":
        rule, pattern = "a DNS-1035 label (lower-case letters, digits and '-', starting with a letter)", _DNS_1035
    else:
        rule, pattern = "a DNS-1123 label (lower-case letters, digits and '-', alphanumeric at both ends)", _DNS_LABEL
    _require(len(name) <= MAX_NAME,
             f"{path}: name {name!r} is {len(name)} characters long: must be no more than {MAX_NAME}")
    _require(bool(pattern.match(name)), f"{path}: name {name!r} is not {rule}")


def check_label_key(key: str, path: str) -> None:
    """A qualified name: an optional DNS subdomain prefix (at most 253) and '/', then a name of at
    most 63 characters of [A-Za-z0-9._-], alphanumeric at both ends."""
    prefix, _, name = key.rpartition("/")
    if "/" in key:
        _require(bool(prefix) and len(prefix) <= 253 and bool(_DNS_SUBDOMAIN.match(prefix)),
                 f"{path}: key {key!r}: prefix {prefix!r} must be a DNS-1123 subdomain of at most 253 characters")
    _require(0 < len(name) <= 63 and bool(_NAME_PART.match(name)),
             f"{path}: key {key!r}: name part {name!r} must be 1 to 63 characters of [A-Za-z0-9._-], "
             "alphanumeric at both ends")


def check_label_value(value: Any, path: str) -> None:
    """Empty, or at most 63 characters of [A-Za-z0-9._-], alphanumeric at both ends."""
    _require(isinstance(value, str), f"{path}: label value {value!r} must be a string")
    _require(len(value) <= MAX_LABEL_VALUE, f"{path}: label value {value!r} is {len(value)} characters long: "
             f"must be no more than {MAX_LABEL_VALUE}")
    _require(value == "" or bool(_NAME_PART.match(value)),
             f"{path}: label value {value!r} must be empty or [A-Za-z0-9._-], alphanumeric at both ends")


def check_labels(labels: Any, path: str) -> None:
    """Every key and value of a label map (metadata.labels, matchLabels, a Service selector)."""
    _require(isinstance(labels, dict), f"{path}: must be a map of label keys to values, not {labels!r}")
    for key, value in labels.items():
        check_label_key(str(key), f"{path}.{key}")
        check_label_value(value, f"{path}.{key}")


def quantity(value: Any, path: str) -> Decimal:
    """A resource quantity's value ("500m" -> 0.5, "2Gi" -> 2147483648), checked for syntax."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    match = _QUANTITY.match(text) if isinstance(text, str) else None
    _require(match is not None, f"{path}: quantity {value!r} must match the regular expression "
             r"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' (e.g. 500m, 2, 2048Mi, 1.5Gi)")
    assert match is not None
    number, suffix = Decimal(match["number"]), match["suffix"] or ""
    scale = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
             "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9, "T": Decimal(10) ** 12,
             "P": Decimal(10) ** 15, "E": Decimal(10) ** 18}
    binary = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
    if suffix in binary:
        return number * Decimal(1024) ** binary[suffix]
    if suffix in scale:
        return number * scale[suffix]
    try:
        return number * Decimal(10) ** int(suffix[1:])
    except InvalidOperation as e:  # an exponent too large to hold
        raise AssertionError(f"{path}: quantity {value!r} is out of range") from e


def check_resources(resources: dict, path: str) -> None:
    """requests and limits: valid quantities, not negative, requests <= limits; extended
    resources whole numbers with requests == limits (they cannot be overcommitted)."""
    values: dict[str, dict[str, Decimal]] = {}
    for part in ("requests", "limits"):
        for name, raw in (resources.get(part) or {}).items():
            where = f"{path}.{part}.{name}"
            if name not in _NATIVE_RESOURCES and not name.startswith("hugepages-"):
                check_label_key(name, where)
                _require("/" in name, f"{where}: resource name {name!r} must be a standard resource "
                         f"({', '.join(sorted(_NATIVE_RESOURCES))}) or domain-qualified (nvidia.com/gpu)")
            value = quantity(raw, where)
            _require(value >= 0, f"{where}: quantity {raw!r} must be greater than or equal to 0")
            if "/" in name and not name.startswith("kubernetes.io/"):
                _require(value == value.to_integral_value(), f"{where}: {raw!r} must be a whole number "
                         f"(extended resource {name} cannot be fractional)")
            values.setdefault(name, {})[part] = value
    for name, both in values.items():
        if "requests" in both and "limits" in both:
            _require(both["requests"] <= both["limits"],
                     f"{path}.requests.{name}: must be less than or equal to the {name} limit")
            if "/" in name and not name.startswith("kubernetes.io/"):
                _require(both["requests"] == both["limits"],
                         f"{path}.requests.{name}: must be equal to the {name} limit (extended resources "
                         "cannot be overcommitted)")


def check_expressions(expressions: Any, path: str, node: bool, label_values: bool = True) -> None:
    """matchExpressions of a node selector term (`node`: Gt and Lt allowed) or of a label
    selector; `label_values` False for a node selector's matchFields (node names, not labels)."""
    _require(isinstance(expressions, list), f"{path}: must be a list of expressions")
    allowed = _NODE_OPERATORS if node else _LABEL_OPERATORS
    for i, expression in enumerate(expressions):
        where = f"{path}[{i}]"
        op, values = expression.get("operator"), expression.get("values") or []
        _require(op in allowed, f"{where}.operator: {op!r} is not a valid selector operator: must be one of "
                 f"{', '.join(sorted(allowed))}")
        check_label_key(str(expression.get("key", "")), f"{where}.key")
        if op in ("In", "NotIn"):
            _require(len(values) > 0, f"{where}.values: must be specified when operator is {op}")
        elif op in ("Exists", "DoesNotExist"):
            _require(not values, f"{where}.values: may not be specified when operator is {op}")
        else:  # Gt, Lt
            _require(len(values) == 1 and re.fullmatch(r"-?\d+", str(values[0])) is not None,
                     f"{where}.values: must be a single integer when operator is {op}, not {values!r}")
        if label_values and op in ("In", "NotIn"):
            for j, value in enumerate(values):
                check_label_value(value, f"{where}.values[{j}]")


def check_tolerations(tolerations: Any, path: str) -> None:
    """Toleration operators (Exists: no value) and effects."""
    _require(isinstance(tolerations, list), f"{path}: must be a list of tolerations")
    for i, t in enumerate(tolerations):
        where = f"{path}[{i}]"
        op = t.get("operator", "Equal")
        _require(op in _TOLERATION_OPERATORS, f"{where}.operator: {op!r} must be Exists or Equal")
        _require(op == "Equal" or not t.get("value"), f"{where}.value: must be empty when operator is Exists")
        _require(bool(t.get("key")) or op == "Exists", f"{where}.operator: must be Exists when key is empty")
        _require(t.get("effect", "") in _TAINT_EFFECTS, f"{where}.effect: {t.get('effect')!r} must be one of "
                 "NoSchedule, PreferNoSchedule, NoExecute (or empty: all)")
        if t.get("key"):
            check_label_key(t["key"], f"{where}.key")


def _walk(node: Any, path: str, node_term: bool = False) -> None:
    """Check every mapping of the object; `node_term`: `node` is a node selector term (its
    matchExpressions allow Gt and Lt), as under nodeSelectorTerms and preference."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            _walk(item, f"{path}[{i}]", node_term)
        return
    if not isinstance(node, dict):
        return
    _check_fields(node, path, node_term)
    for key, value in node.items():
        _walk(value, f"{path}.{key}" if path else str(key), key in ("nodeSelectorTerms", "preference"))


def _check_fields(node: dict, path: str, node_term: bool) -> None:
    """The rules for the fields of one mapping, wherever it sits in the object."""
    at = (path + ".") if path else ""
    if isinstance(node.get("metadata"), dict):
        _check_metadata(node["metadata"], f"{at}metadata", nested=bool(path))
    if isinstance(node.get("resources"), dict):  # not RBAC rules' resources, a list of names
        check_resources(node["resources"], f"{at}resources")
    if "matchExpressions" in node:
        check_expressions(node["matchExpressions"], f"{at}matchExpressions", node=node_term)
    if "matchFields" in node:
        check_expressions(node["matchFields"], f"{at}matchFields", node=True, label_values=False)
    for field in ("matchLabels", "nodeSelector"):
        if isinstance(node.get(field), dict):
            check_labels(node[field], f"{at}{field}")
    if path == "spec" and isinstance(node.get("selector"), dict) and "matchLabels" not in node["selector"] \
            and "matchExpressions" not in node["selector"]:  # a Service's plain label map
        check_labels(node["selector"], "spec.selector")
    if "tolerations" in node:
        check_tolerations(node["tolerations"], f"{at}tolerations")
    _check_template(node, at)


def _check_metadata(metadata: dict, path: str, nested: bool) -> None:
    if nested and "name" in metadata:  # a pod template's or a claim template's
        check_name("", str(metadata["name"]), f"{path}.name")
    if metadata.get("namespace") is not None:
        check_name("Namespace", str(metadata["namespace"]), f"{path}.namespace")
    if "labels" in metadata:
        check_labels(metadata["labels"], f"{path}.labels")
    for key in metadata.get("annotations") or {}:
        check_label_key(str(key), f"{path}.annotations.{key}")
    size = sum(len(k) + len(str(v)) for k, v in (metadata.get("annotations") or {}).items())
    _require(size <= 256 * 1024, f"{path}.annotations: {size} bytes: must have at most 262144 bytes")


def _check_template(node: dict, at: str) -> None:
    """A workload's selector must select its own pod template (the API server refuses
    "selector does not match template labels")."""
    template, selector = node.get("template"), node.get("selector")
    if not (isinstance(template, dict) and isinstance(selector, dict)):
        return
    labels = (template.get("metadata") or {}).get("labels") or {}
    _require(bool(labels), f"{at}template.metadata.labels: a pod template needs labels for {at}selector to select")
    for key, value in (selector.get("matchLabels") or {}).items():
        _require(labels.get(key) == value, f"{at}selector.matchLabels.{key}: {value!r} does not match the "
                 f"template's labels {labels!r} (selector does not match template labels)")
    for expression in selector.get("matchExpressions") or []:
        key, op, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        present = key in labels
        ok = {"In": present and labels.get(key) in values, "NotIn": not present or labels.get(key) not in values,
              "Exists": present, "DoesNotExist": not present}.get(op, True)
        _require(ok, f"{at}selector.matchExpressions: {key} {op} {values} does not match the template's "
                 f"labels {labels!r} (selector does not match template labels)")


def _describe(obj: dict) -> str:
    return f"{obj.get('kind', '?')} {((obj.get('metadata') or {}).get('name')) or '?'!r}"


def _require(condition: object, message: str) -> None:
    if not condition:
        raise AssertionError(message)
