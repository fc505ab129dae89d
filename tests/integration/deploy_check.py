"""deploy_check: the files of deploy/ parse (YAML with python3-yaml, JSON),
carry the fields their formats require, and agree with each other and with
the exporter:
- the DaemonSet and the pod example: Kubernetes' required fields, volume
  mounts that name volumes, the library and socket directory where the
  DaemonSet puts them;
- the CDI spec: the CDI schema's required fields (cdiVersion, kind, devices;
  each device's name and containerEdits; each mount's hostPath and
  containerPath; each hook's hookName and path), its name rules, KEY=VALUE
  environment, LD_PRELOAD inside a mount of the node's library directory;
- the Prometheus scrape config: job names, the port the DaemonSet names;
- the Grafana dashboard: its required fields, and every metric and every
  grouping label its queries name is one the exporter emits, read from a
  live exporter scraped with curl (or the `node` label the scrape config
  adds).
"""
import json
import os
import re
import sys
import tempfile

import yaml

from vs_live import Exporter, Target, check, curl, failed, parse

SRC = os.environ.get("VRAMSHIM_SRC") or os.path.join(os.path.dirname(__file__), "..", "..")
DEPLOY = os.path.join(SRC, "deploy")
LIB_DIR = "/opt/vramshim/lib"
SOCKET_ROOT = "/run/vramshim"


def load_yaml(name):
    with open(os.path.join(DEPLOY, name)) as f:
        try:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
        except yaml.YAMLError as e:
            check(False, f"{name} parses as YAML", e)
            return []
    check(bool(docs), f"{name} parses as YAML")
    return docs


def has(obj, *path):
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return False
        obj = obj[key]
    return obj not in (None, "", [], {})


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", []) if "name" in e}


def pod_spec_checks(name, spec):
    """Containers named with images; every mount names a volume."""
    volumes = {v.get("name"): v for v in spec.get("volumes", [])}
    containers = spec.get("initContainers", []) + spec.get("containers", [])
    check(bool(spec.get("containers")) and all(has(c, "name") and has(c, "image") for c in containers),
          f"{name}: every container has a name and an image")
    missing = [m.get("name") for c in containers for m in c.get("volumeMounts", []) if m.get("name") not in volumes]
    check(not missing and all(has(m, "mountPath") for c in containers for m in c.get("volumeMounts", [])),
          f"{name}: every volume mount names a volume and a path", missing)
    return volumes


def host_path_at(container, volumes, path):
    """The node path behind `path` in the container (through its mounts)."""
    for m in container.get("volumeMounts", []):
        mp = m["mountPath"].rstrip("/")
        if path == mp or path.startswith(mp + "/"):
            hp = volumes.get(m["name"], {}).get("hostPath", {}).get("path")
            if hp is None:
                return None
            return hp.rstrip("/") + path[len(mp):]
    return None


def daemonset_checks():
    docs = load_yaml("daemonset.yaml")
    ds = [d for d in docs if d.get("kind") == "DaemonSet"]
    check(len(ds) == 1, "daemonset.yaml holds one DaemonSet")
    if not ds:
        return None
    d = ds[0]
    check(d.get("apiVersion") == "apps/v1" and has(d, "metadata", "name"), "DaemonSet: apiVersion and name")
    match = d.get("spec", {}).get("selector", {}).get("matchLabels", {})
    labels = d.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
    check(bool(match) and all(labels.get(k) == v for k, v in match.items()),
          "DaemonSet: the selector matches the pod template's labels", (match, labels))
    spec = d["spec"]["template"].get("spec", {})
    volumes = pod_spec_checks("DaemonSet", spec)
    exporters = [c for c in spec.get("containers", []) if "exporter" in c.get("args", [])]
    check(len(exporters) == 1, "DaemonSet: one container runs `vramshim exporter`")
    if not exporters:
        return None
    ex = exporters[0]
    args = ex["args"]
    listen = args[args.index("--listen") + 1] if "--listen" in args else ""
    ports = {p.get("name"): p.get("containerPort") for p in ex.get("ports", [])}
    check(listen.rsplit(":", 1)[-1] == str(ports.get("metrics")),
          "DaemonSet: the port named metrics is the one the exporter listens on", (listen, ports))
    sockets = env_of(ex).get("VRAMSHIM_SOCKET_DIR")
    check(sockets is not None and host_path_at(ex, volumes, sockets) == SOCKET_ROOT,
          f"DaemonSet: the exporter reads the node's {SOCKET_ROOT}")
    install = " ".join(" ".join(c.get("command", [])) for c in spec.get("initContainers", []))
    check(f"/host{LIB_DIR}/libvramshim.so" in install and any(
        host_path_at(c, volumes, f"/host{LIB_DIR}") == LIB_DIR for c in spec.get("initContainers", [])),
        f"DaemonSet: the library is installed in the node's {LIB_DIR}")
    return {"port_name": "metrics", "port": ports.get("metrics")}


def pod_checks():
    docs = load_yaml("pod-example.yaml")
    pods = [d for d in docs if d.get("kind") == "Pod"]
    check(len(pods) == 1 and pods[0].get("apiVersion") == "v1" and has(pods[0], "metadata", "name"),
          "pod-example.yaml: one Pod, apiVersion v1, named")
    if not pods:
        return
    spec = pods[0].get("spec", {})
    volumes = pod_spec_checks("pod example", spec)
    for c in spec.get("containers", []):
        env = env_of(c)
        preload = env.get("LD_PRELOAD", "")
        check(host_path_at(c, volumes, preload) == f"{LIB_DIR}/libvramshim.so",
              f"pod example {c.get('name')}: LD_PRELOAD is the node's library", preload)
        sockets = env.get("VRAMSHIM_SOCKET_DIR")
        mounts = [m for m in c.get("volumeMounts", []) if m.get("mountPath") == sockets]
        sub = mounts[0].get("subPathExpr", "") if mounts else ""
        names = re.findall(r"\$\((\w+)\)", sub)
        check(bool(mounts) and host_path_at(c, volumes, sockets) == SOCKET_ROOT and names and
              all(n in env or any(e.get("name") == n for e in c.get("env", [])) for n in names),
              f"pod example {c.get('name')}: its own subdirectory of {SOCKET_ROOT} (subPathExpr of a defined variable)")


CDI_NAME = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9_.:-]*[a-zA-Z0-9])?$")
CDI_KIND = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*/"
                      r"[a-zA-Z0-9]([a-zA-Z0-9_.-]*[a-zA-Z0-9])?$")
CDI_EDITS = {"env", "deviceNodes", "mounts", "hooks", "intelRdt", "additionalGids", "netDevices"}


def cdi_edit_checks(where, edits):
    ok = isinstance(edits, dict) and set(edits) <= CDI_EDITS
    check(ok, f"CDI {where}: containerEdits has only the schema's members", edits)
    if not ok:
        return {}, []
    env = edits.get("env", [])
    check(all(isinstance(e, str) and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", e) for e in env),
          f"CDI {where}: env entries are KEY=VALUE", env)
    mounts = edits.get("mounts", [])
    check(all(has(m, "hostPath") and has(m, "containerPath") and m["hostPath"].startswith("/")
              and m["containerPath"].startswith("/") for m in mounts),
          f"CDI {where}: mounts have absolute hostPath and containerPath")
    check(all(has(h, "hookName") and has(h, "path") for h in edits.get("hooks", [])),
          f"CDI {where}: hooks have hookName and path")
    check(all(has(n, "path") for n in edits.get("deviceNodes", [])), f"CDI {where}: device nodes have a path")
    env = dict(e.split("=", 1) for e in env if isinstance(e, str) and "=" in e)
    return env, [m for m in mounts if has(m, "hostPath") and has(m, "containerPath")]


def cdi_checks():
    docs = load_yaml("cdi-vramshim.yaml")
    if len(docs) != 1:
        check(False, "cdi-vramshim.yaml is one document")
        return
    spec = docs[0]
    check(all(k in spec for k in ("cdiVersion", "kind", "devices")), "CDI: cdiVersion, kind and devices")
    check(set(spec) <= {"cdiVersion", "kind", "annotations", "devices", "containerEdits"},
          "CDI: no member outside the schema", sorted(spec))
    check(re.match(r"^\d+\.\d+\.\d+$", str(spec.get("cdiVersion", ""))) is not None,
          "CDI: cdiVersion is a semantic version", spec.get("cdiVersion"))
    check(CDI_KIND.match(str(spec.get("kind", ""))) is not None, "CDI: kind is vendor/class", spec.get("kind"))
    devices = spec.get("devices") or []
    names = [d.get("name") for d in devices]
    check(bool(devices) and all(isinstance(n, str) and CDI_NAME.match(n) for n in names)
          and len(set(names)) == len(names), "CDI: devices have unique, well-formed names", names)
    common_env, common_mounts = cdi_edit_checks("spec", spec.get("containerEdits", {}))
    for d in devices:
        check(set(d) <= {"name", "annotations", "containerEdits"} and "containerEdits" in d,
              f"CDI device {d.get('name')}: name and containerEdits only")
        env, mounts = cdi_edit_checks(f"device {d.get('name')}", d.get("containerEdits"))
        env = {**common_env, **env}
        mounts = common_mounts + mounts

        def host_of(path):
            for m in mounts:
                cp = m["containerPath"].rstrip("/")
                if path == cp or path.startswith(cp + "/"):
                    return m["hostPath"].rstrip("/") + path[len(cp):]
            return None

        check(host_of(env.get("LD_PRELOAD", "")) == f"{LIB_DIR}/libvramshim.so",
              f"CDI device {d.get('name')}: LD_PRELOAD is the node's library, mounted")
        sockets = host_of(env.get("VRAMSHIM_SOCKET_DIR", "")) or ""
        check(sockets.startswith(SOCKET_ROOT + "/"),
              f"CDI device {d.get('name')}: its socket directory is a subdirectory of the node's {SOCKET_ROOT}",
              sockets)


def prometheus_checks(ds):
    docs = load_yaml("prometheus-scrape.yaml")
    jobs = docs[0].get("scrape_configs", []) if docs else []
    names = [j.get("job_name") for j in jobs]
    check(bool(jobs) and all(names) and len(set(names)) == len(names), "Prometheus: unique job names", names)
    check(all(any(k.endswith("_sd_configs") or k == "static_configs" for k in j) for j in jobs),
          "Prometheus: every job says where its targets are")
    k8s = [j for j in jobs if "kubernetes_sd_configs" in j]
    keeps_port = any(r.get("action") == "keep" and r.get("regex") == (ds or {}).get("port_name") and
                     "__meta_kubernetes_pod_container_port_name" in r.get("source_labels", [])
                     for j in k8s for r in j.get("relabel_configs", []))
    check(keeps_port, "Prometheus: the Kubernetes job scrapes the DaemonSet's metrics port")
    added = {r.get("target_label") for j in jobs for r in j.get("relabel_configs", []) if r.get("target_label")}
    added |= {k for j in jobs for s in j.get("static_configs", []) for k in s.get("labels", {})}
    static = [t for j in jobs for s in j.get("static_configs", []) for t in s.get("targets", [])]
    check(all(t.endswith(":9402") for t in static), "Prometheus: the local job uses the exporter's default port")
    return added


def emitted():
    """Sample names and label names of a live exporter's page."""
    root = tempfile.mkdtemp(prefix="vramshim-deploy-")
    os.chmod(root, 0o700)
    # one process at the top, one in a per-pod subdirectory (labelled dir)
    targets = [Target(root, "dash", 8), Target(os.path.join(root, "pod"), "dash", 8)]
    ex = Exporter(root, "--listen", "127.0.0.1:0")
    try:
        code, body = curl(ex.url("/metrics"))
        fams = parse(body)
    finally:
        ex.stop()
        for t in targets:
            t.end()
    check(code == 200 and fams, "a live exporter's page for the dashboard check")
    samples = {lab.get("__name__") for f in fams.values() for lab, _ in f}
    labels = {k for f in fams.values() for lab, _ in f for k in lab if k != "__name__"}
    return samples, labels


def dashboard_checks(extra_labels):
    path = os.path.join(DEPLOY, "grafana-dashboard.json")
    try:
        with open(path) as f:
            dash = json.load(f)
    except ValueError as e:
        check(False, "grafana-dashboard.json parses as JSON", e)
        return
    check(True, "grafana-dashboard.json parses as JSON")
    check(all(has(dash, k) for k in ("uid", "title", "schemaVersion", "panels")),
          "dashboard: uid, title, schemaVersion, panels")
    panels = dash.get("panels", [])
    ids = [p.get("id") for p in panels]
    check(len(set(ids)) == len(ids) and all(
        has(p, "type") and has(p, "title") and all(k in p.get("gridPos", {}) for k in "xywh") and
        p.get("targets") and all(has(t, "refId") and has(t, "expr") for t in p["targets"]) for p in panels),
        "dashboard: every panel has a unique id, type, title, position and queries")
    queries = [t["expr"] for p in panels for t in p.get("targets", [])]
    queries += [v.get("definition", "") for v in dash.get("templating", {}).get("list", [])]
    samples, labels = emitted()
    named = {n for q in queries for n in re.findall(r"\bvramshim_[a-z_]+\b", q)}
    check(named and named <= samples, "dashboard: every metric it names is one the exporter emits",
          sorted(named - samples))
    grouped = {lab.strip() for q in queries for g in re.findall(r"\bby\s*\(([^)]*)\)", q) for lab in g.split(",")}
    grouped |= {m for q in queries for m in re.findall(r"label_values\([^,]+,\s*(\w+)\)", q)}
    grouped |= {m for q in queries for m in re.findall(r"[{,]\s*(\w+)\s*=~?", q)}
    check(grouped <= labels | extra_labels, "dashboard: every label it groups or filters by exists",
          sorted(grouped - labels - extra_labels))
    needed = {"vramshim_device_resident_bytes", "vramshim_device_offloaded_pinned_bytes",
              "vramshim_device_offloaded_pageable_bytes", "vramshim_pinned_app_bytes",
              "vramshim_pinned_offload_bytes", "vramshim_evictions_total", "vramshim_oom_returned_total"}
    check(needed <= named, "dashboard: resident, offloaded, pinned, evictions and OOM answers",
          sorted(needed - named))
    check("uuid" in grouped, "dashboard: sums per physical device (uuid)")


def main():
    ds = daemonset_checks()
    pod_checks()
    cdi_checks()
    added = prometheus_checks(ds)
    dashboard_checks(added)
    return 1 if failed() else 0


if __name__ == "__main__":
    sys.exit(main())
