#!/bin/bash
# Stage 2 -- PID 1 of the new pid namespace, already in its own mount/cgroup/uts/ipc(/net)
# namespaces.  Mounts the API filesystems into the overlay, prepares /etc in the overlay
# (masks, machine-id, hostname, default target), pivot_roots into it and execs systemd.
set -euo pipefail
STATE=$1 CG_NAME=$2
R=$STATE/root
exec 2>>"$STATE/boot.log"
set -x

# --- cgroup (v2) delegation ------------------------------------------------------------------
# Still in the host's cgroup namespace: create bh-systemd.NAME at the root of the host's
# cgroup2 hierarchy (a private mount of it, only to get there), move in, then unshare the
# cgroup namespace: that cgroup becomes "/" for the instance, systemd owns the subtree.
# Re-exec (same process, still PID 1) once inside the new namespaces.
if [[ -z ${BH_STAGE2_NS:-} ]]; then
  mkdir -p "$STATE/cg"
  mount -t cgroup2 cgroup2 "$STATE/cg"
  mkdir -p "$STATE/cg/$CG_NAME"
  echo $$ >"$STATE/cg/$CG_NAME/cgroup.procs"
  umount "$STATE/cg"
  net=--net
  [[ ${BH_NETNS:-new} == host ]] && net=
  export BH_STAGE2_NS=1
  exec unshare --cgroup --uts --ipc $net -- "$0" "$@"
fi

# Our pid as the host sees it.  /proc is still the host's procfs here and procfs resolves
# "self" in the pid namespace of the *mount*, so this is the host pid (a builtin cd: no fork).
cd -P /proc/self; host_pid=${PWD##*/}; cd /
echo "$host_pid" >"$STATE/pid1.tmp"

# --- API filesystems ------------------------------------------------------------------------
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
# The kernel is the host's: keep sysctls read-only (like systemd-nspawn does), except the
# per-netns /proc/sys/net when we have our own network namespace (so systemd-sysctl, whose
# condition is a writable /proc/sys/net/, applies only net.* -- to our netns).  Read-only
# /proc/sys also skips the binfmt_misc automount (ConditionPathIsReadWrite=/proc/sys/), and
# with it systemd-binfmt (ConditionPathIsMountPoint=/proc/sys/fs/binfmt_misc).
mount --bind "$R/proc/sys" "$R/proc/sys"
if [[ ${BH_NETNS:-new} != host ]]; then
  mount --bind "$R/proc/sys/net" "$R/proc/sys/net"
fi
mount -o remount,bind,ro,nosuid,nodev,noexec "$R/proc/sys"
if [[ -e $R/proc/sysrq-trigger ]]; then   # absent on kernels without CONFIG_MAGIC_SYSRQ
  mount --bind "$R/proc/sysrq-trigger" "$R/proc/sysrq-trigger"
  mount -o remount,bind,ro "$R/proc/sysrq-trigger"
fi

# sysfs read-only: systemd then treats the system as a container without udev
# (systemd-udevd & co have ConditionPathIsReadWrite=/sys).
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
# cgroup2, mounted from inside the new cgroup namespace: its root is bh-systemd.NAME
# (created above); systemd owns that subtree.
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$R/sys/fs/cgroup"

# Private /dev: tmpfs with a minimal set of nodes (as systemd-nspawn does), not the host's
# devtmpfs -- no host disks/ttys inside, and nothing udev-ish to wait for.
mount -t tmpfs -o mode=0755,nosuid,size=4m bh-dev "$R/dev"
mknod -m 0666 "$R/dev/null"    c 1 3
mknod -m 0666 "$R/dev/zero"    c 1 5
mknod -m 0666 "$R/dev/full"    c 1 7
mknod -m 0666 "$R/dev/random"  c 1 8
mknod -m 0666 "$R/dev/urandom" c 1 9
mknod -m 0666 "$R/dev/tty"     c 5 0
mkdir -m 0755 "$R/dev/net" && mknod -m 0666 "$R/dev/net/tun" c 10 200
mkdir -m 0755 "$R/dev/pts" "$R/dev/shm" "$R/dev/mqueue" "$R/dev/hugepages"
chmod 1777 "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5,nosuid,noexec devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev shm "$R/dev/shm"
ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"
ln -s /proc/self/fd/2 "$R/dev/stderr"
# /dev/console: a regular file bind-mounted over an empty node.  systemd as PID 1 puts its
# own stdio on /dev/null and ignores a console that is not a tty ("Configured TTY
# '/dev/console' is not actually a character device"), so this only collects what scripts
# write to /dev/console explicitly ($STATE/console.log on the host); status output and
# logs go to the journal.  (A real pty, as nspawn gives, would need a relay process.)
: >>"$STATE/console.log"
touch "$R/dev/console"
mount --bind "$STATE/console.log" "$R/dev/console"

mount -t tmpfs -o mode=0755,nosuid,nodev,size=512m bh-run "$R/run"
mount -t tmpfs -o mode=1777,nosuid,nodev,size=1g bh-tmp "$R/tmp"

# --- identity, network ------------------------------------------------------------------------
hostname "${BH_HOSTNAME:-bh-test}"
echo "${BH_HOSTNAME:-bh-test}" >"$R/etc/hostname"
echo "127.0.1.1 ${BH_HOSTNAME:-bh-test}" >>"$R/etc/hosts"
if [[ ${BH_NETNS:-new} != host ]]; then
  ip link set lo up
fi
# A fresh machine id (not the host's): own journal dir, not a "first boot" either
# (an empty/missing machine-id would trigger ConditionFirstBoot units like systemd-firstboot).
tr -d - </proc/sys/kernel/random/uuid >"$R/etc/machine-id"

# --- unit set ---------------------------------------------------------------------------------
E=$R/etc/systemd/system
# Forget what the *host* enabled in /etc (postgresql, prometheus, strongswan, timers, ...):
# the instance boots only the distro's static units plus what a test enables.
# (rm in the overlay = whiteouts in the tmpfs upper; the host's /etc is untouched.)
if [[ ${BH_KEEP_HOST_UNITS:-0} != 1 ]]; then
  find "$E" -mindepth 1 -maxdepth 1 -name '*.wants' -exec rm -rf {} +
  find "$E" -mindepth 1 -maxdepth 1 -name '*.requires' -exec rm -rf {} +
fi
ln -sfn /lib/systemd/system/multi-user.target "$E/default.target"
# Masks: see NOTES.md for why each one.
mkdir -p "$R/etc/systemd/system-generators"
for u in $(<"$STATE/masks"); do
  case $u in
    generator:*) ln -sfn /dev/null "$R/etc/systemd/system-generators/${u#generator:}" ;;
    *) ln -sfn /dev/null "$E/$u" ;;
  esac
done
# The host image ships Docker's /usr/sbin/policy-rc.d ("exit 101"): with it, maintainer
# scripts' deb-systemd-invoke/invoke-rc.d never start/stop/restart anything.  The instance
# is meant to behave like a real machine, so drop it (in the overlay only).
if [[ ${BH_KEEP_POLICY_RC_D:-0} != 1 ]]; then
  rm -f "$R/usr/sbin/policy-rc.d"
fi
# Extra files a caller wants in the overlay before boot (tree copied over /).
if [[ -d $STATE/preseed ]]; then
  cp -a "$STATE/preseed/." "$R/"
fi

# --- pivot_root and exec systemd ---------------------------------------------------------------
mv "$STATE/pid1.tmp" "$STATE/pid1"
cd "$R"
pivot_root . .
umount -l .          # detach the old root (host /) stacked under the new one
cd /
set +x
exec </dev/null >/dev/console 2>&1
# Capability bounding set: what systemd-nspawn drops too, so nothing inside can load
# kernel modules (shared kernel!), set the host clock, or do raw I/O on host devices.
exec setpriv --bounding-set="$BH_CAP_DROP" -- \
  env -i container=${BH_CONTAINER:-backhaul-test} \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  LANG=C.UTF-8 \
  /lib/systemd/systemd --log-target=${BH_LOG_TARGET:-journal-or-kmsg} ${BH_SYSTEMD_ARGS:-}
