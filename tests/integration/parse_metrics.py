"""parse_metrics: read `vramshim metrics` output on stdin with the Prometheus
client library's own parser (python3-prometheus-client) and check that a
pid's samples carry the figures given on the command line:
    parse_metrics.py PID DEVICE_ALLOCATED OWNER OWNER_ALLOCATED
or per device, any family of bytes per device:
    parse_metrics.py --devices PID FAMILY:DEVICE=VALUE...
Exit 0 when it parses and the figures match; prints why otherwise."""
import sys

from prometheus_client.parser import text_string_to_metric_families


def devices(pid, wants):
    families = {f.name: f for f in text_string_to_metric_families(sys.stdin.read())}
    for want in wants:
        name, rest = want.split(":", 1)
        device, value = rest.split("=", 1)
        if name not in families:
            print(f"missing family {name}")
            return 1
        got = {s.labels.get("device"): s.value for s in families[name].samples
               if s.labels.get("pid") == pid}
        if got.get(device) != int(value):
            print(f"{name} for pid {pid}: {got}, expected device {device} = {value}")
            return 1
    print(f"metrics: {len(wants)} device figures match")
    return 0


def main():
    if sys.argv[1] == "--devices":
        return devices(sys.argv[2], sys.argv[3:])
    pid, dev_alloc, owner, owner_alloc = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    families = {f.name: f for f in text_string_to_metric_families(sys.stdin.read())}
    need = ["vramshim_device_allocated_bytes", "vramshim_owner_allocated_bytes", "vramshim_allocs"]
    for name in need:
        if name not in families:
            print(f"missing family {name}; have {sorted(families)}")
            return 1
    if families["vramshim_allocs"].type != "counter":
        print("vramshim_allocs_total is not a counter")
        return 1
    got = {(s.labels.get("pid"), s.labels.get("device")): s.value
           for s in families["vramshim_device_allocated_bytes"].samples}
    if got.get((pid, "0")) != dev_alloc:
        print(f"device allocated for pid {pid}: {got}")
        return 1
    owners = {(s.labels["pid"], s.labels["owner"]): s.value
              for s in families["vramshim_owner_allocated_bytes"].samples}
    if owners.get((pid, owner)) != owner_alloc:
        print(f"owner {owner} for pid {pid}: {owners}")
        return 1
    print(f"metrics: {len(families)} families parsed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
