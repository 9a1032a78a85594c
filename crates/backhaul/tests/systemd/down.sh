#!/bin/bash
# Tear an instance down: clean poweroff of its systemd, then (if needed) SIGKILL, then
# remove its cgroup and state dir.  Idempotent: safe on a running, half-started, crashed or
# already-removed instance.  Exit 0 when nothing of the instance is left on the host.
# Usage: [BH_NAME=name] down.sh [NAME]     Env: BH_STOP_TIMEOUT (s, default 30)
set -uo pipefail
[[ $# -ge 1 ]] && BH_NAME=$1
. "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"

take_lock
tmo=${BH_STOP_TIMEOUT:-30}
wait_gone() { # pid seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    [[ -d /proc/$1 ]] || return 0
    sleep 0.1
  done
  return 1
}

existed=0
[[ -e $STATE ]] && existed=1
if p=$(pid1); then
  # Keep the evidence first, if asked (CI artifacts): the whole journal of this boot.
  if [[ -n ${BH_ARTIFACTS_DIR:-} ]]; then
    mkdir -p "$BH_ARTIFACTS_DIR"
    "$HELPER_DIR/enter.sh" journalctl -b -o short-precise --no-pager >"$BH_ARTIFACTS_DIR/$BH_NAME.journal.txt" 2>&1 || true
    "$HELPER_DIR/enter.sh" systemctl list-units --all --no-pager >"$BH_ARTIFACTS_DIR/$BH_NAME.units.txt" 2>&1 || true
  fi
  log "poweroff: SIGRTMIN+4 to PID1 (host pid $p)"
  # SIGRTMIN+4 = "start poweroff.target" for systemd as PID 1 (what `systemctl poweroff`
  # does, without needing a D-Bus/private-socket client).  At the end systemd-shutdown calls
  # reboot(2), which in a non-initial pid namespace just ends the namespace's PID 1.
  kill -s SIGRTMIN+4 "$p" 2>/dev/null
  if ! wait_gone "$p" "$tmo"; then
    log "still running after ${tmo}s, killing"
  fi
fi
if o=$(outer_pid); then
  # The outer unshare runs with --kill-child: killing it SIGKILLs PID 1 and with it the
  # whole pid namespace.  Its private mount namespace (overlay, tmpfs upper) goes with it.
  wait_gone "$o" 3 || { kill -KILL "$o" 2>/dev/null; wait_gone "$o" 5; }
fi
if p=$(pid1); then
  kill -KILL "$p" 2>/dev/null; wait_gone "$p" 5
fi

# The cgroup subtree: kill whatever might still be in it (cgroup.kill, Linux >= 5.14),
# then rmdir it depth-first.  (Processes that entered with enter.sh are in the instance's
# pid namespace but not in this cgroup; they died with its PID 1.)
cg_out=$(with_host_cg2 bash -c '
  cg=$CG2/$1
  [[ -d $cg ]] || exit 0
  echo present
  for i in $(seq 1 50); do
    if [[ -e $cg/cgroup.kill ]] && grep -q "populated 1" "$cg/cgroup.events"; then
      echo 1 >"$cg/cgroup.kill"
    fi
    find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
    [[ -d $cg ]] || exit 0
    sleep 0.1
  done
  echo "cgroup $1 could not be removed:" >&2; find "$cg" -name cgroup.procs -exec grep -H . {} + >&2
  exit 1' bh-down "$CG_NAME")
cg_rc=$?
cg_existed=0
[[ $cg_out == *present* ]] && cg_existed=1

# Nothing is ever mounted in the host's mount namespace, but check (and detach) anyway.
left_mounts=$(findmnt -rn -o TARGET | grep -F -- "$STATE" || true)
if [[ -n $left_mounts ]]; then
  log "unexpected host mounts under $STATE, detaching: $left_mounts"
  while read -r m; do umount -l "$m"; done < <(sort -r <<<"$left_mounts")
fi

if [[ -d $STATE ]]; then
  if [[ -n ${BH_ARTIFACTS_DIR:-} ]]; then
    mkdir -p "$BH_ARTIFACTS_DIR"
    cp "$STATE/boot.log" "$BH_ARTIFACTS_DIR/$BH_NAME.boot.log" 2>/dev/null || true
  fi
  rm -rf --one-file-system -- "$STATE"
fi
rmdir "$BH_STATE_BASE" 2>/dev/null || true
if [[ $cg_rc != 0 || -e $STATE ]]; then
  log "teardown incomplete"
  exit 1
fi
[[ $existed == 1 || $cg_existed == 1 ]] && log "down"
exit 0
