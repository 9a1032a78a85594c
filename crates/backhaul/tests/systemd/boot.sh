#!/bin/bash
# Boot the installed systemd as PID 1 of its own namespaces, on an overlay of / with a
# tmpfs upper.  Prints (stdout, one per line, shell-sourceable):
#   PID1=<host pid of the instance's systemd>  STATE=<state dir>  SYSTEM_STATE=<...>  BOOT_SECONDS=<...>
# Usage: [BH_NAME=name] boot.sh [--restart] [--no-wait]
# Env:   BH_NAME (default "default"), BH_NETNS=new|host, BH_TIMEOUT (s, default 90),
#        BH_MASK_EXTRA="a.service b.timer", BH_KEEP_HOST_UNITS=1, BH_HOSTNAME, BH_CONTAINER,
#        BH_TMPFS_SIZE (overlay upper, default 4g), BH_PRESEED=<dir copied over / before boot>,
#        BH_STRICT=1 (exit 3 when the boot ends "degraded"; default: exit 0, failed units on stderr)
# Exit: 0 booted (running, or degraded unless BH_STRICT=1), 1 did not start / boot not finished.
set -euo pipefail
. "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"

restart=0 wait=1
for a in "$@"; do
  case $a in
    --restart) restart=1 ;;
    --no-wait) wait=0 ;;
    *) die "unknown argument $a" ;;
  esac
done
[[ $(id -u) == 0 ]] || die "must run as root"
take_lock

if p=$(pid1); then
  if [[ $restart == 0 ]]; then
    log "already running (PID1=$p); use --restart or down.sh for a fresh one"
    echo "PID1=$p"; echo "STATE=$STATE"
    exit 0
  fi
fi
# Anything left (a running instance with --restart, or the debris of a crashed run: state
# dir, processes, cgroup): down.sh is idempotent and removes all of it; quiet when clean.
"$HELPER_DIR/down.sh" >&2 || die "could not clean up previous instance in $STATE"

mkdir -p "$STATE"
: >"$STATE/boot.log"
: >"$STATE/console.log"
# The masks (see NOTES.md); extended by BH_MASK_EXTRA.
{
  cat "$HELPER_DIR/lib/masks"
  for u in ${BH_MASK_EXTRA:-}; do echo "$u"; done
} | sed 's/#.*//' | awk 'NF{print $1}' >"$STATE/masks"
if [[ -n ${BH_PRESEED:-} ]]; then
  cp -a "$BH_PRESEED" "$STATE/preseed"
fi

t0=$(date +%s.%N)
# setsid: own session, not tied to the caller's terminal or process group.
export BH_NETNS=${BH_NETNS:-new} BH_TMPFS_SIZE=${BH_TMPFS_SIZE:-4g}
setsid unshare --mount --propagation private -- \
  "$HELPER_DIR/lib/stage1.sh" "$STATE" "$CG_NAME" "$HELPER_DIR" \
  </dev/null >>"$STATE/boot.log" 2>&1 9<&- &

# Wait for the PID 1 to be there.
for _ in $(seq 1 100); do
  if p=$(pid1); then break; fi
  sleep 0.1
done
p=$(pid1) || { cat "$STATE/boot.log" >&2; die "instance did not start (see $STATE/boot.log)"; }
echo "PID1=$p"
echo "STATE=$STATE"

[[ $wait == 1 ]] || exit 0
# systemctl talks to PID 1 over /run/systemd/private; wait until it is there (reading the
# instance's /run through /proc/PID/root, from the host).
for _ in $(seq 1 100); do
  [[ -S /proc/$p/root/run/systemd/private ]] && break
  sleep 0.05
done
# `is-system-running --wait` blocks until the boot job queue is empty; it returns
# running (0) or degraded/maintenance (non-zero).
st=$(timeout "${BH_TIMEOUT:-90}" "$HELPER_DIR/enter.sh" systemctl is-system-running --wait 2>/dev/null) || true
t1=$(date +%s.%N)
echo "SYSTEM_STATE=${st:-timeout}"
awk -v a="$t0" -v b="$t1" 'BEGIN{printf "BOOT_SECONDS=%.2f\n", b-a}'
case $st in
  running) exit 0 ;;
  degraded) log "degraded; failed units:"; "$HELPER_DIR/enter.sh" systemctl --failed --no-legend >&2 || true
            [[ ${BH_STRICT:-0} == 1 ]] && exit 3; exit 0 ;;
  *) log "boot did not finish (state '${st:-timeout}'); see $STATE/boot.log and: enter.sh journalctl -b"; exit 1 ;;
esac
