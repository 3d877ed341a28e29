#!/usr/bin/env bash
# bench/compare.sh: two vmrun binaries side by side on the interpreter and heap workloads, runs
# interleaved (A, B, A, B, ...) so machine noise hits both alike; best CPU time (user + sys) of RUNS
# runs and the smallest peak RSS of RUNS runs (page-cache state moves RSS by tens of KiB between runs),
# with the ratios B/A. Every run's output is checked.
#
#   bash bench/compare.sh BASE_VMRUN NEW_VMRUN      # e.g. a build of the previous commit vs this one
#   RUNS=7 bash bench/compare.sh ...
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1 B=$2 RUNS=${RUNS:-5}

# name | export (`_start`: run as a WASI command) | file | arguments | expected output
WORKLOADS=(
  "fib 35|fib|programs/fib.wat|35|9227465"
  "sieve 10x1e7|run|programs/sieve.wat|10000000 10|664579"
  "mandelbrot 1200|mandelbrot|programs/mandelbrot.wat|1200|571628"
  "binary-trees 16|run|programs/binary_trees.wat|16|14985902"
  "gc_cycles 5e6|run|programs/gc_cycles.wat|5000000|12500002500000"
  "matmul (C, wasi-libc)|_start|bench/c/matmul.wasm||8052633550.0"
  "sort + hash (C, wasi-libc)|_start|bench/c/sort.wasm||395351 3344477188"
)

# Prints "cpu_seconds peak_rss_kib" for one run of binary $1 on workload fields $2..$5.
one_run() {
  local bin=$1 export=$2 file=$3 args=$4 want=$5 out stats
  local cmd=("$bin" --invoke "$export" "$file")
  [[ $export == _start ]] && cmd=("$bin" "$file")
  # shellcheck disable=SC2086
  out=$( { /usr/bin/time -f "%U %S %M" "${cmd[@]}" $args 2>/tmp/compare.time; } )
  if [[ $out != "$want" ]]; then echo "wrong output from $bin on $file: $out" >&2; exit 1; fi
  stats=$(tail -1 /tmp/compare.time)
  awk '{ printf "%.3f %d\n", $1 + $2, $3 }' <<<"$stats"
}

echo "| workload | A cpu s | B cpu s | B/A | A peak RSS KiB | B peak RSS KiB | B/A RSS |"
echo "|---|---|---|---|---|---|---|"
for w in "${WORKLOADS[@]}"; do
  IFS='|' read -r name export file args want <<<"$w"
  best_a=999999 best_b=999999 rss_a=999999999 rss_b=999999999
  for ((i = 0; i < RUNS; i++)); do
    read -r t r < <(one_run "$A" "$export" "$file" "$args" "$want")
    best_a=$(awk -v x="$t" -v y="$best_a" 'BEGIN { print (x < y) ? x : y }'); ((r < rss_a)) && rss_a=$r
    read -r t r < <(one_run "$B" "$export" "$file" "$args" "$want")
    best_b=$(awk -v x="$t" -v y="$best_b" 'BEGIN { print (x < y) ? x : y }'); ((r < rss_b)) && rss_b=$r
  done
  ratio=$(awk -v a="$best_a" -v b="$best_b" 'BEGIN { printf "%.3f", b / a }')
  rss_ratio=$(awk -v a="$rss_a" -v b="$rss_b" 'BEGIN { printf "%.3f", b / a }')
  echo "| $name | $best_a | $best_b | $ratio | $rss_a | $rss_b | $rss_ratio |"
done
