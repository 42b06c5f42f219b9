#!/usr/bin/env python3
"""Semantic checks of the rendered overlays, for what a schema cannot see.

Usage: check.py RENDERED.yaml...      one file per overlay (`kubectl kustomize overlays/X`)
       check.py --self-test RENDERED.yaml...
                                      breaks the rendered manifests one way per check and
                                      fails unless every check notices its breakage

Checks, per overlay: readiness is an HTTP GET of /ready on the metrics port (the port
node.toml's metrics_listen serves), liveness a lenient TCP check of the API port (the API
port demands a client certificate, which kubelet probes cannot present); every mounted
volume exists and every PVC template is mounted, with the node's data_dir on one; the
node's per-province environment is complete, its keys (and retired storage keys, when
set) come from Secrets, and its addresses are https:// and name this StatefulSet's pods under its headless Service; mutual TLS: the
CA, certificate and key are files of the `quorumid-tls` Secret volume (mounted whole,
read-only), certificate and key named by {node_id}, and plaintext is never allowed; the
face models are configured (QUORUMID_FACE_MODELS, or node.toml's face_models when the image's
variable does not override it) to a directory the pod sees: where the image carries them,
not hidden by a mount, or on a volume of the operator's; the
PDB and the Services select exactly this province's pods; the peers Service publishes
not-ready pods; the NetworkPolicy admits the Raft port from quorumid pods of every
province and from nothing else.
Across overlays: exactly one seed province, disjoint node id ranges and pod selectors, and
https:// join addresses that name rendered Services.
"""

import copy
import posixpath
import re
import sys
import tomllib

import yaml

RAFT_PORT_NAME = "raft"
API_PORT_NAME = "api"
METRICS_PORT_NAME = "metrics"
# The Secret with the CA certificate and every node's certificate and key (make-secrets.sh).
TLS_SECRET = "quorumid-tls"
TLS_ENV = ("QUORUMID_TLS_CA", "QUORUMID_TLS_CERT", "QUORUMID_TLS_KEY")
# Replaced by the node with its own id in the certificate and key paths.
NODE_ID_PLACEHOLDER = "{node_id}"
# Where both images (deploy/build-image.sh, deploy/Dockerfile) carry YuNet and SFace, and what
# their QUORUMID_FACE_MODELS names.
IMAGE_FACE_MODELS = "/usr/share/quorumid/models"
FACE_MODELS_ENV = "QUORUMID_FACE_MODELS"


class Overlay:
    def __init__(self, path, docs):
        self.path = path
        self.docs = docs

    def kind(self, kind):
        return [d for d in self.docs if d.get("kind") == kind]

    def one(self, kind):
        found = self.kind(kind)
        if len(found) != 1:
            raise CheckError(f"{self.path}: expected one {kind}, found {len(found)}")
        return found[0]

    @property
    def sts(self):
        return self.one("StatefulSet")

    @property
    def pod_labels(self):
        return self.sts["spec"]["template"]["metadata"].get("labels", {})

    @property
    def container(self):
        containers = self.sts["spec"]["template"]["spec"]["containers"]
        return next(c for c in containers if c["name"] == "node")

    def config_map(self, name):
        return next(
            (c for c in self.kind("ConfigMap") if c["metadata"]["name"] == name), None
        )

    def environment(self):
        """The node container's environment: envFrom ConfigMaps, then env values."""
        env = {}
        for source in self.container.get("envFrom", []):
            ref = source.get("configMapRef")
            if ref:
                cm = self.config_map(ref["name"])
                if cm is None:
                    raise CheckError(f"{self.path}: envFrom names missing ConfigMap {ref['name']}")
                env.update(cm.get("data", {}))
        for var in self.container.get("env", []):
            env[var["name"]] = var.get("value", var.get("valueFrom"))
        return env


class CheckError(Exception):
    pass


def selects(selector, labels):
    """Whether a Kubernetes label selector matches `labels` (an empty selector matches all)."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def port_number(container, port):
    """A probe or policy port (a number or a name) as the container's port number."""
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    return None


def named_port(container, name):
    return port_number(container, name)


def under(path, mount):
    return path == mount or path.startswith(mount.rstrip("/") + "/")


# --- checks: each returns a list of problems ----------------------------------------------


def check_probes(o):
    c = o.container
    api = named_port(c, API_PORT_NAME)
    metrics = named_port(c, METRICS_PORT_NAME)
    problems = []
    for name, number in ((API_PORT_NAME, api), (METRICS_PORT_NAME, metrics)):
        if number is None:
            problems.append(f"{o.path}: the node container exposes no port named {name!r}")
    if problems:
        return problems
    listen = (node_config(o).get("telemetry") or {}).get("metrics_listen", "")
    if listen.rpartition(":")[2] != str(metrics):
        problems.append(
            f"{o.path}: node.toml [telemetry] metrics_listen {listen!r} does not serve the "
            f"metrics port {metrics} (the readiness probe asks it for /ready)"
        )
    ready = c.get("readinessProbe") or {}
    http = ready.get("httpGet")
    if http is None:
        problems.append(
            f"{o.path}: readinessProbe must be an httpGet of /ready on the metrics port "
            "(the API port demands a client certificate, which the kubelet cannot present)"
        )
    else:
        if port_number(c, http.get("port")) != metrics:
            problems.append(
                f"{o.path}: readinessProbe port {http.get('port')!r} is not the metrics port {metrics}"
            )
        if http.get("path") != "/ready":
            problems.append(f"{o.path}: readinessProbe path {http.get('path')!r} is not /ready")
        if http.get("scheme", "HTTP") != "HTTP":
            problems.append(f"{o.path}: readinessProbe must use plain HTTP (the metrics port has no TLS)")
    live = c.get("livenessProbe")
    if live:
        handler = live.get("tcpSocket")
        if handler is None:
            problems.append(
                f"{o.path}: livenessProbe must be a tcpSocket check (a gRPC or HTTP check of "
                "the API port needs a client certificate)"
            )
        elif port_number(c, handler.get("port")) != api:
            problems.append(f"{o.path}: livenessProbe must check the API port {api}")
        if live.get("periodSeconds", 10) * live.get("failureThreshold", 3) < 60:
            problems.append(
                f"{o.path}: livenessProbe kills a node after less than 60 s without answer; "
                "a slow Raft node must not be restarted into a worse state"
            )
    return problems


def check_volumes(o):
    spec = o.sts["spec"]
    pod = spec["template"]["spec"]
    volumes = {v["name"] for v in pod.get("volumes", [])}
    claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
    mounts = {m["name"]: m["mountPath"] for m in o.container.get("volumeMounts", [])}
    problems = [
        f"{o.path}: volumeMount {name!r} names no volume and no volumeClaimTemplate"
        for name in mounts
        if name not in volumes and name not in claims
    ]
    problems += [
        f"{o.path}: volumeClaimTemplate {name!r} is not mounted by the node container"
        for name in claims
        if name not in mounts
    ]
    data_dir = node_config(o).get("data_dir", "")
    if not any(n in mounts and under(data_dir, mounts[n]) for n in claims):
        problems.append(f"{o.path}: data_dir {data_dir!r} is not on a persistent volume")
    if not (o.container.get("securityContext") or {}).get("readOnlyRootFilesystem"):
        problems.append(f"{o.path}: the node container must run with readOnlyRootFilesystem")
    return problems


def node_config(o):
    """node.toml as the node reads it: the file named by `--config`, on a ConfigMap volume."""
    args = o.container.get("args", [])
    path = args[args.index("--config") + 1] if "--config" in args[:-1] else "/etc/quorumid/node.toml"
    directory, name = posixpath.split(path)
    mounts = {m["mountPath"].rstrip("/"): m["name"] for m in o.container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in o.sts["spec"]["template"]["spec"].get("volumes", [])}
    volume = volumes.get(mounts.get(directory), {})
    if "configMap" in volume:
        cm = o.config_map(volume["configMap"]["name"])
        if cm and name in cm.get("data", {}):
            return tomllib.loads(cm["data"][name])
    raise CheckError(f"{o.path}: no ConfigMap volume mounted at {directory} carries {name} (--config {path})")


REQUIRED_ENV = [
    "QUORUMID_PROVINCE",
    "QUORUMID_NODE_ID_BASE",
    "QUORUMID_API_ADDR",
    "QUORUMID_RAFT_ADDR",
    "QUORUMID_POD_INDEX",
    "QUORUMID_DOCUMENT_KEY",
    "QUORUMID_PSEUDONYM_KEY",
    "QUORUMID_STORAGE_KEY",
]
# Keys the node reads from its environment: from a Secret (secretKeyRef), never a literal in
# the manifests or the province ConfigMap. The optional ones only when set.
SECRET_ENV = ["QUORUMID_DOCUMENT_KEY", "QUORUMID_PSEUDONYM_KEY", "QUORUMID_STORAGE_KEY"]
OPTIONAL_SECRET_ENV = ["QUORUMID_RETIRED_STORAGE_KEYS"]


def check_environment(o):
    env = o.environment()
    problems = [f"{o.path}: the node's environment lacks {v}" for v in REQUIRED_ENV if v not in env]
    if problems:
        return problems
    index = env["QUORUMID_POD_INDEX"]
    if (index or {}).get("fieldRef", {}).get("fieldPath") != "metadata.labels['apps.kubernetes.io/pod-index']":
        problems.append(f"{o.path}: QUORUMID_POD_INDEX must come from the pod-index label")
    for key in SECRET_ENV + [k for k in OPTIONAL_SECRET_ENV if k in env]:
        if not isinstance(env[key], dict) or "secretKeyRef" not in env[key]:
            problems.append(f"{o.path}: {key} must come from a Secret, not a literal")
    sts = o.sts
    host = f"{sts['metadata']['name']}-{{ordinal}}.{sts['spec']['serviceName']}.{sts['metadata'].get('namespace', 'default')}.svc"
    for var, port_name in (("QUORUMID_API_ADDR", API_PORT_NAME), ("QUORUMID_RAFT_ADDR", RAFT_PORT_NAME)):
        want = f"https://{host}:{named_port(o.container, port_name)}"
        if not str(env[var]).startswith("https://"):
            problems.append(
                f"{o.path}: {var} {env[var]!r} must be https:// (with TLS the node refuses "
                "any other address)"
            )
        elif env[var] != want:
            problems.append(f"{o.path}: {var} is {env[var]!r}; this StatefulSet's pods are {want!r}")
    return problems


def check_tls(o):
    env = o.environment()
    problems = []
    if "QUORUMID_INSECURE_PLAINTEXT" in env:
        problems.append(
            f"{o.path}: QUORUMID_INSECURE_PLAINTEXT is set: the deployment must use mutual "
            "TLS, never plaintext"
        )
    if (node_config(o).get("tls") or {}).get("insecure_plaintext"):
        problems.append(f"{o.path}: node.toml sets [tls] insecure_plaintext: never in a deployment")
    pod = o.sts["spec"]["template"]["spec"]
    tls_volumes = {
        v["name"] for v in pod.get("volumes", []) if (v.get("secret") or {}).get("secretName") == TLS_SECRET
    }
    mounts = [m for m in o.container.get("volumeMounts", []) if m["name"] in tls_volumes]
    if not mounts:
        return problems + [f"{o.path}: no volume of the Secret {TLS_SECRET!r} is mounted in the node container"]
    dirs = []
    for m in mounts:
        if m.get("subPath") or m.get("subPathExpr"):
            problems.append(
                f"{o.path}: the {TLS_SECRET} volume is mounted with subPath, which the kubelet "
                "never updates: renewed certificates would not reach the node"
            )
        else:
            dirs.append(m["mountPath"])
        if not m.get("readOnly"):
            problems.append(f"{o.path}: the {TLS_SECRET} volume must be mounted readOnly")
    for var in TLS_ENV:
        value = env.get(var)
        if value is None:
            problems.append(f"{o.path}: the node's environment lacks {var} (mutual TLS)")
        elif not isinstance(value, str):
            problems.append(f"{o.path}: {var} must be a literal file path")
        elif not any(under(value, d) for d in dirs):
            problems.append(f"{o.path}: {var} {value!r} is not under the {TLS_SECRET} mount {dirs}")
        elif var != "QUORUMID_TLS_CA" and NODE_ID_PLACEHOLDER not in value:
            problems.append(
                f"{o.path}: {var} {value!r} lacks {NODE_ID_PLACEHOLDER}: every pod mounts the "
                "one Secret with every node's files and must pick its own"
            )
    return problems


def check_face_models(o):
    env = o.environment()
    toml = (node_config(o).get("biometrics") or {}).get("face_models")
    if FACE_MODELS_ENV in env:
        value, source = env[FACE_MODELS_ENV], FACE_MODELS_ENV
    elif toml is not None:
        value, source = toml, "node.toml [biometrics] face_models"
        if posixpath.normpath(str(toml)) != IMAGE_FACE_MODELS:
            return [
                f"{o.path}: {source} {toml!r} is overridden by the image's {FACE_MODELS_ENV}="
                f"{IMAGE_FACE_MODELS}: set {FACE_MODELS_ENV} in the container's environment instead"
            ]
    else:
        return [
            f"{o.path}: the face models are not configured ({FACE_MODELS_ENV} or node.toml "
            f"[biometrics] face_models; the image carries them at {IMAGE_FACE_MODELS}): the "
            "node would answer NO_FACE_MODELS to face photographs"
        ]
    if not isinstance(value, str) or not value:
        return [f"{o.path}: {source} must be a literal directory, got {value!r}"]
    if not posixpath.isabs(value):
        return [f"{o.path}: {source} {value!r} must be an absolute directory"]
    # The deepest mount holding the directory hides whatever the image has there.
    mounts = [m for m in o.container.get("volumeMounts", []) if under(value, m["mountPath"])]
    if mounts:
        mount = max(mounts, key=lambda m: len(m["mountPath"]))
        spec = o.sts["spec"]
        volumes = {v["name"]: v for v in spec["template"]["spec"].get("volumes", [])}
        claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
        volume = volumes.get(mount["name"], {})
        # Volumes that start empty or hold configuration: never the models (a ConfigMap or
        # Secret holds at most 1 MiB; SFace is 37 MiB).
        if mount["name"] in claims or {"configMap", "secret", "emptyDir", "projected", "downwardAPI"} & set(volume):
            return [
                f"{o.path}: {source} {value!r} is under the mount {mount['mountPath']} (volume "
                f"{mount['name']}), which hides the image's models and does not carry them; the "
                f"image has them at {IMAGE_FACE_MODELS}"
            ]
        return []  # a volume the operator provides the models on
    if posixpath.normpath(value) != IMAGE_FACE_MODELS:
        return [
            f"{o.path}: {source} {value!r} is not where the image carries the face models "
            f"({IMAGE_FACE_MODELS})"
        ]
    return []


def check_selectors(o):
    labels = o.pod_labels
    problems = []
    if not selects(o.sts["spec"]["selector"], labels):
        problems.append(f"{o.path}: the StatefulSet selector does not match its pod template")
    for pdb in o.kind("PodDisruptionBudget"):
        if not selects(pdb["spec"].get("selector"), labels):
            problems.append(f"{o.path}: PDB {pdb['metadata']['name']} does not select the pods")
        if pdb["spec"].get("selector") != o.sts["spec"]["selector"]:
            problems.append(f"{o.path}: PDB {pdb['metadata']['name']} selector differs from the StatefulSet's")
        if pdb["spec"].get("maxUnavailable") != 1:
            problems.append(f"{o.path}: PDB {pdb['metadata']['name']} must allow maxUnavailable 1")
    if not o.kind("PodDisruptionBudget"):
        problems.append(f"{o.path}: no PodDisruptionBudget")
    container_ports = {p.get("name") for p in o.container.get("ports", [])}
    for svc in o.kind("Service"):
        name = svc["metadata"]["name"]
        # A Service selector is a plain label map, not a LabelSelector.
        selector = svc["spec"].get("selector")
        if not selector or not selects({"matchLabels": selector}, labels):
            problems.append(f"{o.path}: Service {name}: its selector does not match the pods")
        for port in svc["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            if isinstance(target, str) and target not in container_ports:
                problems.append(f"{o.path}: Service {name} targets port {target!r}, which the container lacks")
    peers = next(
        (s for s in o.kind("Service") if s["metadata"]["name"] == o.sts["spec"]["serviceName"]), None
    )
    if peers is None:
        problems.append(f"{o.path}: no Service named {o.sts['spec']['serviceName']} (the StatefulSet's serviceName)")
    else:
        if peers["spec"].get("clusterIP") != "None" or not peers["spec"].get("publishNotReadyAddresses"):
            problems.append(
                f"{o.path}: the peers Service must be headless with publishNotReadyAddresses: "
                "a node without a leader is not ready, yet its peers must reach it"
            )
        names = {p.get("name") for p in peers["spec"].get("ports", [])}
        if not {API_PORT_NAME, RAFT_PORT_NAME} <= names:
            problems.append(f"{o.path}: the peers Service must expose the api and raft ports")
    if o.sts["spec"].get("podManagementPolicy") != "Parallel":
        problems.append(f"{o.path}: podManagementPolicy must be Parallel")
    return problems


def check_network_policy(o, all_overlays):
    raft = named_port(o.container, RAFT_PORT_NAME)
    api = named_port(o.container, API_PORT_NAME)
    policies = [p for p in o.kind("NetworkPolicy") if selects(p["spec"].get("podSelector"), o.pod_labels)]
    if not policies:
        return [f"{o.path}: no NetworkPolicy selects the pods"]
    problems = []
    raft_peers_ok = False
    api_ok = False
    for policy in policies:
        if "Ingress" not in policy["spec"].get("policyTypes", ["Ingress"]):
            continue
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            numbers = (
                None if not ports else {port_number(o.container, p.get("port")) for p in ports}
            )
            allows_raft = numbers is None or raft in numbers
            allows_api = numbers is None or api in numbers
            sources = rule.get("from")
            if allows_api:
                api_ok = True
            if not allows_raft:
                continue
            only_pods = bool(sources) and all(set(s) == {"podSelector"} for s in sources)
            if not only_pods:
                problems.append(
                    f"{o.path}: NetworkPolicy {policy['metadata']['name']} admits the Raft port "
                    "from more than quorumid pods"
                )
                continue
            for other in all_overlays:
                if not any(selects(s["podSelector"], other.pod_labels) for s in sources):
                    problems.append(
                        f"{o.path}: NetworkPolicy {policy['metadata']['name']} does not admit "
                        f"Raft traffic from the pods of {other.path}"
                    )
                    break
            else:
                raft_peers_ok = True
    if not raft_peers_ok:
        problems.append(f"{o.path}: no NetworkPolicy rule admits the Raft port from quorumid pods")
    if not api_ok:
        problems.append(f"{o.path}: no NetworkPolicy rule admits the API port")
    return problems


def truthy(value):
    return str(value).lower() in ("1", "true", "yes")


def check_across(overlays):
    problems = []
    seeds = [o.path for o in overlays if truthy(o.environment().get("QUORUMID_SEED", ""))]
    if len(seeds) != 1:
        problems.append(f"exactly one overlay must be the seed (QUORUMID_SEED=true); found {seeds or 'none'}")
    ranges = []
    for o in overlays:
        base = int(o.environment().get("QUORUMID_NODE_ID_BASE", "0"))
        replicas = o.sts["spec"].get("replicas", 1)
        if base <= 0:
            problems.append(f"{o.path}: QUORUMID_NODE_ID_BASE must be positive")
        for other_path, other_base, other_replicas in ranges:
            if base < other_base + other_replicas and other_base < base + replicas:
                problems.append(
                    f"{o.path}: node ids {base}..{base + replicas - 1} overlap those of {other_path}"
                )
        ranges.append((o.path, base, replicas))
    for o in overlays:
        for other in overlays:
            if o is not other and selects(o.sts["spec"]["selector"], other.pod_labels):
                problems.append(f"{o.path}: the StatefulSet selector also matches the pods of {other.path}")
    services = set()
    for o in overlays:
        for svc in o.kind("Service"):
            ns = svc["metadata"].get("namespace", "default")
            services.add(f"{svc['metadata']['name']}.{ns}.svc")
            if svc["spec"].get("clusterIP") == "None":
                sts = o.sts
                for i in range(sts["spec"].get("replicas", 1)):
                    services.add(f"{sts['metadata']['name']}-{i}.{svc['metadata']['name']}.{ns}.svc")
    for o in overlays:
        for addr in str(o.environment().get("QUORUMID_JOIN", "")).split(","):
            addr = addr.strip()
            if not addr:
                continue
            match = re.fullmatch(r"(https?)://([^:/]+):(\d+)", addr)
            if match and match.group(1) != "https":
                problems.append(f"{o.path}: join address {addr!r} is not https:// (the node refuses it with TLS)")
            elif not match or match.group(2) not in services:
                problems.append(f"{o.path}: join address {addr!r} names no rendered Service or pod")
    return problems


def run_checks(overlays):
    problems = []
    for o in overlays:
        for check in (
            check_probes,
            check_volumes,
            check_environment,
            check_tls,
            check_face_models,
            check_selectors,
        ):
            try:
                problems += check(o)
            except (CheckError, KeyError, StopIteration, TypeError) as e:
                problems.append(f"{o.path}: {check.__name__}: cannot check: {e!r}")
        problems += check_network_policy(o, overlays)
    problems += check_across(overlays)
    return problems


# --- self-test: every check must notice a breakage of its own -------------------------------


def breakages():
    """(what, function that breaks the overlays in place)."""

    def sts(os_, i=0):
        return os_[i].sts

    def node(os_, i=0):
        return os_[i].container

    def cm_env(os_, i=0):
        name = node(os_, i)["envFrom"][0]["configMapRef"]["name"]
        return os_[i].config_map(name)["data"]

    def env_var(os_, name, i=0):
        return next(v for v in node(os_, i)["env"] if v["name"] == name)

    def config_data(os_, i=0):
        return next(c for c in os_[i].kind("ConfigMap") if "node.toml" in c.get("data", {}))["data"]

    def tls_mount(os_):
        return next(m for m in node(os_)["volumeMounts"] if m["name"] == "tls")

    def set_probe_port(os_):
        node(os_)["readinessProbe"]["httpGet"]["port"] = "api"

    def exec_readiness(os_):
        node(os_)["readinessProbe"] = {"exec": {"command": ["true"]}}

    def grpc_readiness(os_):
        node(os_)["readinessProbe"] = {"grpc": {"port": 7100}}

    def readiness_path(os_):
        node(os_)["readinessProbe"]["httpGet"]["path"] = "/metrics"

    def metrics_elsewhere(os_):
        data = config_data(os_)
        data["node.toml"] = data["node.toml"].replace("0.0.0.0:9100", "0.0.0.0:9200")

    def strict_liveness(os_):
        node(os_)["livenessProbe"]["failureThreshold"] = 1

    def grpc_liveness(os_):
        node(os_)["livenessProbe"].pop("tcpSocket")
        node(os_)["livenessProbe"]["grpc"] = {"port": 7100}

    def config_not_mounted(os_):
        args = node(os_)["args"]
        args[args.index("--config") + 1] = "/etc/elsewhere/node.toml"

    def rename_api_port(os_):
        node(os_)["ports"][0]["name"] = "grpc"

    def unmounted_claim(os_):
        node(os_)["volumeMounts"] = [m for m in node(os_)["volumeMounts"] if m["name"] != "data"]

    def unknown_mount(os_):
        node(os_)["volumeMounts"].append({"name": "scratch", "mountPath": "/scratch"})

    def writable_root(os_):
        node(os_)["securityContext"]["readOnlyRootFilesystem"] = False

    def second_seed(os_):
        cm_env(os_, 1)["QUORUMID_SEED"] = "true"

    def no_seed(os_):
        for i in range(len(os_)):
            cm_env(os_, i)["QUORUMID_SEED"] = "false"

    def overlapping_ids(os_):
        cm_env(os_, 1)["QUORUMID_NODE_ID_BASE"] = cm_env(os_, 0)["QUORUMID_NODE_ID_BASE"]

    def wrong_address(os_):
        cm_env(os_)["QUORUMID_API_ADDR"] = cm_env(os_)["QUORUMID_API_ADDR"].replace("-peers", "")

    def literal_key(os_):
        for var in node(os_)["env"]:
            if var["name"] == "QUORUMID_DOCUMENT_KEY":
                var.pop("valueFrom")
                var["value"] = "00" * 32

    def literal_storage_key(os_):
        var = env_var(os_, "QUORUMID_STORAGE_KEY")
        var.pop("valueFrom")
        var["value"] = "00" * 32

    def literal_retired_keys(os_):
        var = env_var(os_, "QUORUMID_RETIRED_STORAGE_KEYS")
        var.pop("valueFrom")
        var["value"] = "1:" + "00" * 32

    def retired_keys_in_config_map(os_):
        node(os_)["env"] = [v for v in node(os_)["env"] if v["name"] != "QUORUMID_RETIRED_STORAGE_KEYS"]
        cm_env(os_)["QUORUMID_RETIRED_STORAGE_KEYS"] = "1:" + "00" * 32

    def missing_storage_key(os_):
        node(os_)["env"] = [v for v in node(os_)["env"] if v["name"] != "QUORUMID_STORAGE_KEY"]

    def plain_address(os_):
        cm_env(os_)["QUORUMID_RAFT_ADDR"] = cm_env(os_)["QUORUMID_RAFT_ADDR"].replace("https://", "http://")

    def plain_join(os_):
        join = cm_env(os_, 1)["QUORUMID_JOIN"].split(",")
        join[-1] = join[-1].replace("https://", "http://")
        cm_env(os_, 1)["QUORUMID_JOIN"] = ",".join(join)

    def insecure_plaintext(os_):
        cm_env(os_)["QUORUMID_INSECURE_PLAINTEXT"] = "true"

    def insecure_plaintext_toml(os_):
        config_data(os_)["node.toml"] += "\n[tls]\ninsecure_plaintext = true\n"

    def missing_tls_key(os_):
        node(os_)["env"] = [v for v in node(os_)["env"] if v["name"] != "QUORUMID_TLS_KEY"]

    def cert_outside_secret(os_):
        env_var(os_, "QUORUMID_TLS_CERT")["value"] = "/etc/quorumid/node-{node_id}.pem"

    def one_cert_for_all(os_):
        env_var(os_, "QUORUMID_TLS_CERT")["value"] = "/etc/quorumid/tls/node.pem"

    def tls_sub_path(os_):
        tls_mount(os_)["subPath"] = "ca.pem"

    def tls_writable(os_):
        tls_mount(os_).pop("readOnly")

    def tls_other_secret(os_):
        for volume in sts(os_)["spec"]["template"]["spec"]["volumes"]:
            if volume["name"] == "tls":
                volume["secret"]["secretName"] = "some-tls"

    def no_face_models(os_):
        node(os_)["env"] = [v for v in node(os_)["env"] if v["name"] != "QUORUMID_FACE_MODELS"]

    def face_models_on_data_volume(os_):
        env_var(os_, "QUORUMID_FACE_MODELS")["value"] = "/var/lib/quorumid/models"

    def face_models_not_in_image(os_):
        env_var(os_, "QUORUMID_FACE_MODELS")["value"] = "/opt/models"

    def face_models_relative(os_):
        env_var(os_, "QUORUMID_FACE_MODELS")["value"] = "models"

    def face_models_in_toml_only(os_):
        no_face_models(os_)
        config_data(os_)["node.toml"] += '\n[biometrics]\nface_models = "/opt/models"\n'

    def missing_province(os_):
        del cm_env(os_)["QUORUMID_PROVINCE"]

    def pdb_selector(os_):
        pdb = os_[0].kind("PodDisruptionBudget")[0]
        pdb["spec"]["selector"]["matchLabels"]["quorumid/province"] = "elsewhere"

    def service_selector(os_):
        svc = os_[0].kind("Service")[0]
        svc["spec"]["selector"]["app.kubernetes.io/name"] = "other"

    def peers_not_ready_hidden(os_):
        for svc in os_[0].kind("Service"):
            svc["spec"].pop("publishNotReadyAddresses", None)

    def ordered_pods(os_):
        sts(os_)["spec"]["podManagementPolicy"] = "OrderedReady"

    def raft_from_one_province(os_):
        policy = os_[0].kind("NetworkPolicy")[0]
        policy["spec"]["ingress"][0]["from"][0]["podSelector"] = {
            "matchLabels": dict(os_[0].pod_labels)
        }

    def raft_from_anywhere(os_):
        policy = os_[0].kind("NetworkPolicy")[0]
        policy["spec"]["ingress"][1]["ports"].append({"port": "raft", "protocol": "TCP"})

    def shared_selector(os_):
        sts(os_, 1)["spec"]["selector"] = {"matchLabels": {"app.kubernetes.io/name": "quorumid"}}

    def bad_join(os_):
        cm_env(os_)["QUORUMID_JOIN"] = "https://nowhere.quorumid.svc:7100"

    return [
        # (what, how to break it, words the complaint must contain)
        ("readiness probe on the API port", set_probe_port, "is not the metrics port"),
        ("readiness probe not HTTP", exec_readiness, "must be an httpGet of /ready"),
        ("readiness probe over gRPC (no client certificate)", grpc_readiness, "must be an httpGet of /ready"),
        ("readiness probe path not /ready", readiness_path, "is not /ready"),
        ("metrics served on another port", metrics_elsewhere, "metrics_listen"),
        ("strict liveness probe", strict_liveness, "less than 60 s"),
        ("liveness probe over gRPC (no client certificate)", grpc_liveness, "must be a tcpSocket check"),
        ("--config not on a mounted volume", config_not_mounted, "carries node.toml"),
        ("API port renamed", rename_api_port, "no port named"),
        ("PVC template not mounted", unmounted_claim, "is not mounted"),
        ("mount of an unknown volume", unknown_mount, "names no volume"),
        ("writable root filesystem", writable_root, "readOnlyRootFilesystem"),
        ("two seed provinces", second_seed, "exactly one overlay must be the seed"),
        ("no seed province", no_seed, "exactly one overlay must be the seed"),
        ("overlapping node ids", overlapping_ids, "overlap"),
        ("address not under the peers Service", wrong_address, "QUORUMID_API_ADDR is"),
        ("key as a literal", literal_key, "must come from a Secret"),
        ("storage key as a literal", literal_storage_key, "QUORUMID_STORAGE_KEY must come from a Secret"),
        ("retired storage keys as a literal", literal_retired_keys,
         "QUORUMID_RETIRED_STORAGE_KEYS must come from a Secret"),
        ("retired storage keys in the province ConfigMap", retired_keys_in_config_map,
         "QUORUMID_RETIRED_STORAGE_KEYS must come from a Secret"),
        ("storage key missing", missing_storage_key, "lacks QUORUMID_STORAGE_KEY"),
        ("plain http:// address", plain_address, "QUORUMID_RAFT_ADDR 'http://"),
        ("plain http:// join address", plain_join, "is not https://"),
        ("plaintext allowed by environment", insecure_plaintext, "QUORUMID_INSECURE_PLAINTEXT is set"),
        ("plaintext allowed by node.toml", insecure_plaintext_toml, "sets [tls] insecure_plaintext"),
        ("TLS key missing", missing_tls_key, "lacks QUORUMID_TLS_KEY"),
        ("certificate outside the TLS Secret", cert_outside_secret, "is not under the quorumid-tls mount"),
        ("one certificate for every node", one_cert_for_all, "lacks {node_id}"),
        ("TLS Secret mounted by subPath", tls_sub_path, "subPath"),
        ("TLS Secret mounted writable", tls_writable, "must be mounted readOnly"),
        ("TLS volume from another Secret", tls_other_secret, "no volume of the Secret"),
        ("face models not configured", no_face_models, "face models are not configured"),
        ("face models on the data volume", face_models_on_data_volume, "hides the image's models"),
        ("face models where the image has none", face_models_not_in_image,
         "is not where the image carries the face models"),
        ("face models at a relative path", face_models_relative, "must be an absolute directory"),
        ("face models in node.toml, overridden by the image", face_models_in_toml_only,
         "is overridden by the image's QUORUMID_FACE_MODELS"),
        ("province missing", missing_province, "lacks QUORUMID_PROVINCE"),
        ("PDB selecting nothing", pdb_selector, "does not select the pods"),
        ("Service selecting nothing", service_selector, "its selector does not match the pods"),
        ("peers Service hides not-ready pods", peers_not_ready_hidden, "publishNotReadyAddresses"),
        ("ordered pod management", ordered_pods, "Parallel"),
        ("Raft port only from one province", raft_from_one_province, "does not admit Raft traffic"),
        ("Raft port from platform namespaces", raft_from_anywhere, "more than quorumid pods"),
        ("StatefulSet selector shared across provinces", shared_selector, "also matches the pods"),
        ("join address of no Service", bad_join, "names no rendered Service"),
    ]


def self_test(overlays):
    if len(overlays) < 2:
        print("self-test needs at least two overlays", file=sys.stderr)
        return 1
    failed = 0
    for what, brk, words in breakages():
        broken = [Overlay(o.path, copy.deepcopy(o.docs)) for o in overlays]
        brk(broken)
        noticed = [p for p in run_checks(broken) if words in p]
        if noticed:
            print(f"ok, noticed: {what}: {noticed[0]}")
        else:
            print(f"NOT NOTICED: {what} (no complaint with {words!r})", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def load(path):
    with open(path) as f:
        return Overlay(path, [d for d in yaml.safe_load_all(f) if d])


def main(argv):
    test = argv[:1] == ["--self-test"]
    paths = argv[1:] if test else argv
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    overlays = [load(p) for p in paths]
    problems = run_checks(overlays)
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"semantic checks passed for {len(overlays)} overlays")
    return self_test(overlays) if test else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
