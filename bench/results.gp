# The chart of bench/results.md (bench/report.py passes datadir, out,
# median, rssmax, prof): eight panels, one per question the benchmark asks.

set terminal pngcairo size 2000,1040 font "DejaVu Sans,11" noenhanced
set output out
set encoding utf8

ffi = "#1f77b4"; uds = "#ff7f0e"; lua = "#7f7f7f"; other = "#2ca02c"
bad = "#d62728"

set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key top left reverse Left samplen 1.5
set grid ytics lc rgb "#dddddd"
set border 3
set tics nomirror
set yrange [0:*]

set multiplot layout 2,4 title \
    "lua-resty-ffi on nginx (2 workers, 2 CPUs): ffi vs a unix-domain socket vs pure Lua" \
    font "DejaVu Sans,15"

# 1-2. latency of one round trip, by size, in both CPU set-ups; the
# speed-up on top of each pair
do for [cfg in "unpinned pinned"] {
    set title sprintf("Sequential round trip, µs per call, %s\n(lower is better; label: ffi speed-up)", \
        cfg eq "pinned" ? "worker_cpu_affinity auto" : "no CPU affinity")
    set ylabel "µs per call"
    set offsets 0, 0, graph 0.15, 0
    plot datadir."/seq-".cfg.".dat" using 2:xtic(1) title "ffi" lc rgb ffi, \
         "" using 3 title "unix socket" lc rgb uds, \
         "" using ($0):(($2 > $3 ? $2 : $3)):(sprintf("%.1fx", $4)) \
            with labels offset 0,0.8 font ",12" notitle
}

# 3. the speed-up against the targets of issue 7; a log scale keeps a
# 50x bar from flattening the 5x and 8x marks
set title "ffi speed-up over the unix socket (x, log scale)\n(higher is better; marks: the targets)"
set ylabel "times as fast"
set logscale y
set yrange [0.5:200]
set offsets 0, 0, 0, 0
plot datadir."/seq-unpinned.dat" using 4:xtic(1) title "no CPU affinity" \
        lc rgb "#9ecae1", \
     datadir."/seq-pinned.dat" using 4 title "worker_cpu_affinity auto" \
        lc rgb ffi, \
     "" using ($0):5 with points pt 9 ps 2.5 lc rgb bad title "target", \
     1 with lines dt 3 lc rgb "#444444" title "as fast"
unset logscale y
set yrange [0:*]

# 4. requests per second under load; ffi's share of the ceiling on top
set title "Throughput, thousand requests/s\n(higher is better; label: ffi as a share of pure Lua)"
set ylabel "k req/s"
set offsets 0, 0, graph 0.25, 0
set xlabel "connections, worker_cpu_affinity"
plot datadir."/wrk.dat" using 2:xtic(1) title "ffi" lc rgb ffi, \
     "" using 3 title "unix socket" lc rgb uds, \
     "" using 4 title "pure Lua (ceiling)" lc rgb lua, \
     "" using ($0-0.25):2:(sprintf("%.0f%%", 100*$2/$4)) \
        with labels offset 0,0.8 font ",10" notitle

# 5. tail latency under the same load
set title "p99 latency under load, ms (lower is better)"
set ylabel "ms"
set offsets 0, 0, graph 0.25, 0
plot datadir."/wrk.dat" using 5:xtic(1) title "ffi" lc rgb ffi, \
     "" using 6 title "unix socket" lc rgb uds, \
     "" using 7 title "pure Lua" lc rgb lua
unset xlabel

# 6. each reload, in order; a log scale shows the data and the 20 ms
# target together
set title sprintf("Reload under load (wrk -c32), ms, log scale\n(median POST -> 200: %.2f ms)", median)
set ylabel "ms"
set xlabel "reload #"
set logscale y
set yrange [0.1:100]
set offsets 0, 0, 0, 0
set style data points
set key top right noreverse Right
plot datadir."/reload.dat" using 1:2 title "POST -> 200" \
        with linespoints pt 7 ps 0.5 lc rgb ffi, \
     "" using 1:3 title "-> /ffi/status shows every worker on it" \
        with points pt 6 ps 0.6 lc rgb other, \
     20 title "target: 20 ms" with lines dt 2 lw 2 lc rgb bad
unset logscale y
unset xlabel
set key top left reverse Left

# 7. memory: flat is good
set title "Worker RSS, both workers, MB\n(flat is good)"
set ylabel "MB"
set key off
set style data histograms
set yrange [0:rssmax*1.25]
set offsets 0, 0, 0, 0
plot datadir."/memory.dat" using 2:xtic(1) lc rgb ffi, \
     "" using ($0):2:(sprintf("%.1f MB", $2)) with labels offset 0,0.8 notitle
set yrange [0:*]

# 8. where an ffi call spends CPU: one call at a time, and under load
if (prof) {
    set title "CPU µs per ffi call (event loop + runtime thread),\nby where it goes (perf, worker_cpu_affinity auto)"
    unset ylabel
    unset xlabel
    set grid xtics noytics
    set ytics font ",10"
    set xrange [0:*]
    set yrange [*:*] reverse
    set offsets 0, graph 0.15, 0.5, 0.5
    set key outside bottom center horizontal noreverse Right
    plot datadir."/profile.dat" \
            using (0):($0-0.18):(0):2:($0-0.36):($0):ytic(1) \
            with boxxyerror lc rgb ffi title "sequential 512 B", \
         "" using (0):($0+0.18):(0):3:($0):($0+0.36) \
            with boxxyerror lc rgb other title "wrk -c32, 512 B", \
         "" using 2:($0-0.18):(sprintf(" %.2f", $2)) \
            with labels left font ",9" notitle, \
         "" using 3:($0+0.18):(sprintf(" %.2f", $3)) \
            with labels left font ",9" notitle
} else {
    set title "profile: not run (no perf)"
    unset border
    unset tics
    set xrange [0:1]
    set yrange [0:1]
    plot 2 notitle
}

unset multiplot
