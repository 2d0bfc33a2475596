# The benchmark's report: bench/results.md (tables, the machine, the
# commands, bench/notes.md) and the chart bench/results.png (gnuplot).

import os
import platform
import re
import shutil
import subprocess

import ffiprofile
from ffiprofile import LABELS, SYSCALLS
from harness import (BENCH, MEM_CALLS, MEM_RELOADS, PREFIX,
                     RELOAD_EVERY_MS, REPO, SEQ_N, SEQ_ROUNDS, WRK_CONNS,
                     WRK_SECS, WRK_SIZE, log)
from measure import spread

CONFIGS = [
    ("unpinned", "no CPU affinity (nginx's default)"),
    ("pinned", "`worker_cpu_affinity auto`"),
]
HANDLERS = ("ffi", "uds", "lua")


def machine():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = "%.0f GiB" % (int(line.split()[1]) / 1048576.0)
    ngx = subprocess.run(["nginx", "-v"], stderr=subprocess.PIPE,
                         text=True).stderr.strip().split("/")[-1]
    rev = subprocess.run(["git", "-C", REPO, "describe", "--always",
                          "--dirty"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True).stdout.strip()
    return {"nproc": os.cpu_count(), "cpu": cpu, "mem": mem,
            "kernel": platform.release(), "nginx": ngx, "rev": rev or "?",
            "load": os.getloadavg()}


# ---- lookups ----

def seq_rows(b, config):
    return [r for r in b.results.get("seq", []) if r["config"] == config]


def wrk_row(b, config, conns, handler):
    for r in b.results.get("wrk", []):
        if (r["config"], r["conns"], r["handler"]) == (config, conns,
                                                       handler):
            return r
    return None


def profile_of(b, key, config):
    for p in b.results.get("profile", []):
        if (p["key"], p["config"]) == (key, config):
            return p
    return None


def human(size):
    return "%d KB" % (size // 1024) if size >= 1024 else "%d B" % size


def count(n):
    if n >= 1000000:
        return "%gM" % (n / 1e6)
    return "%gk" % (n / 1e3) if n >= 1000 else "%d" % n


def num(n, fmt="{:,.0f}"):
    return fmt.format(n)


# ---- the chart ----

def write_data(b):
    """Data files for bench/results.gp."""
    d = os.path.join(PREFIX, "plot")
    os.makedirs(d, exist_ok=True)
    for config, _ in CONFIGS:
        with open(os.path.join(d, "seq-%s.dat" % config), "w") as f:
            f.write("# size ffi_us uds_us ratio target\n")
            for r in seq_rows(b, config):
                target = {512: "5", 102400: "8"}.get(r["size"], "NaN")
                f.write('"%s" %.3f %.3f %.2f %s\n'
                        % (human(r["size"]), r["ffi"], r["uds"], r["ratio"],
                           target))
    with open(os.path.join(d, "wrk.dat"), "w") as f:
        f.write("# group ffi uds lua (kreq/s) ffi_p99 uds_p99 lua_p99\n")
        for config, _ in CONFIGS:
            for conns in WRK_CONNS:
                rows = [wrk_row(b, config, conns, h) for h in HANDLERS]
                if None in rows:
                    continue
                f.write('"%d, %s" %s %s\n'
                        % (conns, "auto" if config == "pinned" else "none",
                           " ".join("%.2f" % (r["rps"] / 1e3) for r in rows),
                           " ".join("%.3f" % (r["p99"] or 0) for r in rows)))
    with open(os.path.join(d, "reload.dat"), "w") as f:
        f.write("# n t200_ms tall_ms\n")
        r = b.results.get("reload")
        if r:
            for i, (a, c) in enumerate(zip(r["t200"], r["tall"])):
                f.write("%d %.3f %.3f\n" % (i + 1, a, c))
    with open(os.path.join(d, "memory.dat"), "w") as f:
        f.write("# label MB\n")
        m = b.results.get("memory")
        if m:
            f.write('"before" %.2f\n"+%s calls" %.2f\n"+%s reloads" %.2f\n'
                    '"+%s more" %.2f\n'
                    % (m["before"], count(MEM_CALLS), m["after_calls"],
                       count(MEM_RELOADS), m["after_reloads"],
                       count(MEM_RELOADS), m["after_reloads2"]))
    with open(os.path.join(d, "profile.dat"), "w") as f:
        f.write("# category us_per_call: sequential 512 B, wrk -c32\n")
        for key, seq, load in chart_profile(b):
            f.write('"%s" %.3f %.3f\n' % (LABELS[key][0], seq, load))
    return d


def chart_profile(b):
    """The categories worth a bar: sequential 512 B next to wrk -c32."""
    seq = profile_of(b, "seq512", "pinned")
    load = profile_of(b, "wrk32", "pinned")
    if seq is None or load is None:
        return []
    a, c = dict(ffiprofile.rows(seq)), dict(ffiprofile.rows(load))
    keys = [k for k in ffiprofile.ORDER
            if max(a.get(k, 0), c.get(k, 0)) >= 0.05]
    keys.sort(key=lambda k: -max(a.get(k, 0), c.get(k, 0)))
    return [(k, a.get(k, 0), c.get(k, 0)) for k in keys[:10]]


def plot(b):
    if shutil.which("gnuplot") is None:
        log("no gnuplot: chart skipped (apt-get install gnuplot-nox)")
        return False
    d = write_data(b)
    m = b.results.get("memory")
    r = b.results.get("reload")
    args = ["gnuplot",
            "-e", "datadir='%s'" % d,
            "-e", "out='%s'" % os.path.join(BENCH, "results.png"),
            "-e", "median=%.3f" % (r["t200_median"] if r else 0),
            "-e", "rssmax=%.2f" % (max(m["before"], m["after_calls"],
                                       m["after_reloads"],
                                       m["after_reloads2"]) if m else 1),
            "-e", "prof=%d" % (1 if chart_profile(b) else 0),
            os.path.join(BENCH, "results.gp")]
    res = subprocess.run(args, stderr=subprocess.PIPE, text=True)
    if res.returncode != 0:
        log("gnuplot failed:\n" + res.stderr)
        return False
    return True


# ---- the tables ----

def targets(b):
    rows = []
    for config, _ in CONFIGS:
        seq = {r["size"]: r for r in seq_rows(b, config)}
        for size, want in ((512, 5), (102400, 8)):
            if size in seq:
                got = seq[size]["ratio"]
                rows.append(("sequential %s, %s: ffi >= %dx as fast as uds"
                             % (human(size), config, want),
                             "%.2fx" % got, got >= want))
        w = wrk_row(b, config, 32, "ffi")
        if w:
            rows.append(("throughput c=32, %s: ffi >= 90%% of pure Lua"
                         % config, "%.0f%%" % (w["vs_lua"] * 100),
                         w["vs_lua"] >= 0.9))
    r = b.results.get("reload")
    if r:
        rows.append(("reload: 200 within 20 ms (median)",
                     "%.2f ms" % r["t200_median"], r["t200_median"] <= 20))
        lost = r["lost"] + b.results.get("memory", {}).get("lost", 0)
        rows.append(("reload: no request lost", "%d lost" % lost, lost == 0))
    m = b.results.get("memory")
    if m:
        worst = max(abs(m["calls_pct"]), abs(m["reloads_pct"]))
        rows.append(("memory: RSS flat within 5%% (calls / %d reloads)"
                     % MEM_RELOADS,
                     "%+.1f%% / %+.1f%%" % (m["calls_pct"], m["reloads_pct"]),
                     worst <= 5))
    return rows


def report_seq(w, b):
    w("## 1. Sequential round trips")
    w("")
    w("%s echo calls from one coroutine (`GET /seq`), in %d rounds of %s "
      "that alternate ffi and uds (each after 100 warm-up calls); the "
      "median round counts, the range shows the noise. The unix-socket way "
      "keeps one connection and frames each message with a 4-byte "
      "big-endian length."
      % (num(SEQ_N), SEQ_ROUNDS, num(SEQ_N // SEQ_ROUNDS)))
    w("")
    w("| CPUs | size | ffi µs/call | ffi calls/s | uds µs/call | uds calls/s "
      "| ffi speed-up | ffi rounds | uds rounds |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for config, title in CONFIGS:
        for r in seq_rows(b, config):
            w("| %s | %s | %.2f | %s | %.2f | %s | **%.2fx** | %s | %s |"
              % (title, human(r["size"]), r["ffi"], num(1e6 / r["ffi"]),
                 r["uds"], num(1e6 / r["uds"]), r["ratio"],
                 spread(r["rounds"]["ffi"]), spread(r["rounds"]["uds"])))
    w("")


def report_wrk(w, b):
    w("## 2. Throughput")
    w("")
    w("`wrk -t2 -cN -d%ds --latency` against each handler, %d-byte answers "
      "(`GET /ffi`, `/uds`, `/lua`); wrk runs on the same 2 CPUs."
      % (WRK_SECS, WRK_SIZE))
    w("")
    w("| CPUs | handler | conns | req/s | p50 ms | p99 ms | errors "
      "| non-2xx | vs pure Lua |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for config, title in CONFIGS:
        for conns in WRK_CONNS:
            for h in HANDLERS:
                r = wrk_row(b, config, conns, h)
                if r is None:
                    continue
                w("| %s | %s | %d | %s | %.2f | %.2f | %d | %d | %.0f%% |"
                  % (title, h, conns, num(r["rps"]), r["p50"] or 0,
                     r["p99"] or 0, r["errors"], r["non2xx"],
                     r["vs_lua"] * 100))
    w("")


def report_reload(w, r):
    w("## 3. Reload")
    w("")
    w("%d reloads (`POST /ffi/reload?lib=demo`), one every %d ms, each "
      "swapping in the other of two builds of the demo (same code, "
      "different build id, loaded with `unpin = true`), while `wrk -t1 "
      "-c32` calls `/ffi`; `worker_cpu_affinity auto`."
      % (r["n"], RELOAD_EVERY_MS))
    w("")
    w("| | median | p90 | max |")
    w("|---|---:|---:|---:|")
    w("| POST -> 200 | %.2f ms | %.2f ms | %.2f ms |"
      % (r["t200_median"], r["t200_p90"], r["t200_max"]))
    w("| POST -> `/ffi/status` shows every worker serving it | %.2f ms "
      "| %.2f ms | %.2f ms |"
      % (r["tall_median"], r["tall_p90"], max(r["tall"])))
    w("")
    w("The first status read after the 200 already showed every worker on "
      "the new version in %d of %d reloads. Requests served during the "
      "reloads: %s at %s req/s; lost (socket errors + non-2xx): **%d**. "
      "Old images were all unmapped %.0f ms after the last reload "
      "(ffi_close_grace)."
      % (r["first_status"], r["n"], num(r["requests"]), num(r["rps"]),
         r["lost"], r["unmapped_ms"]))
    w("")


def report_memory(w, m):
    w("## 4. Memory")
    w("")
    w("Worker RSS (VmRSS summed over both workers, runtime threads "
      "included); `worker_cpu_affinity auto`. Each RSS is read once every "
      "old image is unmapped (`mapped_images` 1 in `/ffi/status`).")
    w("")
    w("| when | RSS | change |")
    w("|---|---:|---:|")
    w("| before (after the runs above) | %.1f MB | |" % m["before"])
    w("| after %s more calls (512 B, 16 light threads per worker, in %d "
      "worker(s)) | %.1f MB | %+.1f%% |"
      % (num(MEM_CALLS), m["call_workers"], m["after_calls"],
         m["calls_pct"]))
    w("| after %s reloads (%.1f s, under `wrk -c4`) | %.1f MB | %+.1f%% |"
      % (num(MEM_RELOADS), m["reload_secs"], m["after_reloads"],
         m["reloads_pct"]))
    w("| after %s more reloads | %.1f MB | %+.1f%% |"
      % (num(MEM_RELOADS), m["after_reloads2"], m["reloads2_pct"]))
    w("")
    w("Growth over the second %s reloads: %.2f KB per reload (what a leak "
      "would show; the first round also fills allocator caches). Requests "
      "served during the reloads: %s, lost: **%d**."
      % (num(MEM_RELOADS), m["kb_per_reload"], num(m["requests"]),
         m["lost"]))
    w("")


def report_profile(w, prof):
    w("## 5. Profile of the ffi path")
    w("")
    w("`perf record -a -e cpu-clock -c 1000000 --call-graph dwarf` while "
      "the workload runs, keeping the workers' samples (event loop and "
      "runtime threads); each sample goes to the first category its stack "
      "matches, in the order of the table (a syscall wins over whatever "
      "called it). µs of CPU per call = samples x 1 ms / calls. Counts per "
      "call come from `perf stat` of syscall tracepoints over a separate, "
      "identical run. Wall time per call is as measured under perf "
      "(sequential: one call at a time; wrk: two workers at once, so "
      "2 / rate).")
    w("")
    w("| CPU µs per call (share) | " + " | ".join(p["title"] for p in prof)
      + " |")
    w("|---|" + "---:|" * len(prof))
    for key in ffiprofile.ORDER:
        if not any(key in p["cats"] for p in prof):
            continue
        cells = []
        for p in prof:
            v = sum(p["cats"].get(key, [0, 0]))
            total = sum(sum(x) for x in p["cats"].values())
            cells.append("%.2f (%.0f%%)" % (v / 1e3 / p["calls"],
                                            100.0 * v / total if total else 0))
        w("| %s | %s |" % (LABELS[key][1], " | ".join(cells)))
    cells = []
    for p in prof:
        main = sum(v[0] for v in p["cats"].values()) / 1e3 / p["calls"]
        rt = sum(v[1] for v in p["cats"].values()) / 1e3 / p["calls"]
        cells.append("**%.2f** (event loop %.2f, runtime %.2f)"
                     % (main + rt, main, rt))
    w("| **CPU per call** | %s |" % " | ".join(cells))
    w("| **wall time per call**, under perf | %s |"
      % " | ".join("**%.2f**" % p["wall_record"] for p in prof))
    w("")
    w("| per call | " + " | ".join(p["title"] for p in prof) + " |")
    w("|---|" + "---:|" * len(prof))
    rows = [("raw_syscalls:sys_enter", "syscalls, all")]
    rows += [("syscalls:sys_enter_" + s, n) for s, n in SYSCALLS]
    rows += [("context-switches", "context switches")]
    for key, name in rows:
        w("| %s | %s |" % (name, " | ".join(
            "%.2f" % p["syscalls"].get(key, 0) for p in prof)))
    w("")


def report_commands(w, b):
    w("## Commands")
    w("")
    w("```")
    w("make bench                        # make, then bash bench/run.sh")
    w("BENCH_QUICK=1 bash bench/run.sh   # a smoke run of under a minute")
    w("# the requests, from bench/measure.py:")
    w("#   GET /seq?via=ffi|uds&size=N&n=%d   one round, JSON timing"
      % (SEQ_N // SEQ_ROUNDS))
    w("#   POST /ffi/reload?lib=demo, then GET /ffi/status until it shows "
      "the version")
    w("#   GET /seq?via=ffi&size=512&conc=16&n=%d   memory, per worker"
      % (MEM_CALLS // 2))
    w("# the profile: perf script -i build/bench/perf-RUN.data "
      "-F pid,tid,period,ip,sym,dso")
    seen = set()
    for c in b.commands:
        c = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", c)
        c = re.sub(r"-p [\d,]+", "-p WORKER_PIDS", c)
        c = re.sub(r"-d3600s", "-d(until SIGINT)", c)
        c = re.sub(r"fifo:\S+", "fifo:CTL,ACK", c)
        if c not in seen:
            seen.add(c)
            w(c)
    w("```")
    w("")


def report(b, chart):
    run = b.results["run"]
    mach = run["machine"]
    out = []
    w = out.append
    w("# Benchmark results")
    w("")
    w("Written by `make bench` (bench/run.sh, bench/bench.py) on %s in %.0f "
      "s. Do not edit: run it again (`python3 -B bench/bench.py --report` "
      "rewrites this file from the last run, e.g. after an edit of "
      "bench/notes.md, where the findings at the end come from)."
      % (run["date"], run["secs"]))
    w("")
    w("Machine: %d CPUs (%s), %s RAM, Linux %s; nginx %s; this repo at %s. "
      "Load average at the end: %.2f %.2f %.2f (other work on the machine "
      "skews every figure)."
      % ((mach["nproc"], mach["cpu"], mach["mem"], mach["kernel"],
          mach["nginx"], mach["rev"]) + tuple(mach["load"])))
    w("")
    w("Everything runs on this one machine: nginx (2 workers), the C demo "
      "runtime (one poll thread per worker), bench/uds_echo (a thread per "
      "connection) and wrk (2 threads). Sequential round trips and "
      "throughput are measured twice: with no CPU affinity (nginx's "
      "default: a runtime thread goes to whichever CPU the scheduler "
      "picks) and with `worker_cpu_affinity auto` (each worker, and the "
      "runtime threads it starts, which inherit its affinity, on one CPU).")
    w("")
    if run["http_conf"]:
        w("Added to nginx.conf's http block (BENCH_HTTP_CONF): `%s`"
          % run["http_conf"])
        w("")
    if chart:
        w("![results](results.png)")
        w("")

    w("## Targets (issue 7)")
    w("")
    w("| target | measured | met |")
    w("|---|---|---|")
    for name, got, ok in targets(b):
        w("| %s | %s | %s |" % (name, got, "yes" if ok else "**no**"))
    w("")

    if b.results.get("seq"):
        report_seq(w, b)
    if b.results.get("wrk"):
        report_wrk(w, b)
    if b.results.get("reload"):
        report_reload(w, b.results["reload"])
    if b.results.get("memory"):
        report_memory(w, b.results["memory"])
    if b.results.get("profile"):
        report_profile(w, b.results["profile"])
    report_commands(w, b)

    notes = os.path.join(BENCH, "notes.md")
    if os.path.exists(notes):
        with open(notes) as f:
            w(f.read().rstrip())
        w("")

    with open(os.path.join(BENCH, "results.md"), "w") as f:
        f.write("\n".join(out))


def print_table(b):
    """The measured tables and the targets, on the terminal."""
    out = []
    w = out.append
    if b.results.get("seq"):
        report_seq(w, b)
    if b.results.get("wrk"):
        report_wrk(w, b)
    if b.results.get("reload"):
        report_reload(w, b.results["reload"])
    if b.results.get("memory"):
        report_memory(w, b.results["memory"])
    w("## Targets (issue 7)")
    w("")
    for name, got, ok in targets(b):
        w("%-60s %-14s %s" % (name, got, "yes" if ok else "NO"))
    log("")
    log("\n".join(line.replace("`", "") for line in out
                  if not line.startswith("|--")))
