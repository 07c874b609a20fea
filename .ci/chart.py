"""Checks of the Helm chart (charts/fledge), offline: no cluster, no helm binary.

Helm itself runs through its Go SDK in a Python wheel (helm-python-sdk: Helm 4); the Kubernetes
schemas come from kubernetes-validate. For the default values and for each values file in
charts/fledge/ci/ it lints the chart (strict), renders it as `helm install --dry-run=client`
does (values schema included), validates every object against the Kubernetes schemas
(`--strict`: unknown fields fail) at the chart's minimum Kubernetes version and at the one the
controller is built against, and asserts the restricted Pod Security Standard, the probes,
leader election and the RBAC rules. Then: every file in ci/bad/ must fail with the message its
first line expects; the CRDs and the examples validate (Canaries and MetricTemplates against
the CRDs' own schemas); the example Canaries are rehearsed in fledge-sim; the Dockerfile agrees
with the chart, and the commands its comments show exist (subcommand, flags, scenario); every
environment variable the chart sets is one the controller reads; the schema's verdict on log
filters agrees with the controller's; the READMEs' helm commands set the image and do not
--reuse-values.

Run by .ci/chart, which creates the virtualenv. Exits non-zero naming every failed check.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import time
import urllib.parse

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "fledge"
# The chart's kubeVersion floor, and the API the controller is built against.
KUBE_VERSIONS = ["1.25.0", "1.33.0"]
RELEASE, NAMESPACE = "fledge", "fledge-system"
# The port the controller's container listens on, whatever service.port says (a port below 1024
# needs a capability a non-root process may not keep); the Dockerfile EXPOSEs it.
OPS_PORT = 8080
# The debug binaries (.ci/chart builds them).
TARGET = pathlib.Path(os.environ.get("FLEDGE_BIN_DIR", ROOT / "target" / "debug"))

failures: list[str] = []


def fail(where: str, what: str) -> None:
    failures.append(f"{where}: {what}")
    print(f"FAIL {where}: {what}")


def load_yaml_docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def render(values: dict) -> str:
    """The manifest `helm install --dry-run=client` prints (the values schema is enforced)."""
    # Client-side dry run: nothing is contacted; the address is only required to be set.
    with helm.Config(
        namespace=NAMESPACE, storage_driver="memory", kube_apiserver="https://127.0.0.1:1"
    ) as cfg:
        release = cfg.install(str(CHART), RELEASE, values, dry_run="client")
    return release["manifest"]


# ---- per value set ----


def lint(label: str, values: dict) -> None:
    report = helm.lint(str(CHART), values, strict=True, kube_version="v" + KUBE_VERSIONS[-1])
    for message in report.get("messages", []):
        if message["severity"] >= 2:
            fail(f"lint [{label}]", f"{message['path']}: {message['error']}")
    for error in report.get("errors") or []:
        fail(f"lint [{label}]", error)


def validate_objects(label: str, objects: list[dict]) -> None:
    for obj in objects:
        name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except SchemaNotFoundError:
                if obj["kind"] not in ("ServiceMonitor", "CiliumNetworkPolicy"):
                    fail(f"[{label}] {name}", f"no Kubernetes {version} schema for this kind")
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                fail(f"[{label}] {name}", f"Kubernetes {version} schema: {path}: {e.message}")


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


# What the baseline Pod Security Standard (part of restricted) allows, on every Kubernetes
# version the chart supports (1.25 on; later versions allow a few more sysctls).
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
}
SELINUX_TYPES = {None, "", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


def check_context(at: str, sc: dict) -> None:
    """The fields a pod's and a container's security context share: seccomp, SELinux,
    AppArmor and Windows options."""
    seccomp = sc.get("seccompProfile", {})
    if seccomp.get("type") == "Localhost" and not seccomp.get("localhostProfile"):
        fail(at, "seccompProfile Localhost without localhostProfile")
    selinux = sc.get("seLinuxOptions", {})
    if selinux.get("type") not in SELINUX_TYPES:
        fail(at, f"seLinuxOptions type {selinux['type']}")
    for field in ("user", "role"):
        if selinux.get(field):
            fail(at, f"seLinuxOptions {field} is set")
    if sc.get("appArmorProfile", {}).get("type") not in (None, "RuntimeDefault", "Localhost"):
        fail(at, f"appArmorProfile {sc['appArmorProfile']['type']}")
    if sc.get("windowsOptions", {}).get("hostProcess"):
        fail(at, "windowsOptions hostProcess")


def check_restricted(where: str, template: dict) -> None:
    """The restricted Pod Security Standard's rules (Kubernetes docs, 'Pod Security Standards')."""
    pod = template["spec"]
    psc = pod.get("securityContext", {})
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            fail(where, f"{field} is set")
    for volume in pod.get("volumes", []):
        if "hostPath" in volume:
            fail(where, f"volume {volume['name']} is a hostPath")
    if psc.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
        fail(where, "pod seccompProfile is not RuntimeDefault")
    check_context(f"{where} pod", psc)
    for sysctl in psc.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            fail(where, f"unsafe sysctl {sysctl['name']}")
    for key, value in template["metadata"].get("annotations", {}).items():
        if key.startswith(APPARMOR_ANNOTATION) and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            fail(where, f"AppArmor annotation {key}: {value}")
    for c in pod.get("initContainers", []) + pod["containers"]:
        sc = c.get("securityContext", {})
        at = f"{where} container {c['name']}"
        check_context(at, sc)
        if sc.get("privileged"):
            fail(at, "privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            fail(at, "allowPrivilegeEscalation is not false")
        if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            fail(at, "runAsNonRoot is not true")
        if sc.get("runAsUser", psc.get("runAsUser")) in (0, None):
            fail(at, "no fixed non-zero runAsUser")
        if sc.get("readOnlyRootFilesystem") is not True:
            fail(at, "root filesystem is writable")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            fail(at, "capabilities do not drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            fail(at, f"adds capabilities {caps['add']}")
        seccomp = sc.get("seccompProfile", {}).get("type")
        if seccomp not in (None, "RuntimeDefault", "Localhost"):
            fail(at, f"seccompProfile {seccomp}")
        for port in c.get("ports", []):
            if "hostPort" in port:
                fail(at, "uses a hostPort")
        if not c.get("resources", {}).get("requests") or not c.get("resources", {}).get("limits"):
            fail(at, "resources without requests or limits")


def merged(defaults: dict, values: dict) -> dict:
    """The values as Helm merges them: `values` over the chart's defaults, map by map."""
    out = dict(defaults)
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def check_prometheus_egress(label: str, policy: dict, values: dict) -> None:
    """The NetworkPolicy lets the controller reach the Prometheus of `prometheus.address`."""
    values = merged(yaml.safe_load((CHART / "values.yaml").read_text()), values)
    url = urllib.parse.urlsplit(values["prometheus"]["address"])
    wanted = values["networkPolicy"]["prometheus"]
    port = wanted["port"] or url.port or {"http": 80, "https": 443}[url.scheme]
    if wanted["to"]:
        peers = wanted["to"]
    else:
        # A Service name: <svc> (the release's namespace), <svc>.<namespace>[.svc[.<domain>]].
        labels = url.hostname.split(".")
        if not (len(labels) == 1 or len(labels) == 2 or labels[2] == "svc"):
            fail(f"[{label}] values", f"{url.hostname} is not a Service name: no namespace to expect")
            return
        namespace = wanted["namespace"] or (labels[1] if len(labels) > 1 else NAMESPACE)
        peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}
        if wanted["podSelector"]:
            peer["podSelector"] = {"matchLabels": wanted["podSelector"]}
        peers = [peer]
    rule = {"to": peers, "ports": [{"port": port, "protocol": "TCP"}]}
    if rule not in policy["spec"]["egress"]:
        fail(f"[{label}] NetworkPolicy", f"no egress to Prometheus ({values['prometheus']['address']}): {rule}")


def check_controller(label: str, objects: list[dict], values: dict) -> None:
    [deployment] = by_kind(objects, "Deployment")
    template = deployment["spec"]["template"]
    pod = template["spec"]
    where = f"[{label}] Deployment"
    check_restricted(where, template)
    selector = deployment["spec"]["selector"]["matchLabels"]
    if any(template["metadata"]["labels"].get(k) != v for k, v in selector.items()):
        fail(where, f"pod labels {template['metadata']['labels']} do not match the selector {selector}")
    [c] = pod["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    port = {p["name"]: p["containerPort"] for p in c["ports"]}["http"]
    probes = {
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    for probe, path in probes.items():
        got = c.get(probe, {}).get("httpGet", {})
        if got.get("path") != path or got.get("port") not in ("http", port):
            fail(where, f"{probe} is {got}, expected {path} on the ops port")
    replicas = deployment["spec"]["replicas"]
    elect = env.get("FLEDGE_LEADER_ELECT")
    if replicas > 1 and elect != "true":
        fail(where, f"{replicas} replicas with FLEDGE_LEADER_ELECT={elect}")
    # Written out both ways: a Recreate over a defaulted rollingUpdate is refused on upgrade.
    strategy = deployment["spec"].get("strategy")
    wanted = (
        {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
        if elect == "true"
        else {"type": "Recreate", "rollingUpdate": None}
    )
    if strategy != wanted:
        fail(where, f"update strategy {strategy}, expected {wanted}")
    if port != OPS_PORT:
        fail(where, f"container port {port}, not {OPS_PORT}")
    # The controller-wide alerts' addresses come from the Secret alone, never from values.
    alerts = merged(yaml.safe_load((CHART / "values.yaml").read_text()), values)["alerts"]
    env_from = [e.get("secretRef", {}).get("name") for e in c.get("envFrom", [])]
    if env_from != ([alerts["secretName"]] if alerts["secretName"] else []):
        fail(where, f"envFrom {env_from}, expected the alerts Secret {alerts['secretName']!r}")
    for var, value in [("FLEDGE_SLACK_USER", "slackUser"), ("FLEDGE_SLACK_CHANNEL", "slackChannel"),
                       ("FLEDGE_CLUSTER_NAME", "clusterName")]:
        if env.get(var) != alerts[value]:
            fail(where, f"{var} is {env.get(var)!r}, not alerts.{value} {alerts[value]!r}")
    if env.get("FLEDGE_LISTEN") != f"0.0.0.0:{port}":
        fail(where, f"FLEDGE_LISTEN {env.get('FLEDGE_LISTEN')} is not the container port {port}")
    [service] = by_kind(objects, "Service")
    [service_port] = service["spec"]["ports"]
    service_value = merged(yaml.safe_load((CHART / "values.yaml").read_text()), values)["service"]["port"]
    if service_port["targetPort"] != "http" or service_port["port"] != service_value:
        fail(f"[{label}] Service", f"port {service_port} is not service.port {service_value} to the ops port")
    for monitor in by_kind(objects, "ServiceMonitor"):
        # No schema offline for the Prometheus Operator's kinds: check what ties it to us.
        endpoint_ports = [e.get("port") for e in monitor["spec"]["endpoints"]]
        if endpoint_ports != [service_port["name"]]:
            fail(f"[{label}] ServiceMonitor", f"endpoints {endpoint_ports} miss the Service's port")
        selector = monitor["spec"]["selector"]["matchLabels"]
        if any(service["metadata"]["labels"].get(k) != v for k, v in selector.items()):
            fail(f"[{label}] ServiceMonitor", "selector does not select the Service")
    expected = {
        "PodDisruptionBudget": values.get("podDisruptionBudget", {}).get("enabled", False),
        "NetworkPolicy": values.get("networkPolicy", {}).get("enabled", False),
        "ServiceMonitor": values.get("serviceMonitor", {}).get("enabled", False),
    }
    for kind, wanted in expected.items():
        if bool(by_kind(objects, kind)) != wanted:
            fail(f"[{label}] {kind}", f"rendered: {not wanted}, expected: {wanted}")
    for policy in by_kind(objects, "NetworkPolicy"):
        check_prometheus_egress(label, policy, values)
        dns = merged(yaml.safe_load((CHART / "values.yaml").read_text()), values)["networkPolicy"]["dns"]
        if {"to": dns["to"], "ports": dns["ports"]} not in policy["spec"]["egress"]:
            fail(f"[{label}] NetworkPolicy", f"no egress to DNS as networkPolicy.dns sets it: {dns}")
    cilium = values.get("networkPolicy", {})
    cilium = cilium.get("enabled", False) and cilium.get("ciliumApiServer", False)
    policies = by_kind(objects, "CiliumNetworkPolicy")
    if bool(policies) != cilium:
        fail(f"[{label}] CiliumNetworkPolicy", f"rendered: {bool(policies)}, expected: {cilium}")
    for policy in policies:
        # No schema offline for Cilium's kinds either: what ties it to the controller's pods.
        if policy["spec"]["endpointSelector"]["matchLabels"] != selector:
            fail(f"[{label}] CiliumNetworkPolicy", "does not select the controller's pods")
        if [e.get("toEntities") for e in policy["spec"]["egress"]] != [["kube-apiserver"]]:
            fail(f"[{label}] CiliumNetworkPolicy", "egress is not to the kube-apiserver entity")


def expected_rules(values: dict) -> dict[str, list[dict]]:
    """Rules by Role kind and namespace, as rbac/permissions.yaml and the values select them."""
    perms = yaml.safe_load((CHART / "rbac" / "permissions.yaml").read_text())
    provider = values.get("provider", "istio")
    wanted = [provider] + values.get("extraProviders", [])
    flagger = values.get("flaggerCanaries", False)
    templates = perms["metricTemplates"] + (perms["flaggerMetricTemplates"] if flagger else [])
    watched = perms["canaries"] + (perms["flaggerCanaries"] if flagger else []) + templates
    for family in perms["routing"].values():
        if any(p in family["providers"] for p in wanted):
            watched += family["rules"]
        if provider in family["providers"]:
            watched += family["watch"]
    namespaces = values.get("namespaces", [])
    out = {}
    if namespaces:
        for ns in namespaces:
            out[f"Role {ns}"] = watched
        for ns in values.get("rbac", {}).get("metricTemplateNamespaces", []):
            if ns not in namespaces:
                out[f"Role {ns}"] = templates + perms["metricTemplateSecrets"]
    else:
        out["ClusterRole"] = watched
    election = values.get("leaderElection", {})
    if election.get("enabled", True):
        # `{leaseName}` stands for the Lease's name.
        lease = election.get("leaseName", "fledge-leader")
        out[f"Role {NAMESPACE}"] = [
            {**r, "resourceNames": [n.replace("{leaseName}", lease) for n in r["resourceNames"]]}
            if "resourceNames" in r
            else r
            for r in perms["leaderElection"]
        ]
    return out


def rule_set(rules: list[dict]) -> list[str]:
    """Rules without their reasons, in a canonical order (RBAC does not depend on order)."""
    keys = ("apiGroups", "resources", "verbs", "resourceNames")
    return sorted(json.dumps({k: r[k] for k in keys if k in r}) for r in rules)


def check_rbac(label: str, objects: list[dict], manifest: str, values: dict) -> None:
    roles = by_kind(objects, "Role") + by_kind(objects, "ClusterRole")
    found = {}
    for role in roles:
        key = role["kind"] if role["kind"] == "ClusterRole" else f"Role {role['metadata']['namespace']}"
        where = f"[{label}] {key} {role['metadata']['name']}"
        seen = set()
        for rule in role["rules"]:
            words = rule["apiGroups"] + rule["resources"] + rule["verbs"] + rule.get("resourceNames", [])
            if any("*" in w for w in words):
                fail(where, f"wildcard in {rule}")
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    for v in rule["verbs"]:
                        if (g, r, v) in seen:
                            fail(where, f"{g}/{r} {v} granted twice")
                        seen.add((g, r, v))
        found[key] = rule_set(role["rules"])
    expected = {key: rule_set(rules) for key, rules in expected_rules(values).items()}
    if found != expected:
        fail(f"[{label}] RBAC", f"rendered {json.dumps(found)}\n  expected {json.dumps(expected)}")
    # Every rule carries its reason as a comment on the line above it.
    lines = manifest.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("- apiGroups:") and not lines[i - 1].strip().startswith("# "):
            fail(f"[{label}] RBAC", f"a rule without a comment saying why: {line.strip()}")
    if values.get("namespaces") and (
        by_kind(objects, "ClusterRole") or by_kind(objects, "ClusterRoleBinding")
    ):
        fail(f"[{label}] RBAC", "cluster-wide RBAC with a namespace list")
    account = merged(yaml.safe_load((CHART / "values.yaml").read_text()), values)["serviceAccount"]
    sa = [o["metadata"]["name"] for o in by_kind(objects, "ServiceAccount")]
    if not account["create"]:
        sa = [account["name"]] if account["name"] else []
    for binding in by_kind(objects, "RoleBinding") + by_kind(objects, "ClusterRoleBinding"):
        for subject in binding["subjects"]:
            if subject["name"] not in sa or subject["namespace"] != NAMESPACE:
                fail(f"[{label}] {binding['kind']}", f"binds {subject}, not the chart's ServiceAccount")


def check_value_set(label: str, values: dict) -> None:
    lint(label, values)
    try:
        manifest = render(values)
    except helm.HelmError as e:
        fail(f"[{label}]", f"does not render: {e}")
        return
    objects = load_yaml_docs(manifest)
    print(f"--- [{label}] {len(objects)} objects: {', '.join(sorted({o['kind'] for o in objects}))}")
    validate_objects(label, objects)
    check_controller(label, objects, values)
    check_rbac(label, objects, manifest, values)


# ---- bad values ----


def check_bad_values() -> None:
    for path in sorted((CHART / "ci" / "bad").glob("*.yaml")):
        text = path.read_text()
        expect = re.match(r"# expect: (.*)\n", text)
        where = f"ci/bad/{path.name}"
        if not expect:
            fail(where, "no `# expect: MESSAGE` first line")
            continue
        try:
            render(yaml.safe_load(text))
        except helm.HelmError as e:
            if expect.group(1) not in str(e):
                fail(where, f"failed, but not with `{expect.group(1)}`: {e}")
            else:
                print(f"ok   {where} fails: {expect.group(1)}")
            continue
        fail(where, "was accepted")


# Log filters, and whether `fledge-controller run` (tracing's EnvFilter) takes each: the schema
# must agree. None: EnvFilter takes it as a target name, which the schema refuses as a typo (a
# target with a space in it).
LOG_FILTERS = {
    "info": True,
    "INFO": True,
    "Warn": True,
    "3": True,
    "fledge_controller": True,
    "fledge_controller=DEBUG,kube=info,warn": True,
    "kube::client=warn": True,
    "fledge_controller[reconcile{canary=podinfo}]=debug": True,
    "[reconcile]=trace": True,
    "fledge_controller=verbose": False,
    "=info": False,
    "a=b=c": False,
    "info debug": None,
}


def controller_takes_log_filter(log_filter: str) -> bool:
    """Whether `fledge-controller run` gets past its log filter: it reads it first, then fails
    on the (absent) cluster."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEDGE_", "KUBERNETES_"))}
    env["KUBECONFIG"] = "/nonexistent"
    try:
        run = subprocess.run(
            [TARGET / "fledge-controller", "run", "--log-level", log_filter,
             "--prometheus-address", "http://127.0.0.1:9"],
            capture_output=True, text=True, env=env, timeout=30,
        )
    except subprocess.TimeoutExpired:
        return True
    return "--log-level" not in run.stderr


def check_log_filters() -> None:
    for log_filter, controller in LOG_FILTERS.items():
        where = f"log.level {log_filter!r}"
        try:
            render({"log": {"level": log_filter}})
            schema = True
        except helm.HelmError as e:
            if "/log/level" not in str(e):
                fail(where, f"fails to render, not on log.level: {e}")
            schema = False
        if controller_takes_log_filter(log_filter) != (controller is not False):
            fail(where, f"the controller's verdict is not the expected {controller}")
        if schema != bool(controller):
            fail(where, f"the schema {'accepts' if schema else 'refuses'} it, the controller {'takes' if controller else 'does not'}")
    print(f"ok   {len(LOG_FILTERS)} log filters: the schema agrees with the controller's EnvFilter")


# ---- CRDs and examples ----


def crd_schemas() -> dict[tuple[str, str], dict]:
    docs = load_yaml_docs((CHART / "crds" / "crds.yaml").read_text())
    validate_objects("crds", docs)
    schemas = {}
    for crd in docs:
        for version in crd["spec"]["versions"]:
            api = f"{crd['spec']['group']}/{version['name']}"
            schemas[(api, crd["spec"]["names"]["kind"])] = version["schema"]["openAPIV3Schema"]
    return schemas


def pruned(value, schema: dict, path: str) -> list[str]:
    """Fields the API server would prune (drop) as unknown: a typo that would vanish."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    out = []
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if props is not None and key in props:
                out += pruned(item, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                out += pruned(item, extra, f"{path}.{key}")
            elif props is not None and not (path == "" and key in ("apiVersion", "kind", "metadata")):
                out.append(f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            out += pruned(item, schema["items"], f"{path}[{i}]")
    return out


def check_examples(schemas: dict) -> list[str]:
    """Validates the examples; returns the files that hold a Canary."""
    with_canary = []
    for path in sorted((CHART / "examples").glob("*.yaml")):
        where = f"examples/{path.name}"
        docs = load_yaml_docs(path.read_text())
        for doc in docs:
            key = (doc["apiVersion"], doc["kind"])
            if key in schemas:
                errors = list(jsonschema.Draft7Validator(schemas[key]).iter_errors(doc))
                for e in errors:
                    fail(where, f"{doc['kind']} against the CRD: {'.'.join(map(str, e.path))}: {e.message}")
                for field in pruned(doc, schemas[key], ""):
                    fail(where, f"{doc['kind']}: unknown field {field} (the API server drops it)")
            else:
                validate_objects(where, [doc])
        if any(d["kind"] == "Canary" for d in docs):
            with_canary.append(path.name)
    return with_canary


def check_rehearsals(with_canary: list[str]) -> None:
    """Each example Canary runs as a scenario (scenarios/examples), or is planned."""
    sim = TARGET / "fledge-sim"
    rehearsed = set()
    for scenario in sorted((ROOT / "scenarios" / "examples").glob("*.yaml")):
        data = yaml.safe_load(scenario.read_text())
        canary = (scenario.parent / data.get("canary_file", "")).resolve()
        rehearsed.add(canary.name if canary.parent == CHART / "examples" else None)
        run = subprocess.run([sim, "run", scenario], capture_output=True, text=True)
        rel = scenario.relative_to(ROOT)
        if run.returncode != 0:
            fail(str(rel), f"fledge-sim run exited {run.returncode}:\n{run.stdout[-2000:]}{run.stderr}")
        else:
            print(f"ok   fledge-sim run {rel}")
    for name in with_canary:
        if name in rehearsed:
            continue
        # A Canary with custom queries cannot be simulated: it must at least validate and plan.
        plan = subprocess.run([sim, "plan", CHART / "examples" / name], capture_output=True, text=True)
        if plan.returncode != 0:
            fail(f"examples/{name}", f"not rehearsed, and fledge-sim plan fails: {plan.stdout}{plan.stderr}")
        elif "template" not in plan.stdout:
            fail(f"examples/{name}", "not rehearsed by any scenario in scenarios/examples")
        else:
            print(f"ok   fledge-sim plan examples/{name} (custom queries are not simulated)")


# ---- image and binary against the chart ----


def check_image_and_binary() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", dockerfile, flags=re.M)[1:]
    final = {}
    for stage in stages:
        name = re.match(r"\S+ AS (\S+)", stage)
        if name:
            final[name.group(1)] = stage
    uid = values["podSecurityContext"]["runAsUser"]
    gid = values["podSecurityContext"]["runAsGroup"]
    for name in ("fledge-controller", "fledge-sim"):
        stage = final.get(name, "")
        user = re.search(r"^USER (\S+)", stage, re.M)
        if not user or user.group(1) != f"{uid}:{gid}":
            fail(f"Dockerfile {name}", f"USER {user and user.group(1)}, the chart runs as {uid}:{gid}")
        entry = re.search(r'^ENTRYPOINT \["(\S+)"\]', stage, re.M)
        if not entry or pathlib.PurePath(entry.group(1)).name != name:
            fail(f"Dockerfile {name}", f"ENTRYPOINT {entry and entry.group(1)} is not the {name} binary")
        elif f"COPY --from=build /out/{name} {entry.group(1)}" not in stage:
            fail(f"Dockerfile {name}", f"{entry.group(1)} is not where the binary is copied")
    if not dockerfile.rstrip().split("\nFROM ")[-1].split()[2] == "fledge-controller":
        fail("Dockerfile", "the last (default) stage is not fledge-controller")
    try:
        manifest = render({})
    except helm.HelmError as e:
        fail("chart", f"the default values do not render: {e}")
        return
    [deployment] = by_kind(load_yaml_docs(manifest), "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    [port] = [p["containerPort"] for p in container["ports"]]
    expose = re.search(r"^EXPOSE (\d+)", final.get("fledge-controller", ""), re.M)
    if not expose or int(expose.group(1)) != port or port != OPS_PORT:
        fail("Dockerfile fledge-controller", f"EXPOSE {expose and expose.group(1)}, the chart's container port is {port}")
    # The commands the Dockerfile's comments show exist: their subcommand, flags and scenario.
    for command in re.findall(r"`((?:fledge-sim|fledge-controller) [^`]*)`", dockerfile):
        binary, sub, *words = command.split()
        usage = subprocess.run([TARGET / binary, sub, "--help"], capture_output=True, text=True)
        known = set(re.findall(r"--[a-z][a-z-]*", usage.stdout))
        unknown = [w for w in words if w.startswith("--") and w not in known]
        if usage.returncode != 0 or unknown:
            fail("Dockerfile", f"`{command}`: {binary} {sub} knows no {unknown or 'such subcommand'}")
        for path in (w for w in words if w.startswith("/scenarios/")):
            if not (ROOT / path.lstrip("/")).is_file():
                fail("Dockerfile", f"`{command}`: no {path.lstrip('/')} in the repository")
    # Every variable the chart sets is one `fledge-controller run` reads (clap shows [env: X]).
    help_text = subprocess.run(
        [TARGET / "fledge-controller", *container["args"], "--help"], capture_output=True, text=True
    )
    if help_text.returncode != 0:
        fail("fledge-controller", f"`{' '.join(container['args'])} --help` failed: {help_text.stderr}")
    read = set(re.findall(r"\[env: ([A-Z_]+)", help_text.stdout))
    for var in container["env"]:
        # POD_NAME (the Lease holder's identity) is read by the program, not as a flag.
        if var["name"] not in read and var["name"] != "POD_NAME":
            fail("Deployment env", f"{var['name']} is not read by `fledge-controller run`")
    print(f"ok   image USER {uid}:{gid}, entrypoints and port agree with the chart; {len(container['env'])} env vars checked")


def helm_commands(markdown: str) -> list[str]:
    """The `helm install` and `helm upgrade` commands of a Markdown file's code blocks, each
    with its continuation lines joined."""
    commands, current, in_block = [], "", False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            in_block = not in_block
            continue
        if not in_block:
            continue
        current += line.strip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        if re.match(r"helm (install|upgrade) ", current):
            commands.append(current)
        current = ""
    return commands


def check_install_docs() -> None:
    """The READMEs' install commands set the image (nothing publishes the default), and their
    upgrades do not reuse the old release's values (a value a new chart adds would be missing)."""
    before = len(failures)
    for doc in (ROOT / "README.md", CHART / "README.md"):
        where = str(doc.relative_to(ROOT))
        commands = helm_commands(doc.read_text())
        if not any(c.startswith("helm install ") for c in commands):
            fail(where, "no `helm install` command")
        for command in commands:
            with_file = re.search(r" (-f|--values) ", command)
            if command.startswith("helm install ") and not with_file and not (
                "image.repository=" in command and "image.tag=" in command
            ):
                fail(where, f"`{command}` installs the unpublished default image")
            if "--reuse-values" in command:
                fail(where, f"`{command}`: --reuse-values drops the values a new chart adds")
    if len(failures) == before:
        print("ok   the READMEs' helm commands set the image and do not --reuse-values")


def main() -> int:
    start = time.monotonic()
    value_sets = {"default": {}}
    for path in sorted((CHART / "ci").glob("*-values.yaml")):
        value_sets[path.stem.removesuffix("-values")] = yaml.safe_load(path.read_text())
    for label, values in value_sets.items():
        check_value_set(label, values)
    check_bad_values()
    check_log_filters()
    schemas = crd_schemas()
    check_rehearsals(check_examples(schemas))
    check_image_and_binary()
    check_install_docs()
    took = time.monotonic() - start
    if failures:
        print(f"\n{len(failures)} chart checks failed ({took:.1f} s):")
        for f in failures:
            print(f"  {f}")
        return 1
    print(f"\nchart checks passed in {took:.1f} s ({len(value_sets)} value sets, Kubernetes {', '.join(KUBE_VERSIONS)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
