#!/bin/bash
# Stage 1 -- runs in a fresh *private mount namespace* (boot.sh: unshare --mount
# --propagation private), still in the host's pid/cgroup/net namespaces.
#   - builds the overlay of / with a tmpfs upper (mounted in this private ns only),
#   - execs `unshare` for the pid (+mount) namespace; its child (stage2) is PID 1.
set -euo pipefail
STATE=$1; CG_NAME=$2; HELPER_DIR=$3
echo $$ >"$STATE/outer.pid"
exec 2>>"$STATE/boot.log"
set -x

# --- overlay of / with a tmpfs upper ----------------------------------------------------
mkdir -p "$STATE/rw" "$STATE/root"
mount -t tmpfs -o "mode=0755,size=${BH_TMPFS_SIZE:-4g}" bh-systemd-rw "$STATE/rw"
mkdir -p "$STATE/rw/upper" "$STATE/rw/work"
# lowerdir=/ is only the root filesystem itself: submounts of the host (/proc, /sys, /dev,
# /run/netns, ...) are not part of it, stage2 mounts fresh ones.
mount -t overlay -o "lowerdir=/,upperdir=$STATE/rw/upper,workdir=$STATE/rw/work" bh-systemd-root "$STATE/root"

# --- the namespaces ------------------------------------------------------------------------
# --fork: the child is pid 1 of the new pid ns.  --kill-child: if this outer unshare dies
# (down.sh SIGKILLs it as a last resort), the instance dies with it.
# --mount again: pivot_root in stage2 must not touch this (outer) namespace.
# The cgroup/uts/ipc/net namespaces are made by stage2 itself (still as PID 1): this
# outer process must stay OUT of the cgroup that becomes the instance's cgroup root (a
# process there, invisible inside, breaks `systemctl status` with EIO and forbids
# enabling controllers: "no internal processes").
exec unshare --pid --fork --kill-child --mount --propagation private \
  -- "$HELPER_DIR/lib/stage2.sh" "$STATE" "$CG_NAME"
