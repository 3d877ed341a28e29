#!/usr/bin/env bash
# bench/heap.sh: the heap's benchmarks, each printing a Markdown table for BENCHMARKS.md.
#
#   bash bench/heap.sh gc        # GC workloads: vmrun vs wasmtime 48 (Cranelift) and Pulley, with vmrun's GC pauses
#   bash bench/heap.sh trace     # the same workloads with --trace allocfree off and on, and bytes per event
#   bash bench/heap.sh bridge    # vmrun with and without the Valgrind bridge compiled in (native runs)
#   bash bench/heap.sh memcheck  # binary-trees natively and under valgrind (Memcheck), the slowdown
#   RUNS=5 bash bench/heap.sh all
#
# Every cell is the best of RUNS runs (default 3) of CPU time (user + sys, GNU time), with the runs of
# the compared configurations interleaved so that changes in machine load hit them alike; MB is peak
# RSS. Every run's last output line is checked against the expected result. wasmtime is looked up on
# PATH, then in /work/tools/bin and ~/.cargo/bin (`cargo install wasmtime-cli@48.0.8`); without it
# its columns say n/a.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
TIME=/usr/bin/time
[[ -x $TIME ]] || { echo "bench/heap.sh needs GNU time (/usr/bin/time; apt-get install time)" >&2; exit 1; }

# name | file | export | arguments | expected output
GC_WORKLOADS=(
  "binary-trees 16|programs/binary_trees.wat|run|16|14985902"
  "binary-trees 18|programs/binary_trees.wat|run|18|68332206"
  "array churn 1e5|programs/gc_arrays.wat|run|100000|2502471700000"
  "gc cycles 5e6|programs/gc_cycles.wat|run|5000000|12500002500000"
  "casts 5e6|programs/gc_casts.wat|run|5000000|21596952541104"
)

# shellcheck source=bench/peers.sh
source bench/peers.sh

build() { # build <target-dir> [cargo flags...]: prints the vmrun path
  local dir=$1
  shift
  cargo build --release --quiet --bin vmrun --target-dir "$dir" "$@" >&2
  echo "$dir/release/vmrun"
}

# measure <expected> <cmd...>: prints "<cpu s> <MB> <stderr file>" or "wrong - <stderr file>"
measure() {
  local expected=$1 stats err out
  shift
  stats=$(mktemp) err=$(mktemp)
  out=$($TIME -f "%U %S %M" -o "$stats" "$@" 2>"$err" || true)
  if [[ $(echo "$out" | tail -n 1) != "$expected" ]]; then
    echo "wrong - $err"
  else
    awk -v e="$err" '{ printf "%.2f %.0f %s\n", $1 + $2, $3 / 1024, e }' "$stats"
  fi
  rm -f "$stats"
}

min() { if [[ -z $2 || $2 == wrong ]] || awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; then echo "$1"; else echo "$2"; fi; }
ratio() { if [[ $1 == wrong || $2 == wrong || $1 == n/a || $2 == n/a ]]; then echo "-"; else awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; fi; }

preamble() {
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "best of $RUNS runs of CPU time (user+sys), configurations interleaved; MB = peak RSS"
}

# ---------------------------------------------------------------------------------------------------------
bench_gc() {
  local vmrun wasmtime
  vmrun=$(build "$TARGET_DIR")
  wasmtime=$(find_tool wasmtime || true)
  echo "## GC workloads: vmrun (interpreter) vs wasmtime (Cranelift, copying collector) and Pulley"
  echo
  preamble
  echo "vmrun: $vmrun; wasmtime: ${wasmtime:-not installed} $([[ -n $wasmtime ]] && $wasmtime --version)"
  echo
  echo "| workload | vmrun s | MB | GCs | total pause ms | max pause ms | wasmtime s | MB | Pulley s | MB | vmrun/Pulley s |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  local w name file export args expected i
  for w in "${GC_WORKLOADS[@]}"; do
    IFS='|' read -r name file export args expected <<<"$w"
    local best_v="" rss_v="-" best_w="n/a" rss_w="-" best_p="n/a" rss_p="-" gcs="-" total="-" maxp="-"
    for ((i = 0; i < RUNS; i++)); do
      read -r cpu rss err < <(measure "$expected" "$vmrun" --gc-stats --invoke "$export" "$file" $args)
      if [[ $cpu != wrong ]]; then
        best_v=$(min "$cpu" "$best_v") rss_v=$rss
        # gc: N collections, pause total X ms max Y ms, ...
        read -r gcs total maxp < <(sed -n 's/^gc: \([0-9]*\) collections, pause total \([0-9.]*\) ms max \([0-9.]*\) ms.*/\1 \2 \3/p' "$err")
      else
        best_v=wrong
      fi
      rm -f "$err"
      if [[ -n $wasmtime ]]; then
        read -r cpu rss err < <(measure "$expected" "$wasmtime" run -W gc=y,function-references=y --invoke "$export" "$file" $args)
        rm -f "$err"
        [[ $best_w == n/a ]] && best_w=""
        best_w=$(min "$cpu" "$best_w") rss_w=$rss
        read -r cpu rss err < <(measure "$expected" "$wasmtime" run --target pulley64 -W gc=y,function-references=y --invoke "$export" "$file" $args)
        rm -f "$err"
        [[ $best_p == n/a ]] && best_p=""
        best_p=$(min "$cpu" "$best_p") rss_p=$rss
      fi
    done
    echo "| $name | $best_v | $rss_v | $gcs | $total | $maxp | $best_w | $rss_w | $best_p | $rss_p | $(ratio "$best_v" "$best_p") |"
  done
  echo
}

# ---------------------------------------------------------------------------------------------------------
bench_trace() {
  local vmrun trace
  vmrun=$(build "$TARGET_DIR")
  trace=$(mktemp --suffix=.trace)
  echo "## Alloc/free tracing: off vs on (--trace allocfree)"
  echo
  preamble
  echo
  echo "| workload | off s | MB | on s | MB | on/off | events | bytes | bytes/event |"
  echo "|---|---|---|---|---|---|---|---|---|"
  local w name file export args expected i
  for w in "${GC_WORKLOADS[@]}"; do
    IFS='|' read -r name file export args expected <<<"$w"
    [[ $name == "binary-trees 18" ]] && continue # 4x binary-trees 16, and a 400 MB trace
    local best_off="" rss_off="-" best_on="" rss_on="-" events="-" bytes="-" per="-"
    for ((i = 0; i < RUNS; i++)); do
      read -r cpu rss err < <(measure "$expected" "$vmrun" --invoke "$export" "$file" $args)
      rm -f "$err"
      best_off=$(min "$cpu" "$best_off") rss_off=$rss
      read -r cpu rss err < <(measure "$expected" "$vmrun" --trace allocfree --trace-out "$trace" --invoke "$export" "$file" $args)
      best_on=$(min "$cpu" "$best_on") rss_on=$rss
      # vmrun: trace written to F (N events, B bytes, x bytes/event)
      read -r events bytes per < <(sed -n 's/.*(\([0-9]*\) events, \([0-9]*\) bytes, \([0-9.]*\) bytes\/event).*/\1 \2 \3/p' "$err")
      rm -f "$err"
    done
    echo "| $name | $best_off | $rss_off | $best_on | $rss_on | $(ratio "$best_on" "$best_off") | $events | $bytes | $per |"
  done
  rm -f "$trace"
  echo
}

# ---------------------------------------------------------------------------------------------------------
bench_bridge() {
  local with without
  with=$(build "$TARGET_DIR")
  without=$(build "$TARGET_DIR/no-bridge" --no-default-features)
  echo "## The Valgrind bridge's native cost: default build vs --no-default-features (no client requests)"
  echo
  preamble
  echo
  echo "| workload | with bridge s | without s | with/without |"
  echo "|---|---|---|---|"
  local w name file export args expected i
  for w in "${GC_WORKLOADS[@]}"; do
    IFS='|' read -r name file export args expected <<<"$w"
    [[ $name == "binary-trees 18" ]] && continue
    local best_with="" best_without=""
    for ((i = 0; i < RUNS; i++)); do
      read -r cpu rss err < <(measure "$expected" "$with" --invoke "$export" "$file" $args)
      rm -f "$err"
      best_with=$(min "$cpu" "$best_with")
      read -r cpu rss err < <(measure "$expected" "$without" --invoke "$export" "$file" $args)
      rm -f "$err"
      best_without=$(min "$cpu" "$best_without")
    done
    echo "| $name | $best_with | $best_without | $(ratio "$best_with" "$best_without") |"
  done
  echo
  # CPU time on a shared machine varies by more than the 2% in question, so also count instructions:
  # callgrind runs the bridge build with --no-valgrind-annotations, which leaves its heap exactly as it
  # runs natively (the only difference left is the bridge itself).
  command -v valgrind >/dev/null || return 0
  echo "Instructions (valgrind --tool=callgrind; deterministic):"
  echo
  echo "| workload | with bridge | without | difference |"
  echo "|---|---|---|---|"
  local prog arg out a b
  for w in "binary-trees 12|programs/binary_trees.wat|12|674478" "gc cycles 2e5|programs/gc_cycles.wat|200000|20000100000"; do
    IFS='|' read -r name prog arg expected <<<"$w"
    out=$(mktemp)
    valgrind --tool=callgrind --callgrind-out-file="$out" "$with" --no-valgrind-annotations --invoke run "$prog" "$arg" >/dev/null 2>&1
    a=$(sed -n 's/^summary: //p' "$out")
    valgrind --tool=callgrind --callgrind-out-file="$out" "$without" --invoke run "$prog" "$arg" >/dev/null 2>&1
    b=$(sed -n 's/^summary: //p' "$out")
    rm -f "$out"
    echo "| $name | $a | $b | $((a - b)) ($(awk -v a="$a" -v b="$b" 'BEGIN { printf "%+.4f%%", (a - b) * 100 / b }')) |"
  done
  echo
}

# ---------------------------------------------------------------------------------------------------------
bench_memcheck() {
  local vmrun
  vmrun=$(build "$TARGET_DIR")
  command -v valgrind >/dev/null || { echo "valgrind not installed: skipping the Memcheck slowdown" >&2; return; }
  echo "## binary-trees under Memcheck (collector on, leak check on) vs native"
  echo
  preamble
  echo "valgrind: $(valgrind --version), command: valgrind --error-exitcode=99 --leak-check=full vmrun --invoke run programs/binary_trees.wat N"
  echo
  echo "| N | native s | MB | Memcheck s | MB | slowdown | Memcheck, --no-valgrind-annotations s | slowdown |"
  echo "|---|---|---|---|---|---|---|---|"
  local n expected i
  for n in 12 14 16; do
    case $n in 12) expected=674478 ;; 14) expected=3222190 ;; 16) expected=14985902 ;; esac
    local best_native="" rss_native="-" best_mc="" rss_mc="-" best_plain=""
    for ((i = 0; i < RUNS; i++)); do
      read -r cpu rss err < <(measure "$expected" "$vmrun" --invoke run programs/binary_trees.wat $n)
      rm -f "$err"
      best_native=$(min "$cpu" "$best_native") rss_native=$rss
      read -r cpu rss err < <(measure "$expected" valgrind -q --error-exitcode=99 --leak-check=full "$vmrun" --invoke run programs/binary_trees.wat $n)
      rm -f "$err"
      best_mc=$(min "$cpu" "$best_mc") rss_mc=$rss
      # Memcheck's cost on the interpreter alone: the heap unannotated, as it runs natively.
      read -r cpu rss err < <(measure "$expected" valgrind -q --leak-check=full "$vmrun" --no-valgrind-annotations --invoke run programs/binary_trees.wat $n)
      rm -f "$err"
      best_plain=$(min "$cpu" "$best_plain")
    done
    echo "| $n | $best_native | $rss_native | $best_mc | $rss_mc | $(ratio "$best_mc" "$best_native") | $best_plain | $(ratio "$best_plain" "$best_native") |"
  done
  echo
}

case ${1:-all} in
  gc) bench_gc ;;
  trace) bench_trace ;;
  bridge) bench_bridge ;;
  memcheck) bench_memcheck ;;
  all) bench_gc; bench_trace; bench_bridge; bench_memcheck ;;
  *) echo "usage: bash bench/heap.sh [gc|trace|bridge|memcheck|all]" >&2; exit 2 ;;
esac
