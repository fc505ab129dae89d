"""vs_live: live programs under vramshim and `vramshim exporter`, for the
Python tests (exporter_check.py, deploy_check.py): the build's tool and
test programs on the test driver, with a socket directory of the test's."""
import os
import signal
import subprocess
import sys
import tempfile

from prometheus_client.parser import text_string_to_metric_families

BUILD = os.environ.get("VRAMSHIM_BUILD")
if not BUILD:
    sys.exit("run through make check")
TOOL = os.path.join(BUILD, "tools", "vramshim")
HOLD = os.path.join(BUILD, "tests", "integration", "prog_hold")
# Long enough for any machine: a failure, not a slow run, reaches it.
PATIENCE = 60
# fakecuda_uuid_bytes: fixed bytes, the ordinal last
UUID0 = "GPU-facec0da-1234-4567-89ab-cdef00112200"


_failures = 0


def check(cond, what, detail=""):
    global _failures
    if cond:
        print(f"ok   {what}")
    else:
        _failures += 1
        print(f"FAIL {what} {detail}")


def parse(text):
    """{family: [(labels, value)]}, the sample's name as label __name__;
    raises when the page does not parse."""
    fams = {}
    for f in text_string_to_metric_families(text):
        fams[f.name] = [({**s.labels, "__name__": s.name}, s.value) for s in f.samples]
    return fams


def failed():
    return _failures


def env_with(socket_dir):
    env = dict(os.environ)
    env["VRAMSHIM_SOCKET_DIR"] = socket_dir
    fake = os.path.join(BUILD, "tests", "fakecuda", ".libs")
    env["LD_LIBRARY_PATH"] = fake + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    env.pop("LD_PRELOAD", None)
    return env


class Target:
    """prog_hold under `vramshim run`: holds MiB as owner until closed."""

    def __init__(self, socket_dir, owner, mib):
        self.proc = subprocess.Popen([TOOL, "run", "--", HOLD, owner, str(mib)], env=env_with(socket_dir),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("ready "):
            raise RuntimeError(f"prog_hold did not start: {line!r}")
        self.pid = int(line.split()[1])
        self.mib = mib
        self.owner = owner

    def end(self):
        self.proc.stdin.close()
        self.proc.wait(PATIENCE)


class Exporter:
    def __init__(self, socket_dir, *args):
        self.err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([TOOL, "exporter", *args], env=env_with(socket_dir),
                                     stdout=subprocess.PIPE, stderr=self.err, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.proc.wait(PATIENCE)
            raise RuntimeError(f"exporter did not start: {line!r} {self.stderr()}")
        self.addr = line.split()[2]
        self.host, self.port = self.addr.rsplit(":", 1)
        self.port = int(self.port)

    def url(self, path):
        return f"http://{self.addr}{path}"

    def stderr(self):
        self.err.seek(0)
        return self.err.read()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(PATIENCE)


def curl(url, *extra):
    """(status, body) of one request through curl."""
    out = subprocess.run(["curl", "-sS", "--max-time", str(PATIENCE), "-w", "\n%{http_code}", *extra, url],
                         capture_output=True, text=True, timeout=PATIENCE + 10)
    body, _, code = out.stdout.rpartition("\n")
    return int(code or 0), body


