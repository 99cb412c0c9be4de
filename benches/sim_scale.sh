#!/usr/bin/env bash
# Runs scale scenarios on the simulator (`phxsim replay FILE --seed SEED`) one after another
# and prints, per run: simulated time, wall time, CPU time, max RSS, and how many times
# faster than real time the run was (simulated / wall; above 1 = faster than real time).
# Each run's result line (pass / fail) is printed too: a fast run that fails is no figure.
#
#   benches/sim_scale.sh [--seed N] [--repeat K] [FILE ...]
#
# Default files: every benches/scenarios/pop_*.toml (pop_160k takes 3 to 4 minutes and about
# 2.4 GiB on 2 cores; name the files to leave it out). The machine's load is printed first:
# on a shared machine, figures are upper bounds; compare binaries by alternating runs.
set -euo pipefail
seed=1
repeat=1
files=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seed) seed=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) files+=("$1"); shift ;;
  esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if [ ${#files[@]} -eq 0 ]; then
  files=(benches/scenarios/pop_*.toml)
fi
cargo build --release --locked -q -p phxsim
bin=target/release/phxsim
echo "# $(date -u +%FT%TZ) $(uname -m), $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
printf "# %-42s %9s %8s %8s %8s %9s %8s  %s\n" scenario simulated wall user sys max_rss speed result
for f in "${files[@]}"; do
  for _ in $(seq "$repeat"); do
    out=$(mktemp)
    times=$(mktemp)
    set +e
    /usr/bin/time -f "%e %U %S %M" -o "$times" "$bin" replay "$f" --seed "$seed" > "$out" 2>&1
    code=$?
    set -e
    read -r wall user sys rss_kb < <(tail -1 "$times")
    simulated=$(grep -o 'simulated: [0-9]*' "$out" | head -1 | grep -o '[0-9]*' || true)
    result=$(grep -o '^result: .*' "$out" | head -1 || true)
    if [ -z "$result" ]; then
      result="exit $code: $(head -c 160 "$out" | tr '\n' ' ')"
    fi
    if [ -n "$simulated" ]; then
      speed=$(awk -v s="$simulated" -v w="$wall" 'BEGIN { printf "%.2fx", (s / 1000) / w }')
      sim_s=$(awk -v s="$simulated" 'BEGIN { printf "%.1f s", s / 1000 }')
    else
      speed=-
      sim_s=-
    fi
    rss=$(awk -v k="$rss_kb" 'BEGIN { printf "%.2f GiB", k / 1048576 }')
    printf "  %-42s %9s %7ss %7ss %7ss %9s %8s  %s\n" "$(basename "$f")" "$sim_s" "$wall" "$user" "$sys" "$rss" "$speed" "$result"
    rm -f "$out" "$times"
  done
done
