#!/usr/bin/env bash
# Bulk TCP through the lab's wire, unshaped, MTU 1500, measured with iperf3 (Debian package):
#   site -> gw      one wire link (lan)
#   site -> cloud   two wire links and the gateway's forwarding
# Needs root. Usage: crates/lab/bench-wire.sh [path/to/backhaul-lab] [seconds]
# Prints one line per path; record the figures in BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
exe=${1:-target/release/backhaul-lab}
secs=${2:-10}
if [[ ! -x $exe ]]; then cargo build --release -p backhaul-lab >&2; fi
name="bench$$"
cleanup() { "$exe" down --name "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT INT TERM
"$exe" up --name "$name" >/dev/null
site="bhl-$name-site" gw="bhl-$name-gw" cloud="bhl-$name-cloud"

measure() { # label server-ns server-addr
  ip netns exec "$2" iperf3 -s -B "$3" -1 >/dev/null 2>&1 &
  local server=$!
  sleep 0.5
  local bps
  bps=$(ip netns exec "$site" iperf3 -c "$3" -t "$secs" -J | python3 -c \
    'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"])')
  wait "$server" || true
  python3 -c "print(f'wire $1: {float($bps)/1e9:.2f} Gbit/s (iperf3 -t $secs, MTU 1500, unshaped)')"
}
measure "site->gw (1 link)" "$gw" 192.0.2.1
measure "site->cloud (2 links + router)" "$cloud" 203.0.113.10
"$exe" status | grep 'wire ' || true
