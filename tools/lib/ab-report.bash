# shellcheck shell=bash
# ab-report.bash - what thunder-ab prints and writes from the files its
# sides left in $AB_TMP (SIDE.lg: thunder-loadgen's key=value lines;
# SIDE.counts: "pid accepts" per worker; SIDE.source: where those came
# from).  Installed with server.bash as PREFIX/lib/libthunder/ab-report.bash.
#
#   print_table          the terminal table, one column per side
#   print_verdict        plain words: the herd and the balance, before/after
#   write_plot FILE      accepts per worker (sorted) and wake-ups per connection
#   write_report FILE ARGS   Markdown: command, versions, machine, table, plot

workload_words() {
    if [ -n "$AB_BURST" ]; then
        echo "$AB_ROUNDS rounds of $AB_BURST connections opened together, 20 ms apart"
    elif [ -n "$AB_DURATION" ]; then
        echo "$AB_CONC client(s) for $AB_DURATION s"
    elif [ "$AB_CONC" = 1 ]; then
        echo "$AB_CONNS sequential connections"
    else
        echo "$AB_CONNS connections from $AB_CONC clients"
    fi
}

proto_words() {
    case $AB_PROTO in
        http) echo "HTTP GET $AB_PATH" ;;
        send) echo "send a string, read the reply" ;;
        connect) echo "connect only" ;;
        *) echo "read one line" ;;
    esac
}

# Figures of one side: balance from SIDE.counts, the rest from SIDE.lg.
side_jain() {
    [ -s "$AB_TMP/$1.counts" ] || { echo -; return; }
    jain "$(cut -d' ' -f2 "$AB_TMP/$1.counts" | tr '\n' ' ')"
}

side_max_share() {
    [ -s "$AB_TMP/$1.counts" ] || { echo -; return; }
    awk '{ s += $2; if ($2 > m) m = $2 } END { if (s == 0) print "-"; else printf "%.4f\n", m / s }' \
        "$AB_TMP/$1.counts"
}

# A loadgen figure, "-" when missing; per-round shares only when every
# reply named its worker.
side_value() {
    local v
    case $2 in
        round_max_share_mean)
            [ "$(lg_value "$1" attributed)" = "$(lg_value "$1" ok)" ] || { echo -; return; } ;;
    esac
    v=$(lg_value "$1" "$2")
    echo "${v:--}"
}

side_failed() {
    local f statuses
    f=$(lg_value "$1" failed) statuses=$(lg_value "$1" http_statuses)
    echo "${f:--}${statuses:+ ($statuses)}"
}

# The metrics of the table: key, label.
table_rows() {
    echo "wakeups_per_conn wake-ups/conn"
    echo "jain Jain (accepts)"
    echo "max_share max share"
    echo "source accepts from"
    if [ -n "$AB_BURST" ]; then
        echo "round_max_share_mean max share/round"
        echo "round_ms_mean round ms (mean)"
        echo "round_ms_p99 round ms (p99)"
    fi
    echo "rps req/s"
    echo "p50_us p50 us"
    echo "p99_us p99 us"
    echo "cpu_ms_per_1000 CPU ms/1000"
    echo "failed failed"
}

cell() {
    case $2 in
        jain) side_jain "$1" ;;
        max_share) side_max_share "$1" ;;
        source) cat "$AB_TMP/$1.source" ;;
        failed) side_failed "$1" ;;
        *) side_value "$1" "$2" ;;
    esac
}

# $1: text or md
emit_table() {
    local format=$1 key label side line
    if [ "$format" = md ]; then
        line="| metric |"
        for side in "${SIDES[@]}"; do line+=" $(side_label "$side") |"; done
        echo "$line"
        echo "|---|$(for side in "${SIDES[@]}"; do printf -- '---|'; done)"
    else
        printf '%-18s' metric
        for side in "${SIDES[@]}"; do printf ' %14s' "$(side_label "$side")"; done
        echo
    fi
    while read -r key label; do
        if [ "$format" = md ]; then
            line="| $label |"
            for side in "${SIDES[@]}"; do line+=" $(cell "$side" "$key") |"; done
            echo "$line"
        else
            printf '%-18s' "$label"
            for side in "${SIDES[@]}"; do printf ' %14s' "$(cell "$side" "$key")"; done
            echo
        fi
    done < <(table_rows)
}

print_table() {
    echo
    emit_table text
    echo
}

# b / a with 2 decimals, or "-"
times() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || a == "" || b == "" || a + 0 == 0) print "-"; else printf "%.2f\n", b / a }'
}

round1() {
    awk -v a="$1" 'BEGIN { if (a == "-" || a == "") print "-"; else if (a + 0 >= 10) printf "%.1f\n", a; else printf "%.2f\n", a }'
}

verdict_lines() {
    local side before=observe w0 j0 s0
    # balance without the library: the true no-library run when the replies
    # named their workers, else the observe run (it changes nothing)
    [ "$(cat "$AB_TMP/none.source")" = replies ] && before=none
    w0=$(side_value none wakeups_per_conn) j0=$(side_jain "$before") s0=$(side_max_share "$before")
    echo "observe costs, against no library: req/s x$(times "$(side_value none rps)" "$(side_value observe rps)"), p50 x$(times "$(side_value none p50_us)" "$(side_value observe p50_us)"), p99 x$(times "$(side_value none p99_us)" "$(side_value observe p99_us)"), CPU per connection x$(times "$(side_value none cpu_ms_per_1000)" "$(side_value observe cpu_ms_per_1000)"), wake-ups x$(times "$w0" "$(side_value observe wakeups_per_conn)")"
    for side in "${SIDES[@]}"; do
        [ "$side" = none ] || [ "$side" = observe ] && continue
        echo "$side: herd: $(round1 "$w0") → $(round1 "$(side_value "$side" wakeups_per_conn)") wake-ups per connection; balance $j0 → $(side_jain "$side") (Jain; largest share $s0 → $(side_max_share "$side")); req/s x$(times "$(side_value none rps)" "$(side_value "$side" rps)"), p99 x$(times "$(side_value none p99_us)" "$(side_value "$side" p99_us)") against no library"
        if [ -n "$AB_BURST" ] && [ "$(side_value "$side" round_max_share_mean)" != - ]; then
            echo "$side: bursts: largest share of a round $(side_value "$before" round_max_share_mean) → $(side_value "$side" round_max_share_mean) (ideal $(awk -v n="$(wc -l <"$AB_TMP/$side.counts")" 'BEGIN { if (n > 0) printf "%.3f", 1 / n; else print "-" }')); round $(side_value none round_ms_mean) → $(side_value "$side" round_ms_mean) ms"
        fi
    done
    [ "$before" = observe ] && echo "(balance without the library from the observe run: the replies do not name their worker, the segment counts accepts per process)"
    return 0
}

print_verdict() {
    verdict_lines
}

write_plot() {
    local file=$1 data=$AB_TMP/plot.dat wake=$AB_TMP/wake.dat side col=2 plots='' term
    local -a with_counts=() files=()
    if ! type -P gnuplot >/dev/null; then
        echo "gnuplot not installed; no plot (apt-get install gnuplot-nox)" >&2
        return 0
    fi
    for side in "${SIDES[@]}"; do
        [ -s "$AB_TMP/$side.counts" ] && with_counts+=("$side")
    done
    # one column per side with counts, workers sorted by accepts, most first
    for side in "${with_counts[@]}"; do
        cut -d' ' -f2 "$AB_TMP/$side.counts" | sort -rn >"$AB_TMP/$side.sorted"
        files+=("$AB_TMP/$side.sorted")
    done
    if [ ${#files[@]} -gt 0 ]; then
        paste "${files[@]}" |
            awk -F'\t' '{ line = NR; for (i = 1; i <= NF; i++) line = line " " ($i == "" ? 0 : $i); print line }' >"$data"
    fi
    for side in "${SIDES[@]}"; do
        echo "\"$(side_label "$side")\" $(side_value "$side" wakeups_per_conn)"
    done >"$wake"
    for side in "${with_counts[@]}"; do
        plots+="${plots:+, }\"$data\" using $col$([ $col = 2 ] && echo ':xtic(1)') title \"$(side_label "$side")\""
        col=$((col + 1))
    done
    term='png size 1100,500'
    gnuplot -e 'set terminal' 2>&1 | grep -qw pngcairo && term='pngcairo size 1100,500 font "DejaVu Sans,10"'
    if gnuplot 2>"$AB_TMP/gnuplot.err" <<EOF
set terminal $term
set output "$file"
set multiplot layout 1,2
set style fill solid 0.8 border -1
set yrange [0:*]
set grid ytics
set title "accepts per worker (workers sorted by accepts)"
set style data histograms
set style histogram clustered gap 1
set xlabel "worker"
set ylabel "accepts"
$(if [ -n "$plots" ]; then echo "plot $plots"; else echo 'set label 1 "no per-worker counts" at graph 0.3, 0.5'; echo 'plot 0 notitle'; fi)
unset label
set title "kernel wake-ups per connection (1.0 is the limit)"
set style data boxes
set boxwidth 0.6
set xlabel ""
set ylabel "wake-ups per connection"
plot "$wake" using 0:2:xtic(1) with boxes notitle
unset multiplot
EOF
    then
        echo "plot: $file"
    else
        echo "$PROG: gnuplot failed; no plot:" >&2
        sed 's/^/    /' "$AB_TMP/gnuplot.err" >&2
        return 1
    fi
}

write_report() {
    local file=$1 plot model glibc
    shift
    plot=${AB_PLOT:-${file%.md}.png}
    [ -n "$AB_PLOT" ] || write_plot "$plot" >/dev/null || plot=''
    [ -f "$plot" ] || plot=''
    # the link, relative when the plot sits beside the report
    [ -n "$plot" ] && [ "$(dirname -- "$plot")" = "$(dirname -- "$file")" ] && plot=$(basename -- "$plot")
    model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n 1)
    glibc=$(ldd --version 2>/dev/null | head -n 1 | sed 's/^ldd //')
    {
        echo "# thunder-ab: $(printf '%s ' "${SERVER_ARGV[@]}" | sed 's/ $//')"
        echo
        echo "| | |"
        echo "|---|---|"
        echo "| command | \`$PROG $(printf '%q ' "$@" | sed 's/ $//')\` |"
        echo "| date | $(date -u '+%Y-%m-%d %H:%M UTC') |"
        echo "| libthunder | $("$PRELOAD" --version 2>/dev/null) |"
        echo "| machine | $(nproc) CPUs${model:+, $model}; $(uname -sr) |"
        echo "| glibc | ${glibc:-unknown} |"
        echo "| workload | $(workload_words); $(proto_words); ${AB_WORKERS:-?} workers |"
        echo
        echo "## Results"
        echo
        emit_table md
        echo
        echo "## Verdict"
        echo
        verdict_lines | sed 's/^/- /'
        echo
        echo "*wake-ups/conn*: the workers' voluntary context switches (all threads, /proc)"
        echo "per connection answered; 1.0 is the limit, a herd is about one per worker."
        echo "*Jain*: fairness of the accepts over the workers (1.0 even, 1/N one takes all)."
        echo "*accepts from*: the replies (they name the worker) or the library's segment"
        echo "(per-process counters, read with thunder-stat --kv); the no-library run has none."
        if [ -n "$plot" ]; then
            echo
            echo "## Plot"
            echo
            echo "![accepts per worker and wake-ups per connection]($plot)"
        fi
    } >"$file"
    echo "report: $file"
}
