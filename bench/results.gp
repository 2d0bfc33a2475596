# The chart of bench/results.md (bench/report.py passes datadir, out,
# median, rssmax, prof, nmodes): eight panels, one per question the
# benchmark asks; bars per way, one colour per CPU mode.

set terminal pngcairo size 2400,1200 font "DejaVu Sans,11" noenhanced
set output out
set encoding utf8

ffi = "#1f77b4"; uds = "#ff7f0e"; lua = "#7f7f7f"; other = "#2ca02c"
bad = "#d62728"
array modecol[4] = ["#9ecae1", "#1f77b4", "#08306b", "#fd8d3c"]

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
    "lua-resty-ffi on nginx (2 workers, 2 CPUs): each language through ffi vs a unix-socket plugin server vs pure Lua" \
    font "DejaVu Sans,15"

# 1-2. one round trip, by way, in every CPU mode (log scale: a Python
# server and the C demo differ a hundredfold)
set xtics rotate by -35 left font ",10"
do for [size in "512 102400"] {
    set title sprintf("Sequential round trip, %s, µs per call, log scale\n(lower is better)", \
        size eq "512" ? "512 B" : "100 KB")
    set ylabel "µs per call"
    set logscale y
    set yrange [0.1:*]
    plot for [i=2:nmodes+1] datadir."/seq-".size.".dat" \
        using i:xtic(1) title columnheader(i) lc rgb modecol[i-1]
    unset logscale y
    set yrange [0:*]
}

# 3-4. requests per second under load
do for [c in "32 256"] {
    set title sprintf("Throughput, wrk -c%s, thousand requests/s\n(higher is better)", c)
    set ylabel "k req/s"
    plot for [i=2:nmodes+1] datadir."/wrk-".c.".dat" \
        using i:xtic(1) title columnheader(i) lc rgb modecol[i-1]
}

# 5. the targets of issue 16: measured / required, 1 = just met
set title "Targets: measured / required (log scale)\n(green: met, red: missed; the line: just met)"
set ylabel "measured / required"
set logscale y
set yrange [0.01:*]
set key off
set style data boxes
set boxwidth 0.7
set offsets 0.5, 0.5, 0, 0
plot datadir."/targets.dat" \
        using 0:2:($3 > 0 ? 0x2ca02c : 0xd62728):xtic(1) lc rgb variable, \
     1 with lines dt 2 lw 2 lc rgb "#444444"
set style data histograms
set offsets 0, 0, 0, 0
unset logscale y
set yrange [0:*]
set key top left reverse Left
set xtics norotate font ",11"

# 6. each reload, in order; a log scale shows the data and the 5 ms
# target together
set title sprintf("Reload under load (wrk -c32), ms, log scale\n(median POST -> 200: %.2f ms)", median)
set ylabel "ms"
set xlabel "reload #"
set logscale y
set yrange [0.1:*]
set offsets 0, 0, 0, 0
set style data points
set key top right noreverse Right
plot datadir."/reload.dat" using 1:2 title "POST -> 200" \
        with linespoints pt 7 ps 0.5 lc rgb ffi, \
     "" using 1:3 title "-> /ffi/status shows every worker on it" \
        with points pt 6 ps 0.6 lc rgb other, \
     5 title "target: median 5 ms" with lines dt 2 lw 2 lc rgb bad
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
