#!/usr/bin/env bash
# bench/run.sh: time the programs in programs/ in vmrun and, where installed, in wasmi and
# wasmtime with the same file and arguments, and print a Markdown table with the ratios.
#
#   bash bench/run.sh            # best of 3 runs per cell
#   RUNS=5 bash bench/run.sh
#   VMRUN=path/to/vmrun bash bench/run.sh   # time an existing binary, skip the build
#
# Wall time is the best of RUNS runs (bash's EPOCHREALTIME, microsecond resolution), including
# process start, parsing and translation, exactly as a user would see it. CPU time (user + sys)
# and peak RSS come from GNU time (`/usr/bin/time -f "%U %S %M"`) when it exists; on a shared,
# loaded machine CPU time is the steadier of the two. The runtimes' runs are interleaved. Every run's output is checked against the
# expected result, so a fast wrong answer is reported as `wrong`, not as a time.
# Peers are looked up on PATH, then in /work/tools/bin and ~/.cargo/bin
# (`cargo install wasmi_cli@2.0.0 --root /work/tools`).
#
# Why a shell script: it needs nothing beyond bash and cargo, runs each runtime as a separate
# process the way users run them, and is short enough to read in one sitting.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
TARGET_DIR=${CARGO_TARGET_DIR:-target}

# name | export | file | arguments | expected output | proposals needed beyond core
WORKLOADS=(
  "fib(35)|fib|programs/fib.wat|35|9227465|"
  "sieve 10x1e7|run|programs/sieve.wat|10000000 10|664579|"
  "mandelbrot 1200|mandelbrot|programs/mandelbrot.wat|1200|571628|"
  "binary-trees 16|run|programs/binary_trees.wat|16|14985902|gc"
  "gc cycles 5e6|run|programs/gc_cycles.wat|5000000|12500002500000|gc"
  "matmul (C, wasi-libc)|_start|bench/c/matmul.wasm||8052633550.0|"
  "sort + hash (C, wasi-libc)|_start|bench/c/sort.wasm||395351 3344477188|"
  "hello.wat (start-up)|_start|programs/hello.wat||Hello, world!|"
)

# Whether runtime $1 can run a workload that needs proposal $2 (wasmi 2.0 has no GC).
supports() {
  [[ -z $2 || $1 != wasmi ]]
}

# shellcheck source=bench/peers.sh
source bench/peers.sh

if [[ -z ${VMRUN:-} ]]; then
  echo "building vmrun (release)..." >&2
  cargo build --release --quiet --bin vmrun
  VMRUN="$TARGET_DIR/release/vmrun"
fi
WASMI=$(find_tool wasmi || true)
WASMTIME=$(find_tool wasmtime || true)
GNU_TIME=""
if [[ -x /usr/bin/time ]] && /usr/bin/time -f %M true >/dev/null 2>&1; then GNU_TIME=/usr/bin/time; fi

# The command line of runtime $1 for export $2 of file $3 with arguments $4 (export `_start`: the
# file runs as a WASI command). `interp` is vmrun's interpreter alone (`--jit=off`).
command_for() {
  local runtime=$1 export=$2 file=$3 args=$4 invoke="--invoke $2 "
  [[ $export == _start ]] && invoke=""
  case $runtime in
    vmrun) echo "$VMRUN $invoke$file $args" ;;
    interp) echo "$VMRUN --jit=off $invoke$file $args" ;;
    wasmi) echo "$WASMI run $invoke$file $args" ;;
    wasmtime) echo "$WASMTIME run $invoke$file $args" ;;
  esac
}

# Runs `cmd` once; prints "<wall s> <cpu s> <peak RSS MB>" ("-" where unknown), or "wrong - -"
# if its last output line is not `expected`.
run_once() {
  local cmd=$1 expected=$2 out start end wall cpu="-" rss="-" stats
  stats=$(mktemp)
  start=$EPOCHREALTIME
  if [[ -n $GNU_TIME ]]; then
    out=$($GNU_TIME -f "%U %S %M" -o "$stats" $cmd 2>/dev/null || true)
  else
    out=$($cmd 2>/dev/null || true)
  fi
  end=$EPOCHREALTIME
  if [[ $(echo "$out" | tail -n 1) != "$expected" ]]; then
    rm -f "$stats"
    echo "wrong - -"
    return
  fi
  wall=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f", e - s }')
  if [[ -n $GNU_TIME ]]; then
    read -r cpu rss < <(awk '{ printf "%.2f %.0f\n", $1 + $2, $3 / 1024 }' "$stats")
  fi
  rm -f "$stats"
  echo "$wall $cpu $rss"
}

# min of two numbers, where "" means none yet
min() { if [[ -z $2 ]] || awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; then echo "$1"; else echo "$2"; fi; }
ratio() { if [[ $1 == wrong || $2 == wrong || $1 == - || $2 == - || $2 == n/a ]]; then echo "-"; else awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; fi; }

runtimes=(vmrun interp)
[[ -n $WASMI ]] && runtimes+=(wasmi)
[[ -n $WASMTIME ]] && runtimes+=(wasmtime)

header="| workload | vmrun wall s | cpu s | MB |"
rule="|---|---|---|---|"
for r in "${runtimes[@]:1}"; do
  header+=" $r wall s | cpu s | MB | vmrun/$r wall | cpu |"
  rule+="---|---|---|---|---|"
done
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, load average before: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)"
echo "best of $RUNS runs, runtimes interleaved; wall time includes startup, parsing and translation"
for r in "${runtimes[@]}"; do
  case $r in
    vmrun) echo "vmrun: $VMRUN ($($VMRUN --version)), default tier (--jit=auto)" ;;
    interp) echo "interp: the same vmrun with --jit=off" ;;
    wasmi) echo "wasmi: $WASMI ($($WASMI --version 2>/dev/null || echo unknown version))" ;;
    wasmtime) echo "wasmtime: $WASMTIME ($($WASMTIME --version 2>/dev/null || echo unknown version))" ;;
  esac
done
echo
echo "$header"
echo "$rule"
for w in "${WORKLOADS[@]}"; do
  IFS='|' read -r name export file args expected needs <<<"$w"
  declare -A best_wall=() best_cpu=() peak_rss=()
  # Interleave the runtimes so that a change in machine load hits all of them alike.
  for ((i = 0; i < RUNS; i++)); do
    for r in "${runtimes[@]}"; do
      if ! supports "$r" "$needs"; then
        best_wall[$r]=n/a best_cpu[$r]=n/a peak_rss[$r]=n/a
        continue
      fi
      read -r wall cpu rss < <(run_once "$(command_for "$r" "$export" "$file" "$args")" "$expected")
      if [[ $wall == wrong || ${best_wall[$r]:-} == wrong ]]; then
        best_wall[$r]=wrong best_cpu[$r]=- peak_rss[$r]=-
        continue
      fi
      best_wall[$r]=$(min "$wall" "${best_wall[$r]:-}")
      [[ $cpu != - ]] && best_cpu[$r]=$(min "$cpu" "${best_cpu[$r]:-}")
      peak_rss[$r]=$rss
    done
  done
  row="| $name | ${best_wall[vmrun]} | ${best_cpu[vmrun]:--} | ${peak_rss[vmrun]:--} |"
  for r in "${runtimes[@]:1}"; do
    row+=" ${best_wall[$r]} | ${best_cpu[$r]:--} | ${peak_rss[$r]:--} |"
    row+=" $(ratio "${best_wall[vmrun]}" "${best_wall[$r]}") | $(ratio "${best_cpu[vmrun]:--}" "${best_cpu[$r]:--}") |"
  done
  echo "$row"
  unset best_wall best_cpu peak_rss
done
