"""`podq deploy TARGET [flags] > podq.yaml`: print podq's control plane for a cluster manager.

Each target parses its own flags into its options Struct and prints what its pure renderer
returns; nothing is applied here (`kubectl apply -f` does that), so the output can be read,
diffed and committed first. Bad flags and unknown targets exit 2, as argparse's usage errors do.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from serverless.deploy import kubernetes as k8s
from serverless.errors import ConfigError


def kubernetes_parser() -> argparse.ArgumentParser:
    """The flags of `podq deploy kubernetes`; defaults are those of `DeployOptions`."""
    d, r = k8s.DeployOptions(), k8s.InClusterRedis()
    p = argparse.ArgumentParser(prog="podq deploy kubernetes", description=(
        "Print the YAML of podq's control plane (gateway, scaler, Redis, RBAC) for kubectl apply -f."))
    p.add_argument("--namespace", metavar="N", default=d.namespace,
                   help=f"where everything runs, workers too (default {d.namespace})")
    p.add_argument("--create-namespace", action=argparse.BooleanOptionalAction, default=d.create_namespace,
                   help="render the Namespace object (off for a namespace that exists already)")
    p.add_argument("--image", metavar="IMG", default=d.image, help=f"the control-plane image (default {d.image})")
    p.add_argument("--image-pull-policy", default=d.image_pull_policy, choices=k8s.PULL_POLICIES)
    p.add_argument("--image-pull-secret", metavar="NAME", action="append", default=[], dest="image_pull_secrets",
                   help="a Secret to pull the image with (repeat for several)")
    p.add_argument("--gateway-replicas", metavar="N", type=int, default=d.gateway_replicas,
                   help=f"default {d.gateway_replicas}")
    p.add_argument("--scaler-replicas", metavar="N", type=int, default=d.scaler_replicas,
                   help=f"default {d.scaler_replicas}; more are standbys: one leader acts at a time")
    p.add_argument("--api-key-secret", metavar="NAME", default=d.api_key_secret,
                   help=f"the Secret whose `{k8s.API_KEY_SECRET_KEY}` key is the admin key "
                        f"(default {d.api_key_secret})")
    p.add_argument("--cluster-domain", metavar="DOMAIN", default=d.cluster_domain,
                   help=f"the cluster's DNS domain (default {d.cluster_domain})")
    p.add_argument("--log-level", default=d.log_level, choices=k8s.LOG_LEVELS)
    workers = p.add_argument_group("worker pods (passed to the scaler)")
    workers.add_argument("--worker-image-pull-secret", metavar="NAME", action="append", default=[],
                         dest="worker_image_pull_secrets", help="a Secret worker images are pulled with (repeat)")
    workers.add_argument("--gpu-toleration", metavar="KEY[=VALUE][:EFFECT]", action="append", default=[],
                         dest="gpu_tolerations", help="a taint GPU workers tolerate besides nvidia.com/gpu")
    external = p.add_argument_group("external Redis (no StatefulSet is rendered)")
    external.add_argument("--redis-url", metavar="URL",
                          help="redis[s]://[:PASSWORD@]HOST:PORT/DB; with a password it goes in a Secret")
    external.add_argument("--redis-secret", metavar="NAME",
                          help=f"an existing Secret whose `{k8s.REDIS_SECRET_KEY}` key is the URL")
    inside = p.add_argument_group("in-cluster Redis (the default)")
    inside.add_argument("--redis-image", metavar="IMG", help=f"default {r.image}")
    inside.add_argument("--redis-storage", metavar="SIZE", help=f"its volume's size (default {r.storage})")
    inside.add_argument("--storage-class", metavar="NAME",
                        help="its volume's StorageClass (default: the cluster's)")
    return p


# the flags that shape the in-cluster Redis, by InClusterRedis field
_IN_CLUSTER_FLAGS = {"image": "--redis-image", "storage": "--redis-storage", "storage_class": "--storage-class"}


def redis_of(args: argparse.Namespace) -> k8s.InClusterRedis | k8s.ExternalRedis:
    """The Redis the flags ask for; in-cluster flags next to an external Redis are refused."""
    given = {field: value for field, flag in _IN_CLUSTER_FLAGS.items()
             if (value := getattr(args, flag[2:].replace("-", "_"))) is not None}
    if args.redis_url is None and args.redis_secret is None:
        return k8s.InClusterRedis(**given)
    if given:
        external = "--redis-url" if args.redis_url is not None else "--redis-secret"
        flags = ", ".join(_IN_CLUSTER_FLAGS[field] for field in given)
        raise ConfigError(f"{flags}: for the in-cluster Redis only, which {external} replaces; "
                          "drop one or the other")
    return k8s.ExternalRedis(url=args.redis_url, secret=args.redis_secret)


def kubernetes_options(argv: list[str]) -> k8s.DeployOptions:
    """Parse and check `podq deploy kubernetes` flags; a bad one exits 2 with the fix."""
    p = kubernetes_parser()
    args = p.parse_args(argv)
    try:
        options = k8s.DeployOptions(
            namespace=args.namespace, create_namespace=args.create_namespace, image=args.image,
            image_pull_policy=args.image_pull_policy, image_pull_secrets=tuple(args.image_pull_secrets),
            gateway_replicas=args.gateway_replicas, scaler_replicas=args.scaler_replicas,
            redis=redis_of(args), api_key_secret=args.api_key_secret,
            cluster_domain=args.cluster_domain, log_level=args.log_level,
            worker_image_pull_secrets=tuple(args.worker_image_pull_secrets),
            gpu_tolerations=tuple(args.gpu_tolerations))
        k8s.check(options)
    except ConfigError as e:
        p.error(str(e))
    return options


def kubernetes_main(argv: list[str]) -> None:
    sys.stdout.write(k8s.to_yaml(k8s.render(kubernetes_options(argv)), argv))


TARGETS: dict[str, tuple[Callable[[list[str]], None], str]] = {
    "kubernetes": (kubernetes_main, "gateway, scaler, Redis and RBAC as YAML for kubectl apply -f"),
}


def main(argv: list[str]) -> None:
    usage = "podq deploy TARGET [flags] > podq.yaml; targets: " + "; ".join(
        f"{name}: {text}" for name, (_, text) in sorted(TARGETS.items()))
    if not argv or argv[0] in ("-h", "--help"):
        print(usage, file=sys.stdout if argv else sys.stderr)
        sys.exit(0 if argv else 2)
    if argv[0] not in TARGETS:
        sys.exit(_unknown(argv[0]))
    TARGETS[argv[0]][0](argv[1:])


def _unknown(target: str) -> int:
    print(f"podq deploy: unknown target {target!r}; supported: {', '.join(sorted(TARGETS))} "
          f"(e.g. podq deploy kubernetes --help)", file=sys.stderr)
    return 2
