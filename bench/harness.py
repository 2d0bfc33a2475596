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
# where the servers' files go, and where the report goes (the smoke test,
# t/900, points both at a temporary folder)
PREFIX = os.environ.get("BENCH_PREFIX") or os.path.join(REPO, "build",
                                                        "bench")
OUT = os.environ.get("BENCH_OUT") or BENCH
# the nginx and the module under test (t/memcheck/run.sh: ASan builds)
NGINX = os.environ.get("BENCH_NGINX") or "nginx"
MODULE = os.environ.get("BENCH_MODULE") or os.path.join(
    REPO, "build", "ngx_http_lua_ffi_module.so")

QUICK = os.environ.get("BENCH_QUICK") == "1"
# a few calls per row and every wrk run at once: proves the harness works
TINY = os.environ.get("BENCH_TINY") == "1"


KNOBS = {}


def knob(name, full, quick, tiny):
    v = int(os.environ.get("BENCH_" + name,
                           tiny if TINY else quick if QUICK else full))
    KNOBS["BENCH_" + name] = str(v)
    return v


def knobs():
    """The settings of this run, as BENCH_* variables: --report writes
    the tables of a run with the settings it had."""
    return dict(KNOBS)


# every figure can be turned down for a quick look (BENCH_QUICK=1)
SEQ_N = knob("SEQ_N", 20000, 2000, 10)
SEQ_ROUNDS = knob("SEQ_ROUNDS", 5, 3, 1)
# a round of a slow way (a Python server at 100 KB) stops short of SEQ_N
SEQ_ROUND_SECS = knob("SEQ_ROUND_MS", 300, 100, 10) / 1e3
SEQ_SIZES = [512, 102400]
WRK_SECS = knob("WRK_SECS", 2, 1, 1)
WRK_ROUNDS = knob("WRK_ROUNDS", 3, 1, 1)
WRK_CONNS = [32, 256]
WRK_SIZE = 512
RELOADS = knob("RELOADS", 50, 10, 3)
RELOAD_EVERY_MS = knob("RELOAD_EVERY_MS", 100, 50, 50)
MEM_CALLS = knob("MEM_CALLS", 1000000, 20000, 200)
MEM_RELOADS = knob("MEM_RELOADS", 1000, 20, 3)
PROFILE = knob("PROFILE", 1, 1, 0) != 0
PROFILE_N = knob("PROFILE_N", 50000, 5000, 100)
PROFILE_SECS = knob("PROFILE_SECS", 5, 2, 1)
# the metrics A/B (issue 15): rounds of "before, after" (every other round
# "after, before"), each a fresh nginx with the C demo: MCOST_N sequential
# 512 B calls, then wrk -c32 for WRK_SECS
MCOST_ROUNDS = knob("MCOST_ROUNDS", 5, 3, 1)
MCOST_N = knob("MCOST_N", 20000, 5000, 10)
# bench/floor: seconds per hand-off case, in milliseconds
FLOOR_MS = knob("FLOOR_MS", 500, 200, 20)

# the module before the metrics, built by bench/run.sh (or why not)
BEFORE_MODULE = os.environ.get("BENCH_BEFORE_MODULE")
BEFORE_LUA = os.environ.get("BENCH_BEFORE_LUA")
BEFORE_REV = os.environ.get("BENCH_BEFORE_REV", "")
# the other side: the module under test, or one built at BENCH_AFTER_REV
AFTER_MODULE = os.environ.get("BENCH_AFTER_MODULE")
AFTER_LUA = os.environ.get("BENCH_AFTER_LUA")
AFTER_REV = os.environ.get("BENCH_AFTER_REV", "")
BEFORE_SKIP = os.environ.get("BENCH_BEFORE_SKIP") or (
    None if BEFORE_MODULE else "no module before the metrics was built")

# directives added to the http block, e.g. to compare a module option on
# and off: BENCH_HTTP_CONF='ffi_busy_poll_us 0;'
HTTP_CONF = os.environ.get("BENCH_HTTP_CONF", "")

# the status of a library settles once its old images are unmapped, after
# ffi_close_grace (500 ms by default): never wait this long for it
SETTLE_TIMEOUT = 30.0
# a JVM and a Node.js start in each worker before anything is timed
READY_TIMEOUT = 120.0

LIB = "demo"
BUILDS = ["a", "b"]

# the ways an echo is served: (key, label, language); the key is the
# location (/KEY) and /seq's way
FFI_RUNTIMES = [("c", "C"), ("go", "Go"), ("rust", "Rust"),
                ("python", "Python"), ("java", "Java"),
                ("nodejs", "Node.js")]
UDS_SERVERS = [("c", "C"), ("go", "Go"), ("python", "Python")]
WAYS = ([("ffi-" + k, "ffi " + n, n) for k, n in FFI_RUNTIMES]
        + [("uds-" + k, "uds " + n, n) for k, n in UDS_SERVERS]
        + [("lua", "pure Lua", "Lua")])
SEQ_WAYS = [w for w in WAYS if w[0] != "lua"]
LABEL = {k: label for k, label, _ in WAYS}

# the examples' folders: where make examples leaves each library
EXAMPLE_DIRS = ["go", "rust", "python", "java", "nodejs"]

# the CPU modes: (key, title, worker_cpu_affinity, ffi_runtime_cpus)
# the CPUs this process may use, as ffi_runtime_cpus reads a list
ALL_CPUS = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))

MODES = [
    ("unpinned", "no CPU affinity (nginx's default)", None, None),
    ("pinned", "`worker_cpu_affinity auto`, default runtime CPUs",
     "auto", None),
    ("inherit", "`worker_cpu_affinity auto` + `ffi_runtime_cpus inherit`",
     "auto", "inherit"),
    # runtime threads may also run where their worker runs: the scheduler
    # is free again, the workers stay bound
    ("every", "`worker_cpu_affinity auto` + `ffi_runtime_cpus` every CPU",
     "auto", ALL_CPUS),
]
MODE_TITLE = {k: t for k, t, _, _ in MODES}


class Bench:
    """What was started (so that it is stopped) and what was measured."""

    def __init__(self):
        self.procs = []         # children to stop: servers, nginx, wrk
        self.port = None
        self.admin = None
        self.master = None
        self.results = {}
        self.commands = []
        self.build = 0          # which build of the demo is in place
        self.nginx = None
        self.mode = "unpinned"
        self.uds_paths = {}

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
        """The unix-socket echo servers: C (a thread per connection), Go
        (a goroutine per connection), Python (asyncio)."""
        for d in ("lib", "shadow", "client_body"):
            os.makedirs(os.path.join(PREFIX, d), exist_ok=True)

        python = "/usr/bin/python3"
        if not os.access(python, os.X_OK):
            python = shutil.which("python3")
        argv = {"c": [os.path.join(PREFIX, "uds_echo")],
                "go": [os.path.join(PREFIX, "uds_echo_go")],
                "python": [python, "-B", os.path.join(BENCH, "uds_echo.py")]}

        for key, _ in UDS_SERVERS:
            # sun_path holds 107 bytes: a deep checkout falls back to /tmp
            sock = os.path.join(PREFIX, "uds-%s.sock" % key)
            if len(sock.encode()) > 100:
                sock = os.path.join(tempfile.gettempdir(), "ffi-bench-%d-%s"
                                    ".sock" % (os.getpid(), key))
            if os.path.exists(sock):
                os.unlink(sock)
            self.uds_paths[key] = sock

            uds = self.spawn(argv[key] + [sock])
            wait_for(lambda: os.path.exists(sock) or uds.poll() is not None,
                     30, "uds server %s to listen" % key)
            if uds.poll() is not None:
                raise RuntimeError("uds server %s exited with %d"
                                   % (key, uds.returncode))

    def knows_runtime_cpus(self, **conf):
        """Whether the module has ffi_runtime_cpus: nginx -t of the
        benchmark's configuration in mode (c) (conf: write_conf's)."""
        path = self.write_conf("inherit", free_port(), "nginx-t.conf",
                               **conf)
        r = subprocess.run([NGINX, "-t", "-p", PREFIX, "-c", path],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
        if r.returncode == 0:
            return True
        if "ffi_runtime_cpus" in r.stdout:
            return False
        raise RuntimeError("nginx -t failed:\n" + r.stdout)

    def write_conf(self, mode, port, name="nginx.conf", module=MODULE,
                   lua_dir=None, runtimes=None, http_conf=HTTP_CONF):
        """runtimes: the keys of FFI_RUNTIMES each worker starts (all by
        default); module and lua_dir: another build (the metrics A/B)."""
        _, _, affinity, runtime_cpus = [m for m in MODES if m[0] == mode][0]
        with open(os.path.join(BENCH, "nginx.conf.in")) as f:
            conf = f.read()
        user = "root" if os.geteuid() == 0 else None
        libpath = ":".join([os.path.join(PREFIX, "lib")]
                           + [os.path.join(REPO, "examples", d)
                              for d in EXAMPLE_DIRS])
        conf = (conf.replace("@REPO@", REPO).replace("@PREFIX@", PREFIX)
                .replace("@MODULE@", module)
                .replace("@LUA_DIR@", lua_dir or os.path.join(REPO, "lua"))
                .replace("@RUNTIME_KEYS@", "nil" if runtimes is None else
                         "{%s}" % ", ".join('"%s"' % k for k in runtimes))
                .replace("@PORT@", str(port))
                .replace("@USER@", user or "")
                .replace("@AFFINITY@", affinity or "off")
                .replace("@LIBRARY_PATH@", libpath)
                .replace("@UDS_C@", self.uds_paths.get("c", ""))
                .replace("@UDS_GO@", self.uds_paths.get("go", ""))
                .replace("@UDS_PYTHON@", self.uds_paths.get("python", ""))
                .replace("@RUNTIME_CPUS@",
                         "ffi_runtime_cpus %s;" % runtime_cpus
                         if runtime_cpus else "")
                .replace("@HTTP_CONF@", http_conf))
        if user is None:
            conf = re.sub(r"(?m)^user .*\n", "", conf)
        if affinity is None:
            conf = re.sub(r"(?m)^worker_cpu_affinity off;\n", "", conf)
        path = os.path.join(PREFIX, name)
        with open(path, "w") as f:
            f.write(conf)
        return path

    def start_nginx(self, mode, **conf):
        """nginx with both workers in CPU mode `mode` (MODES); returns once
        every worker has started every runtime and had an answer. conf:
        write_conf's choices (runtimes: only these ways are checked)."""
        self.install_build(0)
        self.port = free_port()
        self.mode = mode
        conf_path = self.write_conf(mode, self.port, **conf)
        runtimes = conf.get("runtimes")
        ways = [w for w in WAYS if runtimes is None
                or w[0] in ["ffi-" + k for k in runtimes]]

        # nginx reads NGINX as sockets inherited from a binary upgrade
        env = {k: v for k, v in os.environ.items() if k != "NGINX"}
        ngx = self.spawn([NGINX, "-p", PREFIX, "-c", conf_path,
                          "-g", "daemon off;"], env=env)
        self.nginx = ngx
        self.master = ngx.pid
        wait_for(lambda: port_open(self.port) or ngx.poll() is not None,
                 30, "nginx to listen")
        if ngx.poll() is not None:
            raise RuntimeError("nginx exited with %d; see %s/error.log"
                               % (ngx.returncode, PREFIX))

        wait_for(lambda: len(self.workers()) == 2, 30, "2 nginx workers")

        self.admin = http.client.HTTPConnection("127.0.0.1", self.port,
                                                timeout=600)

        def ready():
            status, body = self.get("/ready")
            r = json.loads(body)
            if r["errors"]:
                raise RuntimeError("runtimes failed to start: %r (see %s/"
                                   "error.log)" % (r["errors"], PREFIX))
            return r["ready"] >= r["want"]
        wait_for(ready, READY_TIMEOUT, "every runtime in both workers")

        for key, _, _ in ways:
            status, body = self.get("/%s?size=16" % key)
            if status != 200 or len(body) != 16:
                raise RuntimeError("GET /%s: %d %r" % (key, status, body))

    def stop_nginx(self):
        self.admin.close()
        self.nginx.send_signal(signal.SIGTERM)
        self.nginx.wait(timeout=30)
        self.procs.remove(self.nginx)
        self.nginx = None

    def config(self):
        return self.mode

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


