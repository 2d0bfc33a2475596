# The benchmark's harness (bench/bench.py): its settings, the servers it
# starts (uds_echo, nginx), HTTP and wrk, and stopping all of them.

import http.client
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
PREFIX = os.path.join(REPO, "build", "bench")

QUICK = os.environ.get("BENCH_QUICK") == "1"


def knob(name, full, quick):
    return int(os.environ.get("BENCH_" + name, quick if QUICK else full))


# every figure can be turned down for a quick look (BENCH_QUICK=1)
SEQ_N = knob("SEQ_N", 100000, 5000)
SEQ_ROUNDS = 5
SEQ_SIZES = [512, 4096, 10240, 102400]
WRK_SECS = knob("WRK_SECS", 10, 2)
WRK_CONNS = [32, 256]
WRK_SIZE = 512
RELOADS = knob("RELOADS", 50, 10)
RELOAD_EVERY_MS = knob("RELOAD_EVERY_MS", 100, 50)
MEM_CALLS = knob("MEM_CALLS", 1000000, 20000)
MEM_RELOADS = knob("MEM_RELOADS", 1000, 20)
PROFILE = knob("PROFILE", 1, 1) != 0
PROFILE_N = knob("PROFILE_N", 50000, 5000)
PROFILE_SECS = knob("PROFILE_SECS", 5, 2)

# directives added to the http block, e.g. to compare a module option on
# and off: BENCH_HTTP_CONF='ffi_busy_poll_us 0;'
HTTP_CONF = os.environ.get("BENCH_HTTP_CONF", "")

# the status of a library settles once its old images are unmapped, after
# ffi_close_grace (500 ms by default): never wait this long for it
SETTLE_TIMEOUT = 30.0

LIB = "demo"
BUILDS = ["a", "b"]


class Bench:
    """What was started (so that it is stopped) and what was measured."""

    def __init__(self):
        self.procs = []         # children to stop: uds_echo, nginx, wrk
        self.port = None
        self.admin = None
        self.master = None
        self.results = {}
        self.commands = []
        self.build = 0          # which build of the demo is in place
        self.nginx = None
        self.pinned = False
        self.uds_path = None

    # ---- processes ----

    def spawn(self, argv, **kw):
        self.commands.append(" ".join(shorten(a) for a in argv))
        p = subprocess.Popen(argv, **kw)
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in reversed(self.procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []

    # ---- the servers ----

    def start_uds(self):
        for d in ("lib", "shadow", "client_body"):
            os.makedirs(os.path.join(PREFIX, d), exist_ok=True)

        # sun_path holds 107 bytes: a deep checkout falls back to /tmp
        sock = os.path.join(PREFIX, "uds.sock")
        if len(sock.encode()) > 100:
            sock = os.path.join(tempfile.gettempdir(),
                                "ffi-bench-%d.sock" % os.getpid())
        if os.path.exists(sock):
            os.unlink(sock)
        self.uds_path = sock

        uds = self.spawn([os.path.join(PREFIX, "uds_echo"), sock])
        wait_for(lambda: os.path.exists(sock) or uds.poll() is not None,
                 10, "uds_echo to listen")
        if uds.poll() is not None:
            raise RuntimeError("uds_echo exited with %d" % uds.returncode)

    def start_nginx(self, pinned):
        """nginx with both workers; pinned: worker_cpu_affinity auto, so
        that each worker and the runtime threads it starts share a CPU."""
        self.install_build(0)
        self.port = free_port()
        self.pinned = pinned

        with open(os.path.join(BENCH, "nginx.conf.in")) as f:
            conf = f.read()
        user = "root" if os.geteuid() == 0 else None
        conf = (conf.replace("@REPO@", REPO).replace("@PREFIX@", PREFIX)
                .replace("@PORT@", str(self.port))
                .replace("@USER@", user or "")
                .replace("@AFFINITY@", "auto" if pinned else "off")
                .replace("@UDS@", self.uds_path)
                .replace("@HTTP_CONF@", HTTP_CONF))
        if user is None:
            conf = re.sub(r"(?m)^user .*\n", "", conf)
        if not pinned:
            conf = re.sub(r"(?m)^worker_cpu_affinity off;\n", "", conf)
        conf_path = os.path.join(PREFIX, "nginx.conf")
        with open(conf_path, "w") as f:
            f.write(conf)

        ngx = self.spawn(["nginx", "-p", PREFIX, "-c", conf_path,
                          "-g", "daemon off;"])
        self.nginx = ngx
        self.master = ngx.pid
        wait_for(lambda: port_open(self.port) or ngx.poll() is not None,
                 15, "nginx to listen")
        if ngx.poll() is not None:
            raise RuntimeError("nginx exited with %d; see %s/error.log"
                               % (ngx.returncode, PREFIX))

        wait_for(lambda: len(self.workers()) == 2, 15, "2 nginx workers")

        self.admin = http.client.HTTPConnection("127.0.0.1", self.port,
                                                timeout=600)
        for path in ("/ffi?size=16", "/uds?size=16", "/lua?size=16"):
            status, body = self.get(path)
            if status != 200 or len(body) != 16:
                raise RuntimeError("GET %s: %d %r" % (path, status, body))

    def stop_nginx(self):
        self.admin.close()
        self.nginx.send_signal(signal.SIGTERM)
        self.nginx.wait(timeout=30)
        self.procs.remove(self.nginx)
        self.nginx = None

    def config(self):
        return "pinned" if self.pinned else "unpinned"

    def install_build(self, which):
        """Puts build `which` of the demo at the path nginx loads."""
        src = os.path.join(PREFIX, "libdemo-%s.so" % BUILDS[which])
        dst = os.path.join(PREFIX, "lib", "libdemo.so")
        tmp = dst + ".tmp"
        shutil.copyfile(src, tmp)
        os.rename(tmp, dst)
        self.build = which

    def workers(self):
        path = "/proc/%d/task/%d/children" % (self.master, self.master)
        try:
            with open(path) as f:
                return [int(p) for p in f.read().split()]
        except OSError:
            return []

    def rss_kb(self):
        total = {}
        for pid in self.workers():
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total[pid] = int(line.split()[1])
        return total

    # ---- HTTP ----

    def request(self, method, path, conn=None):
        c = conn or self.admin
        for attempt in (1, 2):
            try:
                c.request(method, path)
                r = c.getresponse()
                return r.status, r.read()
            except (http.client.HTTPException, OSError):
                c.close()
                if attempt == 2:
                    raise

    def get(self, path, conn=None):
        return self.request("GET", path, conn)

    def status(self):
        code, body = self.get("/ffi/status")
        if code != 200:
            raise RuntimeError("GET /ffi/status: %d %r" % (code, body[:200]))
        return json.loads(body)

    # ---- wrk ----

    def wrk(self, path, conns, secs, threads=2):
        argv = ["wrk", "-t%d" % threads, "-c%d" % conns, "-d%ds" % secs,
                "--latency", "http://127.0.0.1:%d%s" % (self.port, path)]
        p = self.spawn(argv, stdout=subprocess.PIPE, text=True)
        return p

    def wrk_result(self, p):
        out, _ = p.communicate()
        self.procs.remove(p)
        if p.returncode != 0:
            raise RuntimeError("wrk exited with %d:\n%s" % (p.returncode, out))
        return parse_wrk(out)


# ---- helpers ----

def shorten(arg):
    """Commands as a reader would type them: paths relative to the repo."""
    return arg.replace(REPO + "/", "").replace(REPO, ".")


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for " + what)
        time.sleep(0.01)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def to_ms(value):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", value)
    if not m:
        return None
    return float(m.group(1)) * {"us": 1e-3, "ms": 1, "s": 1e3,
                                "m": 6e4}[m.group(2)]


def parse_wrk(out):
    r = {"rps": 0.0, "requests": 0, "errors": 0, "non2xx": 0,
         "p50": None, "p99": None, "raw": out}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    if m:
        r["requests"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                  r"timeout (\d+)", out)
    if m:
        r["errors"] = sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        r["non2xx"] = int(m.group(1))
    for pct in ("50", "99"):
        m = re.search(r"^\s+%s%%\s+(\S+)" % pct, out, re.M)
        if m:
            r["p" + pct] = to_ms(m.group(1))
    return r


def percentile(values, pct):
    """Nearest rank: the smallest value with pct% of them at or below."""
    v = sorted(values)
    return v[max(0, math.ceil(pct / 100.0 * len(v)) - 1)]


def log(msg):
    print(msg, flush=True)


