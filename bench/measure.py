# The measurements of issues 7, 16 and 15: what the machine charges for a
# hand-off and a process start, sequential round trips, throughput, reload
# under load, memory, and the metrics' per-call cost (run in this order by
# bench/bench.py).

import http.client
import json
import os
import signal
import statistics
import subprocess
import threading
import time

from harness import (AFTER_LUA, AFTER_MODULE, AFTER_REV, BEFORE_LUA,
                     BEFORE_MODULE, BEFORE_REV, BEFORE_SKIP, FLOOR_MS, LABEL,
                     LIB, MCOST_N, MCOST_ROUNDS, MEM_CALLS, MEM_RELOADS,
                     MODE_TITLE, PREFIX, RELOADS, RELOAD_EVERY_MS, SEQ_N,
                     SEQ_ROUNDS, SEQ_ROUND_SECS, SEQ_SIZES, SEQ_WAYS,
                     SETTLE_TIMEOUT, WAYS, WRK_CONNS, WRK_ROUNDS, WRK_SECS,
                     WRK_SIZE, log, percentile, shorten, wait_for)


# ---- (0) the machine's floor ----

def run_floor(b):
    """bench/floor: two threads handing a turn to each other (on a futex,
    or spinning as the module's queue does; one CPU or two; with a busy
    thread on the second CPU, as a saturated worker), then process starts
    (posix_spawn to main), idle and with every CPU busy. Before nginx
    starts, so that nothing else of the benchmark runs meanwhile."""
    log("== the machine's floor: thread hand-offs (about %d ms each), "
        "process starts" % FLOOR_MS)
    argv = [os.path.join(PREFIX, "floor"), "%.3f" % (FLOOR_MS / 1e3)]
    b.commands.append(shorten(" ".join(argv)))
    try:
        out = subprocess.run(argv, stdout=subprocess.PIPE, check=True,
                             timeout=300)
        rows = [json.loads(line) for line in out.stdout.decode().splitlines()]
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        # context for the report, not a measurement of the module
        log("  floor skipped: %s" % e)
        return
    for r in rows:
        if r["what"] == "handoff":
            log("  %-34s %8.2f µs wall, %8.2f µs CPU a round trip%s"
                % (r["name"], r["wall_us"], r["cpu_us"],
                   ", the busy thread loses %.2f µs" % r["neighbour_lost_us"]
                   if "neighbour_lost_us" in r else ""))
        else:
            log("  process start, %d busy thread(s) a CPU: median %.2f ms, "
                "p90 %.2f" % (r["busy_per_cpu"], r["median_ms"],
                              r["p90_ms"]))
    b.results["floor"] = rows


# ---- (1) sequential round trips ----

def seq_round(b, way, size, n):
    """One /seq round: µs per call."""
    status, body = b.get("/seq?way=%s&size=%d&n=%d" % (way, size, n))
    r = json.loads(body) if status == 200 else {}
    if status != 200 or r["errors"]:
        raise RuntimeError("/seq %s %d: %d %r" % (way, size, status, body))
    return r["secs"] * 1e6 / n


def run_sequential(b):
    log("== sequential round trips (%s): up to %d calls per way and size "
        "from one coroutine, in %d rounds of at most %.1f s; each round "
        "takes every way in turn"
        % (b.config(), SEQ_N, SEQ_ROUNDS, SEQ_ROUND_SECS))
    rows = []
    most = max(1, SEQ_N // SEQ_ROUNDS)
    for size in SEQ_SIZES:
        # a Python server at 100 KB is a hundred times slower than the C
        # demo: a short first round sets each way's calls per round
        calls = {}
        for way, _, _ in SEQ_WAYS:
            us = seq_round(b, way, size, min(most, 50))
            calls[way] = int(min(most, max(min(most, 50),
                                           SEQ_ROUND_SECS * 1e6 / us)))
        rounds = {w: [] for w, _, _ in SEQ_WAYS}
        for i in range(SEQ_ROUNDS):
            # every other round in reverse: a burst of other work on the
            # machine then hits all ways alike
            order = SEQ_WAYS if i % 2 == 0 else SEQ_WAYS[::-1]
            for way, _, _ in order:
                rounds[way].append(seq_round(b, way, size, calls[way]))
        for way, label, _ in SEQ_WAYS:
            row = {"size": size, "config": b.config(), "way": way,
                   "calls": calls[way] * SEQ_ROUNDS, "rounds": rounds[way],
                   "us": statistics.median(rounds[way])}
            rows.append(row)
            log("  %7d B  %-12s %9.2f us/call  (%d calls, rounds %s)"
                % (size, label, row["us"], row["calls"],
                   spread(rounds[way])))
    b.results.setdefault("seq", []).extend(rows)


def spread(values, fmt="%.1f"):
    return (fmt + "-" + fmt) % (min(values), max(values))


# ---- (2) throughput ----

def cpu_times():
    """CPU time so far on the CPUs this benchmark may use (taskset, a
    cpuset): (idle and iowait, all of user..steal)."""
    mine = set("cpu%d" % c for c in os.sched_getaffinity(0))
    idle = total = 0
    with open("/proc/stat") as f:
        for line in f:
            cols = line.split()
            if cols and cols[0] in mine:
                t = [int(x) for x in cols[1:9]]
                idle += t[3] + t[4]
                total += sum(t)
    return idle, total


def idle_during(secs):
    """The share of the machine's CPU time that nothing used while wrk
    ran, its first and last eighth left out (connecting, stopping): a
    way that leaves the CPUs idle under load waits for something else
    than CPU."""
    edge = secs / 8.0
    time.sleep(edge)
    idle0, all0 = cpu_times()
    time.sleep(secs - 2 * edge)
    idle1, all1 = cpu_times()
    return 100.0 * (idle1 - idle0) / max(all1 - all0, 1)


def run_throughput(b):
    log("== throughput (%s): wrk, %d rounds of %d s per way, each round "
        "takes every way in turn, %d B answers"
        % (b.config(), WRK_ROUNDS, WRK_SECS, WRK_SIZE))
    rows = []
    for conns in WRK_CONNS:
        runs = {w: [] for w, _, _ in WAYS}
        for i in range(WRK_ROUNDS):
            # every other round in reverse, as the sequential rounds: a
            # burst of other work on the machine hits every way alike
            order = WAYS if i % 2 == 0 else WAYS[::-1]
            for way, _, _ in order:
                p = b.wrk("/%s?size=%d" % (way, WRK_SIZE), conns, WRK_SECS)
                idle = idle_during(WRK_SECS)
                r = b.wrk_result(p)
                del r["raw"]
                r["idle_pct"] = idle
                runs[way].append(r)
        for way, _, _ in WAYS:
            # the median round by rate stands for the way; all count for
            # requests and failures
            done = sorted(runs[way], key=lambda x: x["rps"])
            r = dict(done[(len(done) - 1) // 2])
            r.update(way=way, conns=conns, config=b.config(),
                     rounds=[x["rps"] for x in runs[way]],
                     requests=sum(x["requests"] for x in done),
                     errors=sum(x["errors"] for x in done),
                     non2xx=sum(x["non2xx"] for x in done))
            rows.append(r)
            log("  %-12s c=%-3d %9.0f req/s  p50 %6.2f ms  p99 %6.2f ms  "
                "CPU idle %4.1f%%  errors %d  non-2xx %d  (rounds %s)"
                % (LABEL[way], conns, r["rps"], r["p50"] or -1,
                   r["p99"] or -1, r["idle_pct"], r["errors"], r["non2xx"],
                   "-".join("%.0f" % x for x in sorted(r["rounds"]))))
    for r in rows:
        lua = [x for x in rows
               if x["conns"] == r["conns"] and x["way"] == "lua"][0]
        r["vs_lua"] = r["rps"] / lua["rps"] if lua["rps"] else 0
    b.results.setdefault("wrk", []).extend(rows)


# ---- (3) reload under load ----

def lib_views(st):
    """Each worker's view of the library: None where it is not loaded."""
    views = []
    for w in st["workers"]:
        lib = [x for x in w["libraries"] if x["name"] == LIB]
        views.append(lib[0] if lib else None)
    return views


def all_serve(st, version):
    """Every worker that has the library serves it at `version`."""
    views = [v for v in lib_views(st) if v is not None]
    if not views:
        return False
    for v in views:
        if v["version"] != version:
            return False
        serving = [r for r in v["runtimes"] if r["state"] == "serving"]
        if not serving or any(r["image_version"] != version
                              for r in serving):
            return False
    return True


def settled(st):
    """No old image is mapped any more in any worker."""
    return all(v is None or v["mapped_images"] == 1 for v in lib_views(st))


def reload_once(b):
    b.install_build(1 - b.build)
    t0 = time.perf_counter()
    code, body = b.request("POST", "/ffi/reload?lib=" + LIB)
    t200 = time.perf_counter() - t0
    if code != 200:
        raise RuntimeError("reload: %d %r" % (code, body))
    r = json.loads(body)
    if not r.get("changed"):
        raise RuntimeError("reload did not change the image: %r" % r)

    # the 200 says every worker serves the new version: check it
    polls = 0
    while True:
        polls += 1
        if all_serve(b.status(), r["version"]):
            break
        if time.perf_counter() - t0 > SETTLE_TIMEOUT:
            raise RuntimeError("version %d not served everywhere"
                               % r["version"])
    tall = time.perf_counter() - t0
    return t200 * 1e3, tall * 1e3, polls == 1


def wait_settled(b):
    t0 = time.perf_counter()
    while not settled(b.status()):
        if time.perf_counter() - t0 > SETTLE_TIMEOUT:
            raise RuntimeError("old images still mapped after %d s"
                               % SETTLE_TIMEOUT)
        time.sleep(0.02)
    return (time.perf_counter() - t0) * 1e3


def run_reload(b, key="reload"):
    """key: where the figures go; "reload_notrial" for a run of an nginx
    with `ffi_trial off` (what the rest of the protocol costs)."""
    log("== reload: %d reloads alternating two builds, one every %d ms, "
        "under wrk -c32%s" % (RELOADS, RELOAD_EVERY_MS,
                              ", ffi_trial off" if key != "reload" else ""))
    wait_settled(b)
    load = b.wrk("/ffi-c?size=%d" % WRK_SIZE, 32, 3600, threads=1)
    # both workers serve the library before the first reload is timed
    wait_for(lambda: all(v is not None and v["runtimes"]
                         for v in lib_views(b.status())),
             15, "both workers to serve the library")

    t200, tall, first = [], [], 0
    start = time.perf_counter()
    for i in range(RELOADS):
        # one reload every RELOAD_EVERY_MS: each meets the load going on,
        # not the aftermath of the one before
        time.sleep(max(0.0, start + i * RELOAD_EVERY_MS / 1e3
                       - time.perf_counter()))
        a, c, f = reload_once(b)
        t200.append(a)
        tall.append(c)
        first += f
    load.send_signal(signal.SIGINT)
    w = b.wrk_result(load)
    unmapped = wait_settled(b)

    r = {"n": RELOADS, "t200": t200, "tall": tall, "first_status": first,
         "t200_median": statistics.median(t200),
         "t200_p90": percentile(t200, 90), "t200_max": max(t200),
         "tall_median": statistics.median(tall),
         "tall_p90": percentile(tall, 90),
         "requests": w["requests"], "rps": w["rps"],
         "lost": w["errors"] + w["non2xx"], "unmapped_ms": unmapped}
    b.results[key] = r
    log("  POST -> 200: median %.2f ms, p90 %.2f ms, max %.2f ms"
        % (r["t200_median"], r["t200_p90"], r["t200_max"]))
    log("  POST -> status shows every worker on it: median %.2f ms, "
        "p90 %.2f ms (%d/%d at the first look)"
        % (r["tall_median"], r["tall_p90"], first, RELOADS))
    log("  load meanwhile: %d requests, %d lost" % (r["requests"], r["lost"]))


# ---- (4) memory ----

def run_memory(b):
    log("== memory: worker RSS around %d calls and %d reloads"
        % (MEM_CALLS, MEM_RELOADS))
    wait_settled(b)
    rss0 = b.rss_kb()

    # a keep-alive connection stays with one worker: find one per worker
    conns = {}
    for _ in range(64):
        c = http.client.HTTPConnection("127.0.0.1", b.port, timeout=600)
        code, body = b.get("/seq?way=ffi-c&size=16&n=1", c)
        pid = json.loads(body)["pid"]
        if pid in conns:
            c.close()
        else:
            conns[pid] = c
        if len(conns) == 2:
            break

    errors = []
    share = MEM_CALLS // len(conns)

    def calls(c, n):
        code, body = b.get("/seq?way=ffi-c&size=512&conc=16&n=%d" % n, c)
        c.close()
        if code != 200 or json.loads(body)["errors"]:
            errors.append(body)

    threads = [threading.Thread(target=calls, args=(c, share))
               for c in conns.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError("calls failed: %r" % errors)
    rss1 = b.rss_kb()

    # two rounds of reloads: growth in the second is what a leak looks like
    load = b.wrk("/ffi-c?size=%d" % WRK_SIZE, 4, 3600, threads=1)
    rss, secs = [], 0.0
    for _ in range(2):
        t0 = time.perf_counter()
        for _ in range(MEM_RELOADS):
            reload_once(b)
        secs += time.perf_counter() - t0
        wait_settled(b)
        rss.append(b.rss_kb())
    load.send_signal(signal.SIGINT)
    w = b.wrk_result(load)

    def mb(rss):
        return sum(rss.values()) / 1024.0

    r = {"before": mb(rss0), "after_calls": mb(rss1),
         "after_reloads": mb(rss[0]), "after_reloads2": mb(rss[1]),
         "per_worker": [rss0, rss1] + rss, "call_workers": len(conns),
         "reload_secs": secs / 2, "lost": w["errors"] + w["non2xx"],
         "requests": w["requests"]}
    r["calls_pct"] = (r["after_calls"] / r["before"] - 1) * 100
    r["reloads_pct"] = (r["after_reloads"] / r["before"] - 1) * 100
    r["reloads2_pct"] = (r["after_reloads2"] / r["before"] - 1) * 100
    r["kb_per_reload"] = ((r["after_reloads2"] - r["after_reloads"])
                          * 1024.0 / MEM_RELOADS)
    b.results["memory"] = r
    log("  RSS (sum of workers): %.1f MB -> %.1f MB after calls (%+.1f%%) "
        "-> %.1f MB after reloads (%+.1f%%) -> %.1f MB after as many more "
        "(%+.1f%%, %.2f KB per reload)"
        % (r["before"], r["after_calls"], r["calls_pct"],
           r["after_reloads"], r["reloads_pct"], r["after_reloads2"],
           r["reloads2_pct"], r["kb_per_reload"]))
    log("  %d reloads took %.1f s; load meanwhile: %d requests, %d lost"
        % (MEM_RELOADS, r["reload_secs"], r["requests"], r["lost"]))




# ---- (5) the metrics' per-call cost (issue 15) ----

# the A/B's CPU mode: where production runs (bound workers); a module
# with ffi_runtime_cpus runs with "inherit", so that its runtime threads
# share their worker's CPU as they did before that directive: the same
# placement on both sides
MCOST_MODE = "pinned"


def run_metrics_cost(b):
    """The C demo through the module before the metrics (its own
    lua/resty_ffi.lua) and through this one, in alternating rounds: each
    round starts nginx afresh with one module and measures it, so that a
    burst of other work on the machine hits both sides alike."""
    if BEFORE_SKIP:
        log("== metrics cost: skipped: %s" % BEFORE_SKIP)
        b.results["mcost"] = {"skipped": BEFORE_SKIP}
        return

    log("== metrics cost (%s): the C demo through the module at %s (before "
        "the metrics) and %s, %d rounds each: %d sequential 512 B "
        "calls, then wrk -c32 for %d s"
        % (MCOST_MODE, BEFORE_REV,
           "the one at " + AFTER_REV if AFTER_MODULE else "this one",
           MCOST_ROUNDS, MCOST_N, WRK_SECS))
    sides = {
        "before": {"module": BEFORE_MODULE, "lua_dir": BEFORE_LUA},
        "after": ({"module": AFTER_MODULE, "lua_dir": AFTER_LUA}
                  if AFTER_MODULE else {}),
    }
    r = {"before_rev": BEFORE_REV, "after_rev": AFTER_REV if AFTER_MODULE
         else None, "mode": MCOST_MODE, "n": MCOST_N,
         "rounds": MCOST_ROUNDS, "wrk_secs": WRK_SECS,
         "load": [list(os.getloadavg())]}
    for side in sides:
        mode = MCOST_MODE
        if b.knows_runtime_cpus(runtimes=["c"], http_conf="",
                                **sides[side]):
            mode = "inherit"
        r[side] = {"seq": [], "rps": [], "requests": 0, "errors": 0,
                   "mode": mode}
        log("  %s: %s" % (side, MODE_TITLE[mode]))
    for i in range(MCOST_ROUNDS):
        order = ["before", "after"] if i % 2 == 0 else ["after", "before"]
        for side in order:
            # only the C demo, and nothing the old module lacks (no
            # BENCH_HTTP_CONF): the same configuration for both
            b.start_nginx(r[side]["mode"], runtimes=["c"], http_conf="",
                          **sides[side])
            got = r[side]
            got["seq"].append(seq_round(b, "ffi-c", 512, MCOST_N))
            w = b.wrk_result(b.wrk("/ffi-c?size=512", 32, WRK_SECS))
            got["rps"].append(w["rps"])
            got["requests"] += w["requests"]
            got["errors"] += w["errors"] + w["non2xx"]
            b.stop_nginx()
            log("  round %d %-6s %9.2f us/call  %9.0f req/s"
                % (i + 1, side, got["seq"][-1], got["rps"][-1]))
    r["load"].append(list(os.getloadavg()))
    for side in sides:
        got = r[side]
        got["us"] = statistics.median(got["seq"])
        got["rps_median"] = statistics.median(got["rps"])
    b.results["mcost"] = r
    log("  sequential: before %.2f us/call (%s), after %.2f (%s)"
        % (r["before"]["us"], spread(r["before"]["seq"]), r["after"]["us"],
           spread(r["after"]["seq"])))
    log("  wrk c32: before %.0f req/s (%s), after %.0f (%s)"
        % (r["before"]["rps_median"], spread(r["before"]["rps"], "%.0f"),
           r["after"]["rps_median"], spread(r["after"]["rps"], "%.0f")))
