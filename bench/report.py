# The benchmark's report: bench/results.md (tables, the machine, the
# commands, bench/notes.md) and the chart bench/results.png (gnuplot).

import os
import platform
import re
import shutil
import subprocess

import ffiprofile
from ffiprofile import LABELS, SYSCALLS
from harness import (ALL_CPUS, BENCH, LABEL, MEM_CALLS, MEM_RELOADS,
                     MODE_TITLE, MODES, OUT, PREFIX, RELOAD_EVERY_MS, REPO,
                     SEQ_N, SEQ_ROUND_SECS, SEQ_ROUNDS, SEQ_SIZES, SEQ_WAYS,
                     TINY, WAYS, WRK_CONNS, WRK_ROUNDS, WRK_SECS, WRK_SIZE,
                     log)
from measure import spread

# the targets of issue 16, item 3 (ratios within one run)
SEQ_TARGETS = [(512, 10), (102400, 8)]
WRK_TARGETS = [  # (ffi way, against way, at least)
    ("ffi-c", "lua", 0.90),
    ("ffi-go", "lua", 0.85),
    ("ffi-go", "uds-go", 2.0),
    ("ffi-python", "uds-python", 2.0),
]
RELOAD_MEDIAN_MS = 5
# the modes the targets speak of ("both modes"); mode (c) is shown beside
TARGET_MODES = ("unpinned", "pinned")
SHORT = {"unpinned": "no affinity", "pinned": "affinity auto",
         "inherit": "auto + inherit", "every": "auto + every CPU"}


def modes(b):
    done = b.results.get("modes") or [m for m, _, _, _ in MODES[:2]]
    return [(m, MODE_TITLE[m]) for m in done]


def shorten_out():
    return os.path.relpath(OUT, REPO) if OUT.startswith(REPO) else OUT


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

def seq_row(b, config, way, size):
    for r in b.results.get("seq", []):
        if (r["config"], r["way"], r["size"]) == (config, way, size):
            return r
    return None


def wrk_row(b, config, conns, way):
    for r in b.results.get("wrk", []):
        if (r["config"], r["conns"], r["way"]) == (config, conns, way):
            return r
    return None


def uds_peer(way):
    """The unix-socket server an ffi way is compared with: the same
    language's, else C's."""
    lang = way.split("-", 1)[1]
    peer = "uds-" + lang
    return peer if peer in LABEL else "uds-c"


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
    """Data files for bench/results.gp: one row per way, one column per
    CPU mode."""
    d = os.path.join(PREFIX, "plot")
    os.makedirs(d, exist_ok=True)
    ms = modes(b)
    head = "way " + " ".join('"%s"' % SHORT[m] for m, _ in ms) + "\n"
    for size in SEQ_SIZES:
        with open(os.path.join(d, "seq-%d.dat" % size), "w") as f:
            f.write(head)
            for way, label, _ in SEQ_WAYS:
                cells = []
                for m, _ in ms:
                    r = seq_row(b, m, way, size)
                    cells.append("%.3f" % r["us"] if r else "NaN")
                f.write('"%s" %s\n' % (label, " ".join(cells)))
    for conns in WRK_CONNS:
        with open(os.path.join(d, "wrk-%d.dat" % conns), "w") as f:
            f.write(head)
            for way, label, _ in WAYS:
                cells = []
                for m, _ in ms:
                    r = wrk_row(b, m, conns, way)
                    cells.append("%.2f" % (r["rps"] / 1e3) if r else "NaN")
                f.write('"%s" %s\n' % (label, " ".join(cells)))
    with open(os.path.join(d, "targets.dat"), "w") as f:
        f.write("# target measured/required met\n")
        for name, _, ok, score in targets(b):
            if score is not None:
                f.write('"%s" %.3f %d\n' % (chart_name(name), score,
                                            1 if ok else 0))
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


def chart_name(name):
    """A target's name, short enough for the chart's axis."""
    name = name.replace("sequential ", "seq ").replace(" of pure Lua", "")
    name = name.replace("no affinity", "none").replace("affinity auto",
                                                        "auto")
    name = name.replace("ffi ", "").replace(" >= ", " ≥ ")
    return name.replace(" (median), under load", "").replace(", ", " ")


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
            "-e", "out='%s'" % os.path.join(OUT, "results.png"),
            "-e", "median=%.3f" % (r["t200_median"] if r else 0),
            "-e", "rssmax=%.2f" % (max(m["before"], m["after_calls"],
                                       m["after_reloads"],
                                       m["after_reloads2"]) if m else 1),
            "-e", "prof=%d" % (1 if chart_profile(b) else 0),
            "-e", "nmodes=%d" % len(modes(b)),
            os.path.join(BENCH, "results.gp")]
    res = subprocess.run(args, stderr=subprocess.PIPE, text=True)
    if res.returncode != 0:
        log("gnuplot failed:\n" + res.stderr)
        return False
    return True


# ---- the tables ----

def targets(b):
    """[(name, measured, met, measured / required or None)]"""
    rows = []
    done = [m for m, _ in modes(b)]
    for config in [m for m in TARGET_MODES if m in done]:
        short = SHORT[config]
        for size, want in SEQ_TARGETS:
            f = seq_row(b, config, "ffi-c", size)
            u = seq_row(b, config, "uds-c", size)
            if f and u:
                got = u["us"] / f["us"]
                rows.append(("sequential %s, %s: ffi C >= %dx uds C"
                             % (human(size), short, want),
                             "%.2fx" % got, got >= want, got / want))
        for way, other, want in WRK_TARGETS:
            f = wrk_row(b, config, 32, way)
            o = wrk_row(b, config, 32, other)
            if not f or not o:
                continue
            got = f["rps"] / o["rps"] if o["rps"] else 0
            if other == "lua":
                rows.append(("wrk c32, %s: %s >= %.0f%% of pure Lua"
                             % (short, LABEL[way], want * 100),
                             "%.0f%%" % (got * 100), got >= want,
                             got / want))
            else:
                rows.append(("wrk c32, %s: %s >= %gx %s"
                             % (short, LABEL[way], want, LABEL[other]),
                             "%.2fx" % got, got >= want, got / want))
    r = b.results.get("reload")
    if r:
        rows.append(("reload: 200 within %d ms (median), under load"
                     % RELOAD_MEDIAN_MS, "%.2f ms" % r["t200_median"],
                     r["t200_median"] <= RELOAD_MEDIAN_MS,
                     RELOAD_MEDIAN_MS / max(r["t200_median"], 1e-3)))
        lost = (r["lost"] + b.results.get("memory", {}).get("lost", 0)
                + b.results.get("reload_notrial", {}).get("lost", 0))
        rows.append(("reload: no request lost", "%d lost" % lost, lost == 0,
                     None))
    m = b.results.get("memory")
    if m:
        second = m["reloads2_pct"] - m["reloads_pct"]
        worst = max(abs(m["calls_pct"]), abs(m["reloads_pct"]), abs(second))
        rows.append(("memory: RSS flat within 5%% (%s calls / %s reloads / "
                     "%s more)" % (count(MEM_CALLS), num(MEM_RELOADS),
                                   num(MEM_RELOADS)),
                     "%+.1f%% / %+.1f%% / %+.1f%%"
                     % (m["calls_pct"], m["reloads_pct"], second),
                     worst <= 5, None))
    return rows


METRICS_TARGET = ("metrics cost within noise (issue 15): ffi C, sequential "
                  "512 B and wrk c32, metrics zone on (after) vs the module "
                  "before it (section 6)")


def where_explained(b, name):
    """The section that speaks of a missed target, if any."""
    limits = b.results.get("floor") or any(
        "idle_pct" in r for r in b.results.get("wrk", []))
    if limits and (name.startswith("wrk c32, affinity auto")
                   or name.startswith("reload: 200")):
        return " (section 7)"
    if b.results.get("profile") and name.startswith("wrk c32"):
        return " (section 5)"
    return ""


def noise(values):
    """The spread of one side's rounds, relative to their median."""
    mid = sorted(values)[(len(values) - 1) // 2]
    return (max(values) - min(values)) / mid if mid else 0


def mcost_figures(m):
    """(cost ratio sequential, rate ratio wrk, noise of each); a ratio
    counts as within noise when it is no worse than 1 by more than the
    wider spread of the two sides' rounds."""
    seq = m["after"]["us"] / m["before"]["us"]
    rps = (m["after"]["rps_median"] / m["before"]["rps_median"]
           if m["before"]["rps_median"] else 0)
    seq_noise = max(noise(m["before"]["seq"]), noise(m["after"]["seq"]))
    rps_noise = max(noise(m["before"]["rps"]), noise(m["after"]["rps"]))
    return seq, rps, seq_noise, rps_noise


def mcost_target(b):
    """(name, measured, met or None when it was not measured)."""
    m = b.results.get("mcost")
    if not m:
        return METRICS_TARGET, "not measured (an older run)", None
    if m.get("skipped"):
        return METRICS_TARGET, "not measured: " + m["skipped"], None
    seq, rps, seq_noise, rps_noise = mcost_figures(m)
    lost = m["before"]["errors"] + m["after"]["errors"]
    ok = (seq - 1 <= seq_noise and 1 - rps <= rps_noise and lost == 0)
    return (METRICS_TARGET,
            "%.2fx the µs per call (noise %.0f%%), %.2fx the requests/s "
            "(noise %.0f%%)%s"
            % (seq, seq_noise * 100, rps, rps_noise * 100,
               ", %d failed" % lost if lost else ""), ok)


def report_seq(w, b):
    w("## 1. Sequential round trips")
    w("")
    w("Up to %s echo calls per way and size from one coroutine (`GET "
      "/seq`), in %d rounds that take every way in turn (each round after "
      "100 warm-up calls; a first short round sets each way's calls so "
      "that a round takes at most %.1f s); the median round counts, the "
      "range shows the noise. A unix "
      "socket keeps one connection and frames each message with a 4-byte "
      "big-endian length. Speed-up: over the unix-socket server of the "
      "same language (C's for Rust, Java and Node.js)."
      % (num(SEQ_N), SEQ_ROUNDS, SEQ_ROUND_SECS))
    w("")
    sizes = " | ".join("%s µs/call | %s speed-up | %s rounds"
                       % ((human(s),) * 3) for s in SEQ_SIZES)
    w("| CPUs | way | " + sizes + " |")
    w("|---|---|" + "---:|---:|---:|" * len(SEQ_SIZES))
    for config, title in modes(b):
        for way, label, _ in SEQ_WAYS:
            cells = []
            for size in SEQ_SIZES:
                r = seq_row(b, config, way, size)
                if r is None:
                    cells += ["", "", ""]
                    continue
                up = ""
                if way.startswith("ffi-"):
                    u = seq_row(b, config, uds_peer(way), size)
                    if u:
                        up = "**%.1fx** %s" % (u["us"] / r["us"],
                                               LABEL[uds_peer(way)])
                cells += ["%.2f" % r["us"], up, spread(r["rounds"])]
            w("| %s | %s | %s |" % (title, label, " | ".join(cells)))
    w("")


def report_wrk(w, b):
    w("## 2. Throughput")
    w("")
    w("`wrk -t2 -cN -d%ds --latency` against each way (`GET /WAY`), "
      "%d-byte answers, in %d rounds that take every way in turn; the "
      "round with the median rate stands for the way (its p99 too), the "
      "range shows the noise; failed counts every round. wrk runs on the "
      "same 2 CPUs.%s%s"
      % (WRK_SECS, WRK_SIZE, WRK_ROUNDS,
         " Idle: the share of the CPU time (the CPUs the benchmark may "
         "use) nothing used during the median round (/proc/stat; its "
         "first and last eighth left out)."
         if any("idle_pct" in r for r in b.results.get("wrk", [])) else "",
         " Tiny mode (a smoke run): figures meaningless." if TINY
         else ""))
    w("")
    head = " | ".join("c%d req/s | c%d p99 ms | c%d vs pure Lua | c%d idle"
                      % (c, c, c, c) for c in WRK_CONNS)
    w("| CPUs | way | " + head + " | rounds, req/s | failed |")
    w("|---|---|" + "---:|---:|---:|---:|" * len(WRK_CONNS) + "---:|---:|")
    for config, title in modes(b):
        for way, label, _ in WAYS:
            cells, failed, spreads = [], 0, []
            for conns in WRK_CONNS:
                r = wrk_row(b, config, conns, way)
                if r is None:
                    cells += ["", "", "", ""]
                    continue
                failed += r["errors"] + r["non2xx"]
                cells += [num(r["rps"]), "%.2f" % (r["p99"] or 0),
                          "%.0f%%" % (r["vs_lua"] * 100),
                          "%.0f%%" % r["idle_pct"] if "idle_pct" in r
                          else ""]
                rounds = r.get("rounds", [r["rps"]])
                spreads.append("c%d %s-%s" % (conns, num(min(rounds)),
                                              num(max(rounds))))
            w("| %s | %s | %s | %s | %d |"
              % (title, label, " | ".join(cells), ", ".join(spreads),
                 failed))
    w("")


def report_reload(w, r, notrial=None):
    w("## 3. Reload")
    w("")
    w("%d reloads (`POST /ffi/reload?lib=demo`), one every %d ms, each "
      "swapping in the other of two builds of the demo (same code, "
      "different build id, loaded with `unpin = true`), while `wrk -t1 "
      "-c32` calls `/ffi-c`; `worker_cpu_affinity auto`."
      % (r["n"], RELOAD_EVERY_MS))
    w("")
    w("| | median | p90 | max |")
    w("|---|---:|---:|---:|")
    w("| POST -> 200 | %.2f ms | %.2f ms | %.2f ms |"
      % (r["t200_median"], r["t200_p90"], r["t200_max"]))
    w("| POST -> `/ffi/status` shows every worker serving it | %.2f ms "
      "| %.2f ms | %.2f ms |"
      % (r["tall_median"], r["tall_p90"], max(r["tall"])))
    if notrial:
        w("| POST -> 200, another nginx with `ffi_trial off` (no trial "
          "process: the rest of the protocol) | %.2f ms | %.2f ms | "
          "%.2f ms |" % (notrial["t200_median"], notrial["t200_p90"],
                         notrial["t200_max"]))
    w("")
    w("The first status read after the 200 already showed every worker on "
      "the new version in %d of %d reloads. Requests served during the "
      "reloads: %s at %s req/s; lost (socket errors + non-2xx): **%d**. "
      "Old images were all unmapped %.0f ms after the last reload "
      "(ffi_close_grace)."
      % (r["first_status"], r["n"], num(r["requests"]), num(r["rps"]),
         r["lost"], r["unmapped_ms"]))
    if notrial:
        w("")
        w("With `ffi_trial off`: %d reloads, %s requests served meanwhile, "
          "lost: **%d**." % (notrial["n"], num(notrial["requests"]),
                             notrial["lost"]))
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


def after_name(m):
    if m.get("after_rev"):
        return ("the module at %s (BENCH_AFTER_REV, built in "
                "build/bench-after the same way)" % m["after_rev"])
    return "this build (the module under test)"


def report_mcost(w, m):
    w("## 6. Per-call cost of the metrics (issue 15)")
    w("")
    if m.get("skipped"):
        w("Not measured: %s (the module before the metrics is built from "
          "the repository's history)." % m["skipped"])
        w("")
        return
    w("The metrics (`GET /ffi/metrics`) count every call in a shared zone "
      "and cannot be turned off, so their cost is an A/B of two builds: "
      "the module at %s (the commit before them, built by bench/run.sh in "
      "build/bench-before, with its own lua/resty_ffi.lua) against %s. "
      "Both run the same nginx.conf: only the C demo (the same build of "
      "it), no BENCH_HTTP_CONF, and where runtime threads run as the old "
      "module ran them, on their worker's CPU (before: %s; after: %s). "
      "%d rounds, each \"before, after\" (every other round \"after, "
      "before\"), each side a fresh nginx: %s sequential 512 B calls from "
      "one coroutine (after 100 warm-up calls), then wrk -c32 for %d s. "
      "The median round stands for each side; noise is the wider spread "
      "(max - min) / median of the two sides' rounds. Load average before "
      "/ after: %s / %s."
      % (m["before_rev"], after_name(m),
         MODE_TITLE[m["before"].get("mode", m["mode"])],
         MODE_TITLE[m["after"].get("mode", m["mode"])],
         m["rounds"], num(m["n"]), m["wrk_secs"],
         " ".join("%.2f" % x for x in m["load"][0]),
         " ".join("%.2f" % x for x in m["load"][-1])))
    w("")
    seq, rps, seq_noise, rps_noise = mcost_figures(m)
    a, z = m["before"], m["after"]
    w("| ffi C | before (%s) | after (%s) | after / before | noise |"
      % (m["before_rev"], m.get("after_rev") or "this build"))
    w("|---|---:|---:|---:|---:|")
    w("| sequential 512 B, µs per call | %.2f (%s) | %.2f (%s) | %.3f | "
      "%.0f%% |" % (a["us"], spread(a["seq"]), z["us"], spread(z["seq"]),
                   seq, seq_noise * 100))
    w("| wrk c32, requests/s | %s (%s) | %s (%s) | %.3f | %.0f%% |"
      % (num(a["rps_median"]), "-".join(num(x) for x in (min(a["rps"]),
                                                          max(a["rps"]))),
         num(z["rps_median"]), "-".join(num(x) for x in (min(z["rps"]),
                                                          max(z["rps"]))),
         rps, rps_noise * 100))
    w("| wrk c32, requests (failed) | %s (%d) | %s (%d) | | |"
      % (num(a["requests"]), a["errors"], num(z["requests"]), z["errors"]))
    w("")


# section 5's categories, as section 7 groups them
HANDOFF_CATS = ("futex", "efd_write", "efd_read", "epoll", "yield", "spin")
CALL_CATS = ("pushlstring", "memcpy_rt", "memcpy_req", "memcpy", "memcmp",
             "malloc", "pthread", "ffi", "luajit", "clock", "ngx_lua",
             "runtime")


def cpu_of(p, cats=None):
    """µs of CPU per call in profile p, of these categories (or all)."""
    return sum(sum(v) for k, v in p["cats"].items()
               if cats is None or k in cats) / 1e3 / p["calls"]


def run_cpus(b):
    """The CPUs the run could use: saved with it (an older run: this
    process's)."""
    run = b.results.get("run", {})
    return (run.get("cpus", ALL_CPUS),
            run.get("ncpus", len(ALL_CPUS.split(","))))


def report_floor(w, b):
    floor = b.results["floor"]
    hand = {r["name"]: r for r in floor if r["what"] == "handoff"}
    spawn = {r["busy_per_cpu"]: r for r in floor if r["what"] == "spawn"}
    w("### The machine's floor")
    w("")
    w("bench/floor.c, run before nginx starts: two threads hand a turn to "
      "each other and back (a round trip, as a call and its answer), "
      "waiting on a futex or spinning (shaped like the module's queue "
      "spin, a pause a look and `sched_yield()` every 64, but without its "
      "time limit and on both sides: a lower bound); on one CPU or on two; "
      "with a thread that never sleeps on the second CPU, as a saturated "
      "worker, and what that thread loses. Then %d process starts "
      "(`posix_spawn()` of a small program until its `main()` runs: what "
      "a reload's trial costs before any library is mapped), with the CPUs "
      "idle and with a busy thread on every CPU (a harsher load than "
      "wrk's). One run: on this VM the figures move between runs."
      % (list(spawn.values())[0]["spawns"] if spawn else 0))
    w("")
    w("| hand-off, round trip | wall µs | CPU µs (both threads) | the busy "
      "thread loses, µs |")
    w("|---|---:|---:|---:|")
    for r in hand.values():
        w("| %s | %.2f | %.2f | %s |"
          % (r["name"], r["wall_us"], r["cpu_us"],
             "%.2f" % r["neighbour_lost_us"] if "neighbour_lost_us" in r
             else ""))
    w("")
    w("| process start | median ms | p90 ms | max ms |")
    w("|---|---:|---:|---:|")
    for busy, r in sorted(spawn.items()):
        w("| %s | %.2f | %.2f | %.2f |"
          % ("CPUs idle" if busy == 0 else "a busy thread on every CPU",
             r["median_ms"], r["p90_ms"], r["max_ms"]))
    w("")


def report_idle(w, b):
    """Bound workers: the idle share of each mode, and mode (d)."""
    cpus, ncpus = run_cpus(b)
    idle = []
    for config, short in (("pinned", "mode (b)"),
                          ("unpinned", "no affinity"),
                          ("inherit", "`ffi_runtime_cpus inherit`"),
                          ("every", "mode (d), every CPU")):
        f = wrk_row(b, config, 32, "ffi-c")
        u = wrk_row(b, config, 32, "lua")
        if f and u and "idle_pct" in f and "idle_pct" in u:
            idle.append("%s %.0f%% (pure Lua %.0f%%)"
                        % (short, f["idle_pct"], u["idle_pct"]))
    if not idle:
        return
    w("### Bound workers: idle CPUs")
    w("")
    w("Under wrk -c32, ffi C left this share of the CPU time unused "
      "(section 2): %s." % "; ".join(idle))
    if ncpus == 2:
        w("With `worker_cpu_affinity auto` and 2 workers on 2 CPUs, the "
          "one CPU a runtime thread may use by default is the other "
          "worker's. The idle share in mode (b) is consistent with a "
          "worker whose requests all wait for its runtime thread, its own "
          "CPU idle, while that thread waits for the other worker's CPU; "
          "without affinity the scheduler may move the thread, with "
          "`inherit` it runs where its worker waits, and in mode (d) it "
          "may run on either CPU while the workers stay bound.")
    d = wrk_row(b, "every", 32, "ffi-c")
    p = wrk_row(b, "pinned", 32, "ffi-c")
    if d and p:
        w("")
        w("Mode (d) is mode (b) with `ffi_runtime_cpus %s`: ffi C served "
          "%s requests/s there (%.0f%% of pure Lua's rate in that mode), "
          "against %s (%.0f%%) in mode (b); pure Lua's own rate moves "
          "between modes with the machine's noise (section 2)."
          % (cpus, num(d["rps"]), d["vs_lua"] * 100, num(p["rps"]),
             p["vs_lua"] * 100))
        if d["rps"] > p["rps"]:
            w("Naming every CPU in `ffi_runtime_cpus` is the setting to "
              "try where every CPU has a bound worker and calls keep the "
              "workers busy; it costs sequential calls a little (section "
              "1), as a runtime thread may then share its worker's CPU. "
              "The default keeps runtime threads off their worker's CPU, "
              "as issue 16 asks.")
    w("")


def report_cpu(w, b):
    """Mode (b): the CPU a request of ffi C takes beyond pure Lua's."""
    ffi = profile_of(b, "wrk32", "pinned")
    lua = profile_of(b, "wrk32lua", "pinned")
    rate = wrk_row(b, "pinned", 32, "lua")
    want = dict(((f, o), x) for f, o, x in WRK_TARGETS)[("ffi-c", "lua")]
    if not (ffi and lua and rate and rate["rps"]):
        return
    _, ncpus = run_cpus(b)
    per = ncpus * 1e6 / rate["rps"]
    w("### Bound workers: where an ffi call's CPU goes")
    w("")
    w("Mode (b): pure Lua served %s requests/s%s, %.1f µs of the %d "
      "CPUs' time a request (wrk, the kernel and "
      "nginx together). Were throughput set by CPU alone, the %.0f%% "
      "target would allow an ffi C request %.1f µs more than that. "
      "Section 5's profile of the same mode (workers' threads only) puts "
      "ffi C at %.2f µs a request and pure Lua at %.2f, %+.2f:"
      % (num(rate["rps"]), " (%.0f%% of the CPU time idle)"
         % rate["idle_pct"] if "idle_pct" in rate else "", per, ncpus,
         want * 100,
         (1 / want - 1) * per, cpu_of(ffi), cpu_of(lua),
         cpu_of(ffi) - cpu_of(lua)))
    w("")
    w("| part | ffi C | pure Lua | more |")
    w("|---|---:|---:|---:|")
    other = [k for k in set(ffi["cats"]) | set(lua["cats"])
             if k not in HANDOFF_CATS + CALL_CATS]
    for name, cats in [
            ("hand-off: futex, eventfd, epoll_wait, sched_yield, spinning",
             HANDOFF_CATS),
            ("the call's own work: ffi module, queue mutex and condition "
             "variable (user side), malloc/free of the answer, copies, "
             "LuaJIT, lua-nginx-module, clock reads, the runtime's code",
             CALL_CATS),
            ("the HTTP work both do: its syscalls, the kernel, nginx, libc",
             other)]:
        a, c = cpu_of(ffi, cats), cpu_of(lua, cats)
        w("| %s | %.2f | %.2f | %+.2f |" % (name, a, c, a - c))
    w("")
    w("A runtime thread whose only CPUs are busy waits for its next task "
      "either asleep, each hand-off then a wake onto a busy CPU (\"futex, "
      "two CPUs, busy neighbour\" in the floor: what the busy thread "
      "loses a round trip), or spinning and yielding, on time the busy "
      "thread loses (\"spin, two CPUs, busy neighbour\": the least of it, "
      "a peer that answers at once). bench/notes.md has what was tried "
      "against it.")
    w("")


def report_reload_floor(w, b):
    r = b.results.get("reload")
    spawn = {x["busy_per_cpu"]: x for x in b.results.get("floor", [])
             if x["what"] == "spawn"}
    if not (r and spawn.get(0) and spawn.get(1)):
        return
    w("### Reload under load")
    w("")
    w("A reload of a changed file tries it in a process of its own "
      "before any worker maps it (`ffi_trial`, on by default): a process "
      "start alone takes %.2f ms (median) here with the CPUs idle and "
      "%.2f ms with a busy thread on every CPU (the floor above), against "
      "the %d ms the target allows the whole reload (check, trial, "
      "prepare in every worker, commit). The reload took %.2f ms (median) "
      "under wrk%s. bench/notes.md has a trace of each step."
      % (spawn[0]["median_ms"], spawn[1]["median_ms"], RELOAD_MEDIAN_MS,
         r["t200_median"],
         ", and %.2f ms in an nginx with `ffi_trial off` (section 3)"
         % b.results["reload_notrial"]["t200_median"]
         if b.results.get("reload_notrial") else ""))
    w("")


def report_limits(w, b):
    """Section 7: what the run shows about its throughput and reload
    figures, from the floor, the idle shares and the profile."""
    if not (b.results.get("floor") or any("idle_pct" in r for r in
                                          b.results.get("wrk", []))):
        return
    w("## 7. What limits throughput and reload time")
    w("")
    if b.results.get("floor"):
        report_floor(w, b)
    report_idle(w, b)
    report_cpu(w, b)
    report_reload_floor(w, b)


def report_commands(w, b):
    w("## Commands")
    w("")
    w("```")
    w("make bench                        # make, make examples, bash "
      "bench/run.sh")
    w("BENCH_QUICK=1 bash bench/run.sh   # fewer calls, shorter wrk runs")
    w("BENCH_TINY=1 BENCH_OUT=/tmp/x bash bench/run.sh   # t/900's smoke "
      "run")
    w("# the requests, from bench/measure.py:")
    w("#   GET /seq?way=WAY&size=N&n=%d   one round, JSON timing"
      % (SEQ_N // SEQ_ROUNDS))
    w("#   POST /ffi/reload?lib=demo, then GET /ffi/status until it shows "
      "the version")
    w("#   GET /seq?way=ffi-c&size=512&conc=16&n=%d   memory, per worker"
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
    w("Everything runs on this one machine: nginx (2 workers), in each "
      "worker the echo runtimes of examples/ (C, Go, Rust, Python, Java, "
      "Node.js, all loaded at once), the unix-socket echo servers a plugin "
      "server stands for (bench/uds_echo.c: a thread per connection; "
      "bench/uds_echo.go: a goroutine per connection; bench/uds_echo.py: "
      "asyncio), and wrk (2 threads). Sequential round trips and "
      "throughput are measured in each CPU mode: (a) no CPU affinity "
      "(nginx's default); (b) `worker_cpu_affinity auto` with the "
      "module's default policy for runtime threads; (c) the same with "
      "`ffi_runtime_cpus inherit` (runtime threads on their worker's "
      "CPU)%s, where the module knows the directive (`nginx -t` "
      "decides).%s"
      % ("; (d) the same with `ffi_runtime_cpus` naming every CPU "
         "(runtime threads may run where their worker runs too)"
         if "every" in [m for m, _ in modes(b)] else "",
         "" if "inherit" in [m for m, _ in modes(b)] else
         " This module does not: mode (c) was skipped."))
    w("")
    if run["http_conf"]:
        w("Added to nginx.conf's http block (BENCH_HTTP_CONF): `%s`"
          % run["http_conf"])
        w("")
    if chart:
        w("![results](results.png)")
        w("")

    w("## Targets (issue 16)")
    w("")
    w("Ratios within this one run; a benchmark on a shared machine, never "
      "a timed test. \"no affinity\": mode (a); \"affinity auto\": mode "
      "(b), the module's default runtime CPUs.")
    w("")
    w("| target | measured | met |")
    w("|---|---|---|")
    for name, got, ok, _ in targets(b):
        w("| %s | %s | %s |" % (name, got, "yes" if ok else "**no**"
                                + where_explained(b, name)))
    name, got, ok = mcost_target(b)
    w("| %s | %s | %s |" % (name, got, "n/a" if ok is None else
                            "yes" if ok else "**no**"))
    w("")

    if b.results.get("seq"):
        report_seq(w, b)
    if b.results.get("wrk"):
        report_wrk(w, b)
    if b.results.get("reload"):
        report_reload(w, b.results["reload"], b.results.get("reload_notrial"))
    if b.results.get("memory"):
        report_memory(w, b.results["memory"])
    if b.results.get("profile"):
        report_profile(w, b.results["profile"])
    if b.results.get("mcost"):
        report_mcost(w, b.results["mcost"])
    report_limits(w, b)
    report_commands(w, b)

    notes = os.path.join(BENCH, "notes.md")
    if os.path.exists(notes):
        with open(notes) as f:
            w(f.read().rstrip())
        w("")

    with open(os.path.join(OUT, "results.md"), "w") as f:
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
        report_reload(w, b.results["reload"], b.results.get("reload_notrial"))
    if b.results.get("memory"):
        report_memory(w, b.results["memory"])
    if b.results.get("mcost"):
        report_mcost(w, b.results["mcost"])
    w("## Targets (issue 16)")
    w("")
    for name, got, ok, _ in targets(b):
        w("%-62s %-14s %s" % (name, got, "yes" if ok else "NO"))
    name, got, ok = mcost_target(b)
    w("%s: %s  %s" % (name, got, "n/a" if ok is None else
                      "yes" if ok else "NO"))
    log("")
    log("\n".join(line.replace("`", "") for line in out
                  if not line.startswith("|--")))
