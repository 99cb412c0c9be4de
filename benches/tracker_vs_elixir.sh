#!/usr/bin/env bash
# Runs the tracker workload of perf-workload.md on phxsim (`phxsim bench-tracker`) and on the
# real Phoenix.Tracker.State (benches/elixir/tracker_bench.exs) back to back, and prints both
# figures and the ratio Elixir / phxsim for every op (above 1 = phxsim faster or smaller).
#
#   benches/tracker_vs_elixir.sh PATH/TO/phoenix_pubsub-2.2.0/ebin [--n 100000] [--runs 5]
set -euo pipefail
if [ $# -lt 1 ] || [ ! -d "$1" ]; then
  echo "usage: $0 PATH/TO/phoenix_pubsub-2.2.0/ebin [--n LIST] [--runs K]" >&2
  exit 2
fi
ebin=$1
shift
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --release --locked -q -p phxsim
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "# $(date -u +%FT%TZ) $(uname -m), load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# command: benches/tracker_vs_elixir.sh EBIN $*"
elixir -pa "$ebin" benches/elixir/tracker_bench.exs "$@" | tee -a "$out"
target/release/phxsim bench-tracker "$@" | tee -a "$out"
echo
awk '
  $1 == "ELIXIR" || $1 == "RUST" { v[$1, $2, $3] = $4; if (!(($2, $3) in seen)) { seen[$2, $3] = 1; order[++k] = $2 " " $3 } }
  function ratio(e, r) { return r > 0 ? sprintf("%.2fx", e / r) : "-" }
  END {
    printf "# %-26s %8s %14s %14s %9s\n", "op", "n", "elixir", "phxsim", "ratio"
    for (i = 1; i <= k; i++) {
      split(order[i], p, " ")
      e = v["ELIXIR", p[1], p[2]]; r = v["RUST", p[1], p[2]]
      if (e == "" || r == "") continue
      printf "# %-26s %8s %14s %14s %9s\n", p[1], p[2], e, r, ratio(e, r)
      n[p[2]] = 1
    }
    for (m in n) {
      e = v["ELIXIR", "transfer_extract", m] + v["ELIXIR", "transfer_merge", m]
      r = v["RUST", "transfer_extract", m] + v["RUST", "transfer_merge", m]
      printf "# %-26s %8s %14.3f %14.3f %9s\n", "extract+merge", m, e, r, ratio(e, r)
      e = v["ELIXIR", "transfer_frame_encode", m] + v["ELIXIR", "transfer_frame_decode", m]
      r = v["RUST", "transfer_frame_encode", m] + v["RUST", "transfer_frame_decode", m]
      printf "# %-26s %8s %14.3f %14.3f %9s\n", "transfer encode+decode", m, e, r, ratio(e, r)
    }
  }' "$out"
