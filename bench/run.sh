#!/usr/bin/env bash
# Runs the benchmarks with the settings BENCHMARKS.md records and prints the
# machine, the raw `go test` output and the median of every metric.
#
#   bench/run.sh                         # everything, 3 runs each (about 7 minutes)
#   BENCH=PickupLatency bench/run.sh     # one benchmark (a -bench regexp)
#   COUNT=1 bench/run.sh -args -log.bytes=100000000   # extra go test / benchmark flags
#   OUT=results.txt bench/run.sh         # also keep the raw output
#
# The figures are only as good as the machine is quiet: the CPU pressure
# printed before and after says whether something else was running.
set -euo pipefail
cd "$(dirname "$0")/.."

bench=${BENCH:-.}
count=${COUNT:-3}
out=${OUT:-$(mktemp)}

echo "== machine"
echo "cpus:   $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
echo "kernel: $(uname -sr)"
echo "go:     $(go version)"
echo "date:   $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
echo "cpu pressure before: $(head -1 /proc/pressure/cpu 2>/dev/null || echo n/a)"

cmd=(go test -run '^$' -bench "$bench" -benchtime 1x -count "$count" -timeout 60m ./bench/ "$@")
echo "== ${cmd[*]}"
"${cmd[@]}" | tee "$out"
echo "cpu pressure after:  $(head -1 /proc/pressure/cpu 2>/dev/null || echo n/a)"

# Median of each metric over the runs: one "name unit value" line per figure,
# grouped and sorted, then the middle value of each group (the lower middle
# for an even count).
echo "== median of $count run(s)"
awk '/^Benchmark/ { for (i = 3; i < NF; i += 2) print $1, $(i+1), $i }' "$out" |
	sort -k1,1 -k2,2 -k3,3g |
	awk '{ key = $1 " " $2; if (key != prev && prev != "") flush(); prev = key; v[n++] = $3 }
	     function flush() { printf "%-52s %14s %s\n", pk[1], v[int((n-1)/2)], pk[2]; n = 0 }
	     { split(key, pk, " ") }
	     END { if (n) flush() }'
