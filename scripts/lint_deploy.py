#!/usr/bin/python3
"""Consistency checks of deploy/ that yamllint and promtool cannot see (run by lint-deploy.sh).

- every Kubernetes object in deploy/k8s has apiVersion, kind and metadata.name, and the
  references between them resolve (selectors, Service ports, PVCs, ConfigMaps, HPA target);
- kustomization.yaml lists exactly the manifests in its directory;
- deploy/k8s/prometheusrule.yaml carries exactly the groups of deploy/prometheus/alerts.yml
  (`--update` regenerates it);
- the Grafana dashboard has unique panel ids and a query on every target;
- every nimble_* metric used by the rules, the dashboard and the adapter is in the contract
  table of deploy/README.md;
- every PromQL expression of the dashboard and the adapter rule parses (`promtool check rules`
  on a scratch rule file; Grafana and adapter template variables substituted).
"""
import json
import pathlib
import re
import subprocess
import sys
import tempfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS_RULE = K8S / "prometheusrule.yaml"
DASHBOARD = DEPLOY / "grafana" / "nimble-dashboard.json"
ADAPTER = DEPLOY / "prometheus-adapter" / "config.yaml"
CONTRACT = DEPLOY / "README.md"

errors = []


def error(where, message):
    errors.append(f"{where.relative_to(ROOT) if isinstance(where, pathlib.Path) else where}: "
                  f"{message}")


def load_all(path):
    try:
        with open(path) as f:
            return [doc for doc in yaml.safe_load_all(f) if doc is not None]
    except (OSError, yaml.YAMLError) as e:
        error(path, f"cannot be read as YAML: {e}")
        return []


def load_one(path):
    """The single mapping in `path`, or {} (with an error) when it holds anything else."""
    docs = load_all(path)
    if len(docs) == 1 and isinstance(docs[0], dict):
        return docs[0]
    if docs:
        error(path, "must hold exactly one YAML mapping")
    return {}


# ---- Kubernetes objects ----------------------------------------------------------------------
def check_k8s():
    objects = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for i, doc in enumerate(load_all(path)):
            where = f"{path.relative_to(ROOT)} document {i + 1}"
            if not isinstance(doc, dict):
                error(where, "is not a mapping")
                continue
            for key in ("apiVersion", "kind"):
                if not isinstance(doc.get(key), str) or not doc[key]:
                    error(where, f"has no {key}")
            name = (doc.get("metadata") or {}).get("name")
            if not isinstance(name, str) or not name:
                error(where, "has no metadata.name")
                continue
            objects.append((where, doc))
    by_kind = {}
    for where, doc in objects:
        key = (doc.get("kind"), doc["metadata"]["name"])
        if key in by_kind:
            error(where, f"{key[0]} '{key[1]}' is defined twice")
        by_kind[key] = doc

    def exists(kind, name):
        return (kind, name) in by_kind

    def matches(selector, labels):
        return all(labels.get(k) == v for k, v in (selector or {}).items())

    for where, doc in objects:
        kind, spec = doc.get("kind"), doc.get("spec") or {}
        if kind == "Deployment":
            pod = spec.get("template", {})
            labels = pod.get("metadata", {}).get("labels", {})
            if not matches(spec.get("selector", {}).get("matchLabels"), labels):
                error(where, "selector.matchLabels does not match the pod template's labels")
            pod_spec = pod.get("spec", {})
            for volume in pod_spec.get("volumes", []):
                claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
                if claim and not exists("PersistentVolumeClaim", claim):
                    error(where, f"volume '{volume.get('name')}' uses missing PVC '{claim}'")
            volume_names = {v.get("name") for v in pod_spec.get("volumes", [])}
            for container in pod_spec.get("containers", []):
                for mount in container.get("volumeMounts", []):
                    if mount.get("name") not in volume_names:
                        error(where, f"volumeMount '{mount.get('name')}' has no volume")
                for source in container.get("envFrom", []):
                    ref = (source.get("configMapRef") or {}).get("name")
                    if ref and not exists("ConfigMap", ref):
                        error(where, f"envFrom uses missing ConfigMap '{ref}'")
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    if probe not in container:
                        error(where, f"container '{container.get('name')}' has no {probe}")
                if "limits" not in container.get("resources", {}):
                    error(where, f"container '{container.get('name')}' has no resource limits")
        if kind == "Service":
            pods = [d for (k, _), d in by_kind.items() if k == "Deployment"
                    and matches(spec.get("selector"),
                                d["spec"]["template"]["metadata"].get("labels", {}))]
            if not pods:
                error(where, "selector matches no Deployment's pods")
            port_names = {p.get("name") for d in pods
                          for c in d["spec"]["template"]["spec"]["containers"]
                          for p in c.get("ports", [])}
            for port in spec.get("ports", []):
                target = port.get("targetPort")
                if isinstance(target, str) and target not in port_names:
                    error(where, f"targetPort '{target}' is no container port name")
        if kind == "HorizontalPodAutoscaler":
            target = spec.get("scaleTargetRef", {})
            if not exists(target.get("kind"), target.get("name")):
                error(where, f"scaleTargetRef {target.get('kind')} '{target.get('name')}' "
                      "is missing")
        if kind in ("ServiceMonitor", "PodDisruptionBudget"):
            selector = spec.get("selector", {}).get("matchLabels")
            if kind == "ServiceMonitor":
                services = [d for (k, _), d in by_kind.items() if k == "Service"
                            and matches(selector, d["metadata"].get("labels", {}))]
                ports = {p.get("name") for s in services for p in s["spec"].get("ports", [])}
                for endpoint in spec.get("endpoints", []):
                    if endpoint.get("port") not in ports:
                        error(where, f"endpoint port '{endpoint.get('port')}' is on no "
                              "selected Service")
            else:
                if not any(k == "Deployment" and matches(
                        selector, d["spec"]["template"]["metadata"].get("labels", {}))
                        for (k, _), d in by_kind.items()):
                    error(where, "selector matches no Deployment's pods")


def check_kustomization():
    path = K8S / "kustomization.yaml"
    docs = load_all(path)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        error(path, "must hold exactly one mapping")
        return
    doc = docs[0]
    for key in ("apiVersion", "kind"):
        if not doc.get(key):
            error(path, f"has no {key}")
    listed = doc.get("resources", [])
    for resource in listed:
        if not (K8S / resource).exists():
            error(path, f"resource '{resource}' does not exist")
    for manifest in sorted(K8S.glob("*.yaml")):
        if manifest.name != "kustomization.yaml" and manifest.name not in listed:
            error(path, f"does not list {manifest.name}")


# ---- PrometheusRule generated from alerts.yml ------------------------------------------------
class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)  # indented sequences, as in alerts.yml


def _str(dumper, value):
    style = "|" if "\n" in value else ">" if len(value) > 80 else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)

RULE_HEADER = """\
# GENERATED from deploy/prometheus/alerts.yml by `scripts/lint-deploy.sh --update`; edit that
# file, not this one (the lint fails when they differ). Loaded by the Prometheus Operator; its
# Prometheus must select it (kube-prometheus-stack: the release label, as for ServiceMonitors).
"""


def prometheus_rule_text():
    groups = load_one(ALERTS).get("groups", [])
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "nimble", "labels": {"app.kubernetes.io/name": "nimble",
                                                  "app.kubernetes.io/component": "server"}},
        "spec": {"groups": groups},
    }
    body = yaml.dump(rule, Dumper=_Dumper, sort_keys=False, width=96, allow_unicode=True)
    return "---\n" + RULE_HEADER + body


def check_prometheus_rule(update):
    if update:
        PROMETHEUS_RULE.write_text(prometheus_rule_text())
        print(f"wrote {PROMETHEUS_RULE.relative_to(ROOT)}")
    if not PROMETHEUS_RULE.exists():
        error(PROMETHEUS_RULE, "is missing (scripts/lint-deploy.sh --update)")
        return
    generated = load_one(PROMETHEUS_RULE)
    if generated.get("spec", {}).get("groups") != load_one(ALERTS).get("groups"):
        error(PROMETHEUS_RULE, "differs from deploy/prometheus/alerts.yml; "
              "run scripts/lint-deploy.sh --update")


# ---- dashboard, adapter, metric contract, PromQL syntax --------------------------------------
def dashboard_exprs():
    try:
        with open(DASHBOARD) as f:
            dashboard = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        error(DASHBOARD, f"cannot be read as JSON: {e}")
        return []
    for key in ("uid", "title", "panels"):
        if key not in dashboard:
            error(DASHBOARD, f"has no '{key}'")
    exprs, ids = [], set()
    panels = list(dashboard.get("panels", []))
    while panels:
        panel = panels.pop()
        panels.extend(panel.get("panels", []))
        if panel.get("id") in ids:
            error(DASHBOARD, f"panel id {panel.get('id')} is used twice")
        ids.add(panel.get("id"))
        if panel.get("type") == "row":
            continue
        if not panel.get("targets"):
            error(DASHBOARD, f"panel '{panel.get('title')}' has no targets")
        for target in panel.get("targets", []):
            if not target.get("expr"):
                error(DASHBOARD, f"panel '{panel.get('title')}' has a target without expr")
                continue
            exprs.append((f"panel '{panel.get('title')}'", target["expr"]))
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query", "")
        match = re.fullmatch(r"label_values\((.*),\s*\w+\)", query or "")
        if match:
            exprs.append((f"variable '{variable['name']}'", match.group(1)))
    grafana_vars = {"$__rate_interval": "5m", "$__interval": "1m", "$namespace": "nimble",
                    "$model": ".*"}
    rendered = []
    for where, expr in exprs:
        for var, value in grafana_vars.items():
            expr = expr.replace(var, value)
        if "$" in expr:
            error(DASHBOARD, f"{where}: unknown template variable in {expr!r}")
        rendered.append((f"dashboard {where}", expr))
    return rendered


def adapter_exprs():
    rendered = []
    for rule in load_one(ADAPTER).get("rules", []):
        series = re.match(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", rule["seriesQuery"]).group(1)
        expr = (rule["metricsQuery"].replace("<<.Series>>", series)
                .replace("<<.LabelMatchers>>", 'namespace="nimble",pod=~"nimble-.*"')
                .replace("<<.GroupBy>>", "namespace, pod"))
        rendered.append((f"adapter rule {rule['name']['as']}", expr))
        rendered.append((f"adapter seriesQuery {rule['name']['as']}", rule["seriesQuery"]))
    return rendered


def contract_metrics():
    names = set()
    in_table = False
    for line in CONTRACT.read_text().splitlines():
        if line.startswith("<!-- metric-contract:begin"):
            in_table = True
        elif line.startswith("<!-- metric-contract:end"):
            in_table = False
        elif in_table and line.startswith("| `"):
            names.update(re.findall(r"`([a-z_:]+)`", line.split("|")[1]))
    if not names:
        error(CONTRACT, "has no metric-contract table")
    return names


METRIC = re.compile(r"\b(nimble_[a-z0-9_]+)")
SUFFIXES = ("_bucket", "_sum", "_count")


def check_contract(exprs):
    contract = contract_metrics()
    alert_exprs = [(f"rule {r.get('alert') or r.get('record')}", r["expr"])
                   for g in load_one(ALERTS).get("groups", []) for r in g.get("rules", [])
                   if "expr" in r]
    for where, expr in exprs + alert_exprs:
        for name in METRIC.findall(expr):
            base = next((name[: -len(s)] for s in SUFFIXES
                         if name.endswith(s) and name[: -len(s)] in contract), name)
            if base not in contract:
                error(CONTRACT, f"{where} uses {name}, which the metric contract does not list")


def check_promql(exprs):
    rules = {"groups": [{"name": "lint", "rules": [
        {"record": f"lint:expr_{i}", "expr": expr} for i, (_, expr) in enumerate(exprs)]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        yaml.safe_dump(rules, f)
    result = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
    pathlib.Path(f.name).unlink()
    if result.returncode != 0:
        # promtool names the failing scratch rule; map it back to where the query lives.
        output = (result.stdout + result.stderr).splitlines()
        failures = [line for line in output if "lint:expr_" in line]
        for line in failures:
            i = int(re.search(r"lint:expr_(\d+)", line).group(1))
            error("PromQL", f"{exprs[i][0]}: {line.split(': ', 1)[-1]}\n    query: {exprs[i][1]}")
        if not failures:
            error("PromQL", "promtool check rules failed:\n" + "\n".join(output))


def main():
    update = "--update" in sys.argv[1:]
    check_prometheus_rule(update)
    check_k8s()
    check_kustomization()
    exprs = dashboard_exprs() + adapter_exprs()
    check_contract(exprs)
    check_promql(exprs)
    for message in dict.fromkeys(errors):
        print(f"lint-deploy: {message}", file=sys.stderr)
    print(f"lint_deploy.py: {'FAILED' if errors else 'ok'} "
          f"({len(exprs)} dashboard/adapter queries checked)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
