#!/bin/bash
# Run a command inside the instance (all its namespaces, its root), e.g.
#   enter.sh systemctl status backhaul
#   enter.sh journalctl -u backhaul -p err --no-pager
#   enter.sh sh -c 'cat >/tmp/x.deb' <x.deb
# Usage: [BH_NAME=name] enter.sh CMD [ARGS...]   (default CMD: bash -l)
# Exit status is the command's.  stdin/stdout/stderr are passed through.
set -euo pipefail
. "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"
p=$(pid1) || die "instance '$BH_NAME' is not running (no live PID 1 in $STATE/pid1)"
[[ $# -gt 0 ]] || set -- bash -l
# --all: mount, uts, ipc, net, pid, cgroup (and time); --root/--wd: the instance's /.
# The process stays in the host's cgroup (nsenter does not move it); systemctl/journalctl
# do not care.  A clean environment: nothing of the host's leaks in.
exec nsenter --target "$p" --all --root --wd -- \
  setpriv --bounding-set="$BH_CAP_DROP" -- /usr/bin/env -i \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" \
  SYSTEMD_PAGER=cat SYSTEMD_COLORS=0 SYSTEMD_LESS= DEBIAN_FRONTEND=noninteractive \
  "$@"
