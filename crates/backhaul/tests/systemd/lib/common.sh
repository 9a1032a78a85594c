# Shared settings for boot.sh / enter.sh / down.sh.  Sourced, not executed.
# shellcheck shell=bash

HELPER_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)

# One instance = one name.  Several instances may run side by side.
BH_NAME=${BH_NAME:-default}
case $BH_NAME in
  ''|*[!A-Za-z0-9_.-]*) echo "BH_NAME must match [A-Za-z0-9_.-]+ (got '$BH_NAME')" >&2; exit 2 ;;
esac
# State lives on the host root fs (NOT inside the overlay: overlay/upper are mounted only
# inside the private mount namespace of the instance and vanish with it).
BH_STATE_BASE=${BH_STATE_BASE:-/run/bh-systemd}
STATE=$BH_STATE_BASE/$BH_NAME
# Name of the cgroup (v2) created at the root of the host's unified hierarchy and handed
# to the instance as the root of its cgroup namespace.
CG_NAME=bh-systemd.$BH_NAME

# Capabilities removed from the bounding set of the instance's PID 1 (and of enter.sh
# commands): the kernel is the host's.  (setpriv --bounding-set syntax.)
BH_CAP_DROP=${BH_CAP_DROP:--sys_module,-sys_time,-sys_rawio,-sys_pacct,-sys_boot,-mac_admin,-mac_override,-wake_alarm,-block_suspend,-syslog}
export BH_CAP_DROP

log() { printf '[bh-systemd %s] %s\n' "$BH_NAME" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Host pid of the outer `unshare` that owns the instance's namespaces.
outer_pid() {
  local p
  [[ -r $STATE/outer.pid ]] || return 1
  p=$(<"$STATE/outer.pid")
  [[ $p =~ ^[0-9]+$ && -d /proc/$p ]] || return 1
  # pid reuse guard: the outer process carries our state dir in its command line.
  tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF -- " $STATE" || return 1
  echo "$p"
}

# Host pid of the instance's PID 1 (systemd, or stage2 before it execs systemd), or
# nothing (status 1) when it is not running.
pid1() {
  local p o
  [[ -r $STATE/pid1 ]] || return 1
  p=$(<"$STATE/pid1")
  [[ $p =~ ^[0-9]+$ ]] || return 1
  o=$(outer_pid) || return 1
  # Same process as recorded: pid 1 in its own pid namespace, child of our outer unshare.
  [[ $(awk '/^NSpid:/{print $NF}' "/proc/$p/status" 2>/dev/null) == 1 ]] || return 1
  [[ $(awk '/^PPid:/{print $2}' "/proc/$p/status" 2>/dev/null) == "$o" ]] || return 1
  echo "$p"
}

# boot.sh and down.sh of all instances run one at a time (a lock on this file; the fd is
# closed for the instance's own processes).
take_lock() {
  [[ -n ${BH_LOCKED:-} ]] && return 0
  exec 9<"$HELPER_DIR/lib/common.sh"
  flock -w 120 9 || die "could not get the lock (another boot.sh/down.sh stuck?)"
  export BH_LOCKED=1
}

# Run "$@" with the host's cgroup2 hierarchy mounted at $1 -- in a throw-away private
# mount namespace, so nothing is ever mounted in the host's namespace.  Works whether the
# host has cgroup2 at /sys/fs/cgroup (unified), at /sys/fs/cgroup/unified (hybrid) or
# nowhere (pure v1 -- a second cgroup2 mount of the same hierarchy is always allowed).
with_host_cg2() {
  unshare --mount --propagation private -- bash -c '
    set -e
    d=$(mktemp -d /tmp/bh-cg2.XXXXXX)
    mount -t cgroup2 cgroup2 "$d"
    rc=0; CG2="$d" "$@" || rc=$?
    umount "$d"; rmdir "$d"
    exit $rc' bh-cg2 "$@"
}
