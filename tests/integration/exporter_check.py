"""exporter_check: `vramshim exporter` end to end, against live programs
under vramshim (tests/integration/prog_hold, on the test driver).

Scrapes go through curl and are read by the Prometheus client library's own
parser (python3-prometheus-client). Checked: the families and figures of
every process (one in the socket directory, one in a per-pod subdirectory),
their labels (pid, command, owner, device UUID); /healthz, 404 and 405;
processes that are gone between listing and asking (killed, answering
nothing, answering half a document, coming and going during scrapes) are
left out of a page that is still whole; 100 concurrent scrapes; a client
that trickles its request is cut off at the deadline while others are
served; the connection cap (a connection past it waits until one closes);
a port already in use (one clear line, exit 1);
bad usage (exit 2); a wider address gets its warning; SIGTERM ends it.
"""
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

from vs_live import PATIENCE, TOOL, UUID0, Exporter, Target, check, curl, env_with, failed, parse

def sample(fams, family, pid, **labels):
    for lab, value in fams.get(family, []):
        if lab.get("pid") == str(pid) and all(lab.get(k) == v for k, v in labels.items()):
            return lab, value
    return None, None


def page_ok(body, targets, what):
    """The page parses and shows each live target's allocation and owner."""
    try:
        fams = parse(body)
    except Exception as e:  # the parser's own complaint
        check(False, what, f"does not parse: {e}")
        return None
    for t in targets:
        _, v = sample(fams, "vramshim_device_allocated_bytes", t.pid, device="0")
        _, o = sample(fams, "vramshim_owner_allocated_bytes", t.pid, owner=t.owner)
        if v != t.mib << 20 or o != t.mib << 20:
            check(False, what, f"pid {t.pid}: device {v}, owner {o}, expected {t.mib << 20}")
            return None
    return fams


def main():
    root = tempfile.mkdtemp(prefix="vramshim-exp-")
    os.chmod(root, 0o700)
    pod = os.path.join(root, "pod-a")
    a = Target(root, "unet", 64)
    b = Target(pod, "vae", 32)
    # a roomy deadline where the machine's speed must not matter, and a
    # tight one (under the tool's own 5 s wait for an answer) where the
    # deadline itself is what is tested
    ex = Exporter(root, "--listen", "127.0.0.1:0", "--deadline", "60")
    tight = Exporter(root, "--listen", "127.0.0.1:0", "--deadline", "4")
    try:
        scrape_checks(root, ex, a, b)
        churn_checks(root, ex, a, b)
        concurrency_checks(ex, a, b)
        gone_checks(root, tight, a, b)
        slow_client_checks(tight, a, b)
        for e in (ex, tight):
            check("no process" not in e.stderr() and "no valid answer" not in e.stderr(),
                  "processes that are gone are skipped quietly", e.stderr())
            check(e.stop() == 0, "SIGTERM ends the exporter with status 0")
        cap_checks(root)
        usage_checks(root)
    finally:
        for t in (a, b):
            if t.proc.poll() is None:
                t.proc.kill()
        for e in (ex, tight):
            if e.proc.poll() is None:
                e.proc.kill()
    return 1 if failed() else 0


def scrape_checks(root, ex, a, b):
    code, body = curl(ex.url("/metrics"))
    check(code == 200, "GET /metrics answers 200", code)
    fams = page_ok(body, [a, b], "both processes, with their figures")
    if fams is None:
        return
    check(True, "both processes, with their figures")
    lab, _ = sample(fams, "vramshim_device_resident_bytes", a.pid, device="0")
    check(lab is not None and lab.get("uuid") == UUID0 and "prog_hold" in lab.get("command", ""),
          "device samples carry the device UUID and the command", lab)
    lab, _ = sample(fams, "vramshim_owner_resident_bytes", b.pid, owner="vae")
    check(lab is not None and lab.get("dir") == "pod-a" and lab.get("uuid") == UUID0,
          "a process in a per-pod subdirectory is labelled with it", lab)
    lab, _ = sample(fams, "vramshim_device_allocated_bytes", a.pid)
    check(lab is not None and "dir" not in lab, "a process at the top has no dir label", lab)
    # the same families as `vramshim metrics`, which shares the code
    out = subprocess.run([TOOL, "metrics"], env=env_with(root), capture_output=True, text=True)
    check(out.returncode == 0 and set(parse(out.stdout)) == set(fams),
          "the same families as `vramshim metrics`", sorted(set(fams) ^ set(parse(out.stdout))))
    code, head = curl(ex.url("/metrics"), "-I")
    check(code == 200 and "text/plain; version=0.0.4" in head, "HEAD /metrics and its content type", head)
    code, body = curl(ex.url("/healthz"))
    check(code == 200 and body == "ok\n", "/healthz", (code, body))
    code, _ = curl(ex.url("/other"))
    check(code == 404, "an unknown path is 404", code)
    code, _ = curl(ex.url("/metrics"), "-X", "POST", "-d", "x=1")
    check(code == 405, "POST is 405", code)


def unix_server(path, behaviour):
    """A stand-in for a process that dies while it answers: accepts, reads
    the request, and then closes (behaviour "silent") or writes half a
    document first ("half"); or one that hangs: never answers ("hung")."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(64)
    held = []

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            c.recv(4096)
            if behaviour == "hung":
                held.append(c)
                continue
            if behaviour == "half":
                c.sendall(b'{"ok":true,"stats":{"pid":')
            c.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv


def gone_checks(root, ex, a, b):
    # a real process killed outright: its socket stays behind
    c = Target(root, "doomed", 16)
    c.proc.kill()
    c.proc.wait(PATIENCE)
    # stand-ins, made after the last vramshim process started (a starting
    # server removes the sockets of pids it cannot find): a socket whose
    # process died without removing it (nobody listens), one that dies while
    # answering, one that answers half, and one that hangs: the exporter's
    # deadline is 4 s here, the tool's own wait for an answer 5 s, and the
    # page must still come, whole
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(os.path.join(root, "4000001.sock"))
    stale.close()
    silent = unix_server(os.path.join(root, "4000002.sock"), "silent")
    half = unix_server(os.path.join(root, "4000003.sock"), "half")
    hung = unix_server(os.path.join(root, "4000004.sock"), "hung")
    # a library's socket is <pid>-<pid namespace>.sock; the stand-ins use the
    # plain <pid>.sock form, which the tool reads too
    names = set(os.listdir(root))
    killed = any(n == f"{c.pid}.sock" or n.startswith(f"{c.pid}-") for n in names)
    want = {f"400000{i}.sock" for i in range(1, 5)}
    check(killed and want <= names, "the killed process's socket and the stand-ins are there",
          os.listdir(root))
    code, body = curl(ex.url("/metrics"))
    fams = page_ok(body, [a, b], "killed, silent, half-answering and hung processes")
    check(code == 200 and fams is not None, "a page without the processes that are gone", code)
    if fams is not None:
        pids = {lab.get("pid") for samples in fams.values() for lab, _ in samples}
        check(pids == {str(a.pid), str(b.pid)}, "only the live processes are on it", pids)
    silent.close()
    half.close()
    hung.close()


def churn_checks(root, ex, a, b):
    """Processes that come and go while scrapes run."""
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            t = Target(root, "brief", 1)
            t.end()

    th = threading.Thread(target=churn)
    th.start()
    bad = []
    for _ in range(30):
        code, body = curl(ex.url("/metrics"))
        if code != 200 or page_ok(body, [a, b], "scrape during churn") is None:
            bad.append(code)
    stop.set()
    th.join(PATIENCE)
    check(not bad, "30 scrapes while processes start and exit: every page whole", bad)


def concurrency_checks(ex, a, b):
    with tempfile.TemporaryDirectory() as d:
        args = ["curl", "-sS", "--parallel", "--parallel-immediate", "--parallel-max", "100",
                "--max-time", str(PATIENCE), "-w", "%{http_code}\n"]
        for i in range(100):
            args += ["-o", os.path.join(d, f"{i}.txt"), ex.url("/metrics")]
        out = subprocess.run(args, capture_output=True, text=True, timeout=PATIENCE + 10)
        codes = out.stdout.split()
        whole = 0
        for i in range(100):
            with open(os.path.join(d, f"{i}.txt")) as f:
                if page_ok(f.read(), [a, b], f"concurrent scrape {i}") is not None:
                    whole += 1
        check(codes.count("200") == 100 and whole == 100, "100 concurrent scrapes, each whole",
              (codes.count("200"), whole, out.stderr[-300:]))


def slow_client_checks(ex, a, b):
    # trickles a header a byte at a time: the idle timeout never fires, the
    # deadline (4 s here) must
    s = socket.create_connection((ex.host, ex.port))
    s.settimeout(PATIENCE)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    start = time.monotonic()
    served_meanwhile = None
    cut = False
    while time.monotonic() - start < PATIENCE:
        try:
            s.sendall(b"a")
        except OSError:
            cut = True
            break
        if served_meanwhile is None:
            code, body = curl(ex.url("/metrics"))
            served_meanwhile = code == 200 and page_ok(body, [a, b], "served beside a slow client") is not None
        # how the trickle is paced is not what is tested: the deadline is
        # 4 s, the client would trickle for PATIENCE
        time.sleep(0.05)
    else:
        cut = False
    s.close()
    check(served_meanwhile, "others are served while a client trickles")
    check(cut, "the trickling client is cut off at the deadline")


def cap_checks(root):
    ex = Exporter(root, "--listen", "127.0.0.1:0", "--max-connections", "2", "--deadline", "60")
    try:
        # two silent connections fill the cap (their deadline is 60 s); a
        # third waits in the listen queue, unanswered, until one closes
        held = [socket.create_connection((ex.host, ex.port)) for _ in range(2)]
        third = socket.create_connection((ex.host, ex.port))
        third.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        # a bounded look: a server that ignored the cap answers well within it
        third.settimeout(1.0)
        try:
            early = third.recv(100)
        except socket.timeout:
            early = b""
        check(early == b"", "a third connection over a cap of 2 is not served", early)
        held[0].close()
        third.settimeout(PATIENCE)
        answer = b""
        try:
            while True:
                chunk = third.recv(4096)
                if not chunk:
                    break
                answer += chunk
        except OSError:
            pass
        check(answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok\n"),
              "it is served once a held connection closes", answer[:80])
        third.close()
        held[1].close()
    finally:
        ex.stop()


def usage_checks(root):
    env = env_with(root)
    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    out = subprocess.run([TOOL, "exporter", "--listen", f"127.0.0.1:{port}"], env=env, capture_output=True,
                         text=True, timeout=PATIENCE)
    lines = out.stderr.strip().splitlines()
    check(out.returncode == 1 and len(lines) == 1 and "already in use" in lines[0] and str(port) in lines[0],
          "a port already in use: one clear line, exit 1", (out.returncode, out.stderr))
    busy.close()
    for bad in (["--listen", "localhost"], ["--listen", "127.0.0.1:99999"], ["--listen", "[::1:80"],
                ["--deadline", "0"], ["--max-connections", "x"], ["--colour"], ["extra"]):
        out = subprocess.run([TOOL, "exporter", *bad], env=env, capture_output=True, text=True,
                             timeout=PATIENCE)
        check(out.returncode == 2 and "usage: vramshim exporter" in out.stderr, f"usage error: {bad}",
              (out.returncode, out.stderr))
    out = subprocess.run([TOOL, "exporter", "--help"], env=env, capture_output=True, text=True)
    check(out.returncode == 0 and "--listen" in out.stdout, "--help")
    wide = Exporter(root, "--listen", "0.0.0.0:0")
    check("reachable from other machines" in wide.stderr(), "a wider address is warned about", wide.stderr())
    wide.stop()


if __name__ == "__main__":
    sys.exit(main())
