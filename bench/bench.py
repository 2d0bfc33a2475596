#!/usr/bin/env python3
# The benchmark of issues 7, 16 and 15 (run by bench/run.sh): every
# language's runtime through ffi vs unix-socket servers vs pure Lua, in each
# CPU mode; reload latency, memory, a profile, and the metrics' per-call
# cost (this module against the one before them); writes bench/results.*
# (BENCH_OUT).

import json
import os
import signal
import sys
import time

SAVED = os.path.join(os.environ.get("BENCH_OUT") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "build", "bench"),
    "results.json")

# --report writes results.md and .png again from the last run's figures
# (after an edit of notes.md, say), with the settings that run had
if sys.argv[1:] == ["--report"]:
    with open(SAVED) as f:
        SAVED_RUN = json.load(f)
    os.environ.update(SAVED_RUN["env"])

import ffiprofile                                           # noqa: E402
import harness                                              # noqa: E402
import measure                                              # noqa: E402
import report                                               # noqa: E402
from harness import (ALL_CPUS, HTTP_CONF, MODE_TITLE, Bench,  # noqa: E402
                     log)


def timed(fn, *args):
    t0 = time.time()
    fn(*args)
    log("   (%.0f s)" % (time.time() - t0))


def main():
    started = time.time()
    b = Bench()

    def on_signal(signo, frame):
        raise SystemExit(128 + signo)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    try:
        timed(measure.run_floor, b)
        b.start_uds()
        modes = ["unpinned", "pinned"]
        # mode (c) needs ffi_runtime_cpus: nginx -t tells whether the
        # module has it
        if b.knows_runtime_cpus():
            modes.append("inherit")
            # mode (d) differs from (b) only where there are 2 CPUs or more
            if len(os.sched_getaffinity(0)) > 1:
                modes.append("every")
            log("ffi_runtime_cpus inherit%s: measured (the module has it)"
                % (" and every CPU" if "every" in modes else ""))
        else:
            log("ffi_runtime_cpus inherit: skipped (the module does not "
                "know the directive)")
        b.results["modes"] = modes

        for mode in modes:
            b.start_nginx(mode)
            log("nginx on 127.0.0.1:%d, workers %s, %s"
                % (b.port, " ".join(str(p) for p in b.workers()),
                   MODE_TITLE[mode]))
            timed(measure.run_sequential, b)
            timed(measure.run_throughput, b)
            if mode == "pinned":
                # reload and memory where production runs: bound workers
                timed(measure.run_reload, b)
                timed(measure.run_memory, b)
                timed(ffiprofile.run_profile, b,
                      ["seq512", "wrk32", "wrk32lua", "wrk32go"])
            elif mode == "unpinned":
                timed(ffiprofile.run_profile, b,
                      ["seq512", "wrk32", "wrk32lua"])
            b.stop_nginx()
            if mode == "pinned":
                reload_without_trial(b, mode)
        # after the modes: its nginx restarts do not disturb their runs
        timed(measure.run_metrics_cost, b)
    finally:
        b.stop_all()

    b.results["run"] = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "secs": time.time() - started, "machine": report.machine(),
        "cpus": ALL_CPUS, "ncpus": len(os.sched_getaffinity(0)),
        "http_conf": HTTP_CONF}
    os.makedirs(os.path.dirname(SAVED), exist_ok=True)
    with open(SAVED, "w") as f:
        json.dump({"results": b.results, "commands": b.commands,
                   "env": dict(harness.knobs(),
                               **{k: v for k, v in os.environ.items()
                                  if k.startswith("BENCH_")})}, f)
    write_report(b)


def reload_without_trial(b, mode):
    """The reload protocol without its trial process, in an nginx of its
    own: context for the reload target, so a failure is logged, not
    fatal."""
    if "ffi_trial" in HTTP_CONF:
        log("reload with ffi_trial off: skipped (BENCH_HTTP_CONF sets "
            "ffi_trial)")
        return
    try:
        b.start_nginx(mode, http_conf=HTTP_CONF + "\nffi_trial off;\n")
        timed(measure.run_reload, b, "reload_notrial")
    except (OSError, RuntimeError) as e:
        log("reload with ffi_trial off: failed, left out: %s" % e)
        b.results.pop("reload_notrial", None)
    finally:
        if b.nginx is not None:
            b.stop_nginx()


def write_report(b):
    chart = report.plot(b)
    report.report(b, chart)
    report.print_table(b)
    log("\nwrote %s/results.md%s"
        % (report.shorten_out(), " and results.png" if chart else ""))


def rewrite_report():
    b = Bench()
    b.results = SAVED_RUN["results"]
    b.commands = SAVED_RUN["commands"]
    write_report(b)


if __name__ == "__main__":
    if sys.argv[1:] == ["--report"]:
        rewrite_report()
    else:
        main()
