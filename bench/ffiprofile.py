# Where an ffi call spends its time: perf stat (syscalls, context switches)
# and perf record with dwarf stacks of the nginx workers, per call.

import json
import os
import re
import select
import shutil
import signal
import subprocess

from harness import (PREFIX, PROFILE, PROFILE_N, PROFILE_SECS, WRK_SIZE,
                     log, wait_for)


SYSCALLS = [
    ("futex", "futex: queue mutex and condition variable"),
    ("write", "write: eventfd (answer -> event loop)"),
    ("read", "read: eventfd"),
    ("epoll_wait", "epoll_wait"),
    ("sched_yield", "sched_yield: a spinner gives way"),
    ("writev", "writev: HTTP answers"),
    ("recvfrom", "recvfrom: HTTP requests"),
]


def perf_around(b, argv, workload):
    """Runs workload() with perf counting: perf starts disabled, and is
    enabled (and acknowledges it) right before, disabled right after."""
    ctl = os.path.join(PREFIX, "perf-ctl.fifo")
    ack = os.path.join(PREFIX, "perf-ack.fifo")
    for f in (ctl, ack):
        if os.path.exists(f):
            os.unlink(f)
        os.mkfifo(f)
    p = b.spawn(argv[:2] + ["-D", "-1", "--control",
                            "fifo:%s,%s" % (ctl, ack)] + argv[2:],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    afd = os.open(ack, os.O_RDONLY | os.O_NONBLOCK)
    cfd = []

    def ctl_open():
        # ENXIO until perf, its events open on every thread, reads it
        try:
            cfd.append(os.open(ctl, os.O_WRONLY | os.O_NONBLOCK))
            return True
        except OSError:
            return p.poll() is not None

    def command(cmd):
        os.write(cfd[0], cmd)
        ready, _, _ = select.select([afd], [], [], 10)
        if not ready or not os.read(afd, 64).startswith(b"ack"):
            raise RuntimeError("perf did not acknowledge " + cmd.decode())

    try:
        wait_for(ctl_open, 30, "perf to start")
        if not cfd:
            raise RuntimeError("%s exited with %d"
                               % (" ".join(argv[:2]), p.returncode))
        command(b"enable\n")
        calls = workload()
        command(b"disable\n")
    finally:
        for fd in cfd + [afd]:
            os.close(fd)
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
        p.wait()
        b.procs.remove(p)
    return p, calls


def profile_syscalls(b, what, workload):
    """Syscalls and context switches of the workers, per call."""
    events = ["syscalls:sys_enter_" + s for s, _ in SYSCALLS]
    events += ["raw_syscalls:sys_enter", "context-switches"]
    pids = ",".join(str(p) for p in b.workers())
    out = os.path.join(PREFIX, "perf-stat-%s-%s.txt" % (what, b.config()))
    p, calls = perf_around(b, ["perf", "stat", "-x", ",", "-o", out,
                               "-e", ",".join(events), "-p", pids],
                           workload)
    counts = {}
    with open(out) as f:
        for line in f:
            parts = line.strip().split(",")
            if len(parts) > 2 and parts[0].replace(".", "").isdigit():
                counts[parts[2]] = float(parts[0]) / calls
    return counts


def profile_record(b, what, workload):
    """perf record (dwarf stacks) of the machine while workload() runs;
    only the workers' samples are kept. System-wide, per-CPU events:
    following each thread instead would slow every context switch."""
    data = os.path.join(PREFIX, "perf-%s-%s.data" % (what, b.config()))
    if os.path.exists(data):
        os.unlink(data)         # else perf keeps it as .old
    # a sample per ms of CPU; dwarf stacks: LuaJIT has no frame pointers
    p, calls = perf_around(b, ["perf", "record", "-q", "-a",
                               "-e", "cpu-clock", "-c", "1000000",
                               "--call-graph", "dwarf,8192", "-o", data],
                           workload)
    script = subprocess.run(["perf", "script", "-i", data,
                             "-F", "pid,tid,period,ip,sym,dso"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True).stdout
    return classify(script, set(b.workers())), calls


# Categories, in the order a sample is tested against them: (key, label
# for the chart, description for the table)
CATEGORIES = [
    ("futex", "futex", "futex syscalls: queue mutex, condvar wait and wake"),
    ("efd_write", "eventfd write", "eventfd write: an answer wakes the loop"),
    ("efd_read", "eventfd read", "eventfd read"),
    ("epoll", "epoll_wait", "epoll_wait"),
    ("yield", "sched_yield", "sched_yield: a spinner lets the other run"),
    ("sys_other", "other syscalls",
     "other syscalls (HTTP: recv, writev and loopback TCP)"),
    ("kernel", "kernel, other",
     "kernel outside syscalls (interrupts, page faults)"),
    ("spin", "spinning",
     "spinning and busy polling in the module (its clock reads too)"),
    ("pushlstring", "lua_pushlstring",
     "lua_pushlstring: copies and interns the answer"),
    ("memcpy_rt", "memcpy in runtime", "memcpy in the runtime (demo_poll)"),
    ("memcpy_req", "memcpy of request",
     "memcpy of the request into the task (call_post)"),
    ("memcpy", "memcpy, other", "memcpy/memmove, other callers"),
    ("memcmp", "memcmp", "memcmp (LuaJIT string interning)"),
    ("malloc", "malloc/free",
     "malloc/free (the runtime's answer; nginx's request pools)"),
    ("pthread", "pthread, user", "pthread user side: mutex, condvar"),
    ("ffi", "ffi module", "ffi module: bridge, queue, task reuse"),
    ("luajit", "LuaJIT", "LuaJIT: VM, JIT-compiled Lua, lua_* API"),
    ("clock", "clock reads", "clock_gettime, gettimeofday (vDSO)"),
    ("ngx_lua", "lua-nginx-module", "lua-nginx-module"),
    ("nginx", "nginx", "nginx core"),
    ("runtime", "runtime code",
     "the runtime's own code (the C demo; Go: its scheduler and cgo too)"),
    ("other", "other", "other user code (libc: memset, recv wrappers)"),
]

LABELS = {k: (short, desc) for k, short, desc in CATEGORIES}
ORDER = [k for k, _, _ in CATEGORIES]

# kernel functions that tell which syscall a sample is in (newer kernels
# dispatch without __x64_sys_* frames); else the libc wrapper tells
KERNEL_SYSCALL = [
    ("futex", "futex"),
    ("eventfd_write", "efd_write"),
    ("eventfd_read", "efd_read"),
    ("ep_poll", "epoll"),
    ("do_epoll_wait", "epoll"),
    ("do_sched_yield", "yield"),
]

LIBC_SYSCALL = [
    ("pthread_cond", "futex"),
    ("pthread_mutex", "futex"),
    ("lll_", "futex"),
    ("futex", "futex"),
    ("epoll_wait", "epoll"),
    ("sched_yield", "yield"),
]

MALLOC = re.compile(r"(^|_)(malloc|free|cfree|calloc|realloc|memalign|"
                    r"malloc_consolidate|unlink_chunk|arena_for_chunk|"
                    r"tcache\w*)(@|$)")


def syscall_of(frames):
    """The category of a sample taken in a syscall, None if it was not."""
    kernel = [s for s, d in frames if d == "[kernel.kallsyms]"]
    if not any(s.startswith(("entry_SYSCALL", "do_syscall"))
               for s in kernel):
        return None
    for part, key in KERNEL_SYSCALL:
        if any(part in s for s in kernel):
            return key
    user = [s for s, d in frames if d != "[kernel.kallsyms]"]
    if user:
        for part, key in LIBC_SYSCALL:
            if part in user[0]:
                return key
    return "sys_other"


def category(frames):
    """One sample's category key, from its stack (leaf first)."""
    if not frames:
        return "other"
    key = syscall_of(frames)
    if key:
        return key
    if frames[0][1] == "[kernel.kallsyms]":
        return "kernel"
    syms = [s for s, _ in frames]
    if any("ngx_http_lua_ffi_module" in d and ("spin" in s or "busy" in s)
           for s, d in frames):
        return "spin"
    if "lua_pushlstring" in syms:
        return "pushlstring"
    leaf, dso = frames[0]
    if "memmove" in leaf or "memcpy" in leaf:
        if "demo_poll" in syms:
            return "memcpy_rt"
        if "ngx_http_lua_ffi_call_post" in syms:
            return "memcpy_req"
        return "memcpy"
    if "memcmp" in leaf:
        return "memcmp"
    if MALLOC.search(leaf):
        return "malloc"
    if any(x in leaf for x in ("pthread", "lll_", "condvar", "futex")):
        return "pthread"
    if "ngx_http_lua_ffi_module" in dso:
        return "ffi"
    if dso == "[vdso]":
        return "clock"
    if "libluajit" in dso or dso in ("[unknown]", "") \
            or dso.startswith("//anon"):
        return "luajit"         # JIT-compiled traces have no dso
    if "ngx_http_lua_module" in dso:
        return "ngx_lua"
    if os.path.basename(dso) == "nginx":
        return "nginx"
    if "libdemo" in dso or "/nginx-ffi." in dso or "libffi_" in dso:
        return "runtime"       # its shadow copy, or the file itself
    return "other"


def classify(script, pids):
    """perf script text -> {category: [event loop ns, runtime thread ns]},
    for the processes in pids only."""
    cats = {}
    for block in script.split("\n\n"):
        lines = [x for x in block.split("\n") if x.strip()]
        if not lines:
            continue
        head = lines[0].split()
        try:
            pid, tid = (int(x) for x in head[0].split("/"))
            period = int(head[1])
        except (ValueError, IndexError):
            continue
        if pid not in pids:
            continue
        frames = []
        for line in lines[1:]:
            # a library rebuilt while nginx runs shows as "(path (deleted))"
            line = line.replace(" (deleted)", "")
            m = re.match(r"\s*[0-9a-f]+ (.*) \(([^()]*)\)$", line)
            if m:
                sym = re.sub(r"\+0x[0-9a-f]+$", "", m.group(1))
                frames.append((sym, m.group(2)))
        # an inlined function belongs to the object of the frame below it
        for i in range(len(frames) - 2, -1, -1):
            if frames[i][1] == "inlined":
                frames[i] = (frames[i][0], frames[i + 1][1])
        c = category(frames)
        cats.setdefault(c, [0, 0])[0 if pid == tid else 1] += period
    return cats


def run_profile(b, which):
    """Profiles the runs named in which: seq512, seq100k, wrk32."""
    if not PROFILE:
        return
    if shutil.which("perf") is None:
        log("== profile: skipped (no perf; apt-get install linux-perf)")
        return
    log("== profile of the ffi path (%s, perf)" % b.config())

    def seq(size, n):
        def workload():
            code, body = b.get("/seq?way=ffi-c&size=%d&n=%d" % (size, n))
            if code != 200:
                raise RuntimeError("/seq: %d" % code)
            walls.append(json.loads(body)["secs"] * 1e6 / n)
            return n + 100          # with its 100 warm-up calls
        return workload

    def under_wrk(way):
        def workload():
            p = b.wrk("/%s?size=%d" % (way, WRK_SIZE), 32, PROFILE_SECS)
            r = b.wrk_result(p)
            # two workers serve at once: wall time per call is 2 / rate
            walls.append(2e6 / r["rps"] if r["rps"] else 0)
            return max(1, r["requests"])
        return workload

    runs = {"seq512": ("sequential 512 B", seq(512, PROFILE_N)),
            "seq100k": ("sequential 100 KB", seq(102400, PROFILE_N // 5)),
            "wrk32": ("wrk -c32, 512 B, ffi C", under_wrk("ffi-c")),
            "wrk32lua": ("wrk -c32, 512 B, pure Lua", under_wrk("lua")),
            "wrk32go": ("wrk -c32, 512 B, ffi Go", under_wrk("ffi-go"))}
    prof = b.results.setdefault("profile", [])
    try:
        for key in which:
            title, workload = runs[key]
            walls = []
            sysc = profile_syscalls(b, key, workload)
            cats, calls = profile_record(b, key, workload)
            prof.append({"key": key, "config": b.config(),
                         "title": "%s, %s" % (title, b.config()),
                         "calls": calls, "syscalls": sysc, "cats": cats,
                         "wall_stat": walls[0], "wall_record": walls[1]})
            total = sum(sum(v) for v in cats.values()) / 1e3 / calls
            log("  %-18s %6.2f us of worker CPU per call (%.2f us wall per "
                "call while recorded), %.1f syscalls, %.2f context switches"
                % (title, total, walls[1],
                   sysc.get("raw_syscalls:sys_enter", 0),
                   sysc.get("context-switches", 0)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        log("  profile failed: %s" % e)


def rows(prof):
    """[(category key, µs per call)] of one profile, largest first."""
    out = [(c, sum(v) / 1e3 / prof["calls"]) for c, v in prof["cats"].items()]
    return sorted(out, key=lambda x: -x[1])
