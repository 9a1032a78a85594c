#!/bin/sh
# build-libipsec.sh CACHE_DIR
#
# Builds a patched strongSwan kernel-libipsec plugin whose TUN MTU (and, more
# importantly, the TUN read buffer, which tun_device_t sizes from the MTU it
# cached at set_mtu() time) comes from strongswan.conf:
#     charon.plugins.kernel-libipsec.mtu = 9000     (default 1400 = stock)
# Only the plugin is rebuilt: TUN_DEFAULT_MTU=1400 lives in
# src/libcharon/plugins/kernel_libipsec/kernel_libipsec_plugin.c, not in
# libstrongswan (tun_device.c has its own TUN_DEFAULT_MTU=1500 used only if
# set_mtu() was never called). The plugin is compiled against the configured
# source tree headers and linked against the INSTALLED /usr/lib/ipsec/libipsec.so.0,
# so no system file is touched. Use it by bind-mounting it over
# /usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so inside the lab
# charon's private mount namespace.
#
# Output (CACHE_DIR):  libstrongswan-kernel-libipsec.so   patched plugin
#                      BUILD-INFO                          versions, hashes, source used
# Idempotent: exits 0 immediately if CACHE_DIR/BUILD-INFO matches the installed
# packages (version + sha256 of installed plugin and libipsec/libcharon/libstrongswan).
# Exit codes: 0 ok, 2 usage, 3 missing build deps (and apt-get failed),
#             4 no matching source, 5 build failed, 6 ABI check failed.
set -eu

die() { code=$1; shift; echo "build-libipsec: ERROR: $*" >&2; exit "$code"; }
log() { echo "build-libipsec: $*" >&2; }

[ $# -eq 1 ] || { echo "usage: $0 CACHE_DIR   (e.g. /var/cache/backhaul-lab/strongswan-\$(dpkg-query -W -f='\${Version}' libcharon-extra-plugins)-tun9000)" >&2; exit 2; }
CACHE=$1
PATCH_ID=backhaul-kernel-libipsec-mtu-v1
PLUGIN=/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so
LIBS="/usr/lib/ipsec/libipsec.so.0 /usr/lib/ipsec/libcharon.so.0 /usr/lib/ipsec/libstrongswan.so.0"

VER=$(dpkg-query -W -f='${Version}' libcharon-extra-plugins 2>/dev/null) ||
	die 3 "libcharon-extra-plugins not installed (apt-get install libcharon-extra-plugins)"
for p in libstrongswan strongswan-libcharon; do
	v=$(dpkg-query -W -f='${Version}' $p 2>/dev/null || true)
	[ "$v" = "$VER" ] || die 3 "$p version '$v' != libcharon-extra-plugins '$VER'"
done
[ -f "$PLUGIN" ] || die 3 "$PLUGIN missing"
UPSTREAM=${VER#*:}; UPSTREAM=${UPSTREAM%%-*}

fingerprint() {
	echo "patch=$PATCH_ID"
	echo "installed=$VER"
	for f in $PLUGIN $LIBS; do echo "sha256 $(sha256sum "$f" | cut -d' ' -f1) $f"; done
}

# ---- cache hit? -------------------------------------------------------------
if [ -f "$CACHE/BUILD-INFO" ] && [ -f "$CACHE/libstrongswan-kernel-libipsec.so" ] &&
   [ "$(fingerprint)" = "$(sed -n '/^patch=/,/^sha256 .*libstrongswan.so.0$/p' "$CACHE/BUILD-INFO")" ]; then
	log "cache hit: $CACHE (installed $VER)"
	echo "$CACHE/libstrongswan-kernel-libipsec.so"
	exit 0
fi
[ -e "$CACHE" ] && log "cache $CACHE stale or incomplete, rebuilding"

# ---- build deps ---------------------------------------------------------------
# gcc/make/libc6-dev (build-essential), dpkg-source (dpkg-dev), tarballs (bzip2, xz-utils),
# objdump (binutils), apt-get source (apt + a deb-src entry).
DEPS="build-essential dpkg-dev bzip2 xz-utils binutils"
missing=""
for p in $DEPS; do dpkg-query -W -f='${Status}' $p 2>/dev/null | grep -q "ok installed" || missing="$missing $p"; done
if [ -n "$missing" ]; then
	log "installing build deps:$missing"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >&2 ||
		die 3 "cannot install build deps:$missing (apt-get install -y$missing)"
fi
for t in gcc make dpkg-source objdump sha256sum; do command -v $t >/dev/null || die 3 "$t not found"; done

# ---- source -------------------------------------------------------------------
if ! apt-cache showsrc strongswan 2>/dev/null | grep -q '^Version:'; then
	SRCLIST=/etc/apt/sources.list.d/debian-src.sources
	log "no deb-src for strongswan: writing $SRCLIST and running apt-get update"
	sed -n 's/^Types: deb$/Types: deb-src/; p' /etc/apt/sources.list.d/debian.sources > "$SRCLIST" ||
		die 4 "cannot write $SRCLIST"
	apt-get update -q >&2 || die 4 "apt-get update failed"
fi
WORK=$(mktemp -d /tmp/build-libipsec.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
SRCVER=""
# exact version first; else another Debian revision of the SAME upstream version
# (bookworm-security's .debian.tar.xz is sometimes not mirrored). The ABI check
# below guards against a header/layout difference.
for v in "$VER" $(apt-cache showsrc strongswan | sed -n 's/^Version: //p' | sort -r -u); do
	case "$v" in "$UPSTREAM"-*|*:"$UPSTREAM"-*) ;; *) continue;; esac
	if apt-get source -q --download-only "strongswan=$v" >apt-source.log 2>&1; then SRCVER=$v; break; fi
	log "apt-get source strongswan=$v failed: $(grep '^E:' apt-source.log | head -1)"
done
[ -n "$SRCVER" ] || die 4 "no strongswan source package with upstream version $UPSTREAM available (need deb-src)"
[ "$SRCVER" = "$VER" ] || log "WARNING: source $SRCVER used for installed $VER (same upstream $UPSTREAM)"
dpkg-source -x strongswan_*.dsc src >dpkg-source.log 2>&1 || die 5 "dpkg-source -x failed: $(tail -3 dpkg-source.log)"
cd src
P=src/libcharon/plugins/kernel_libipsec
grep -q '^#define TUN_DEFAULT_MTU 1400' $P/kernel_libipsec_plugin.c ||
	die 5 "TUN_DEFAULT_MTU 1400 not found in $P/kernel_libipsec_plugin.c (source layout changed)"

# ---- configure (only for config.h; flags that change struct layout match Debian:
# mediation (ME) changes daemon_t; IKEv1+IKEv2 are defaults) ------------------
T0=$(date +%s)
./configure --prefix=/usr --sysconfdir=/etc --libdir=/usr/lib --libexecdir=/usr/lib \
	--enable-kernel-libipsec --enable-mediation --with-capabilities=native \
	--disable-gmp --disable-static >../configure.log 2>&1 ||
	die 5 "configure failed, see tail: $(tail -5 ../configure.log)"
T1=$(date +%s)

# ---- patch ----------------------------------------------------------------------
cp $P/kernel_libipsec_plugin.c ../kernel_libipsec_plugin.stock.c
awk '
/^#define TUN_DEFAULT_MTU 1400$/ { print; print "#define TUN_MAX_MTU 65535"; next }
/^\tprivate_kernel_libipsec_plugin_t \*this;$/ && !d1 { print; print "\tint mtu;"; d1=1; next }
/^\tif \(!this->tun->set_mtu\(this->tun, TUN_DEFAULT_MTU\) \|\|$/ {
  print "\t/* backhaul: configurable TUN MTU; tun_device_t also sizes its read buffer"
  print "\t * from the MTU cached here, so the device MTU can later be changed with"
  print "\t * `ip link set ipsecN mtu X` for any X <= this value */"
  print "\tmtu = lib->settings->get_int(lib->settings,"
  print "\t\t\t\t\"%s.plugins.kernel-libipsec.mtu\", TUN_DEFAULT_MTU, lib->ns);"
  print "\tif (mtu < 576 || mtu > TUN_MAX_MTU)"
  print "\t{"
  print "\t\tDBG1(DBG_KNL, \"invalid kernel-libipsec MTU %d, using %d\", mtu, TUN_DEFAULT_MTU);"
  print "\t\tmtu = TUN_DEFAULT_MTU;"
  print "\t}"
  print "\tDBG1(DBG_KNL, \"kernel-libipsec TUN MTU/read buffer: %d (backhaul patch)\", mtu);"
  print "\tif (!this->tun->set_mtu(this->tun, mtu) ||"
  n++; next }
{ print }
END { if (n != 1 || !d1) exit 1 }' ../kernel_libipsec_plugin.stock.c > $P/kernel_libipsec_plugin.c ||
	die 5 "patch did not apply to $P/kernel_libipsec_plugin.c"

# ---- compile: stock (for the ABI check) and patched ------------------------------
CF="-DHAVE_CONFIG_H -I. -I$P -Isrc/libstrongswan -Isrc/libcharon -Isrc/libipsec -include config.h
    -O2 -g -fPIC -fstack-protector-strong -fcf-protection -D_FORTIFY_SOURCE=2 -Wno-format"
LF="-shared -Wl,-O1 -Wl,-z,relro -Wl,-z,now -Wl,-rpath,/usr/lib/ipsec -Wl,-soname,libstrongswan-kernel-libipsec.so"
build() { # $1 outdir $2 plugin.c
	mkdir -p "$1"
	gcc $CF -c "$2" -o "$1/p.o" &&
	gcc $CF -c $P/kernel_libipsec_ipsec.c -o "$1/i.o" &&
	gcc $CF -c $P/kernel_libipsec_router.c -o "$1/r.o" &&
	gcc $LF -o "$1/libstrongswan-kernel-libipsec.so" "$1/p.o" "$1/i.o" "$1/r.o" /usr/lib/ipsec/libipsec.so.0
}
build ../stock ../kernel_libipsec_plugin.stock.c >../build.log 2>&1 || die 5 "stock compile failed: $(tail -5 ../build.log)"
build ../patched $P/kernel_libipsec_plugin.c >>../build.log 2>&1 || die 5 "patched compile failed: $(tail -5 ../build.log)"
T2=$(date +%s)

# ---- ABI check: the vtable/struct offsets used by indirect calls in our rebuilt
# STOCK plugin must equal those of the installed plugin (catches header/config drift)
vt() { objdump -d --no-show-raw-insn "$1" | grep -oE '(call|jmp) +\*0x[0-9a-f]+\(%r[a-z0-9]+\)' |
	grep -v '%rip' | grep -oE '0x[0-9a-f]+' | sort | uniq -c; }
vt "$PLUGIN" > ../vt.installed; vt ../stock/libstrongswan-kernel-libipsec.so > ../vt.rebuilt
[ -s ../vt.installed ] && cmp -s ../vt.installed ../vt.rebuilt ||
	die 6 "ABI check failed: rebuilt stock plugin uses different struct/vtable offsets than $PLUGIN ($(diff ../vt.installed ../vt.rebuilt | head -3 | tr '\n' ' '))"
nm -D --defined-only ../patched/libstrongswan-kernel-libipsec.so | grep -q ' T kernel_libipsec_plugin_create$' ||
	die 6 "patched plugin lacks kernel_libipsec_plugin_create"

# ---- install into cache atomically ------------------------------------------------
mkdir -p "$(dirname "$CACHE")"
NEW=$(mktemp -d "$CACHE.new.XXXXXX")
cp ../patched/libstrongswan-kernel-libipsec.so "$NEW/"
diff -u ../kernel_libipsec_plugin.stock.c $P/kernel_libipsec_plugin.c > "$NEW/kernel-libipsec-mtu.patch" || true
{
	fingerprint
	echo "source=strongswan $SRCVER"
	echo "abi-check=ok ($(awk '{s+=$1}END{print s}' ../vt.installed) indirect calls, identical offsets)"
	echo "configure-seconds=$((T1 - T0)) compile-seconds=$((T2 - T1))"
	echo "built=$(date -u +%FT%TZ)"
	echo "setting=charon.plugins.kernel-libipsec.mtu (default 1400)"
} > "$NEW/BUILD-INFO"
chmod 755 "$NEW"
rm -rf "$CACHE.old"; [ -e "$CACHE" ] && mv "$CACHE" "$CACHE.old"
mv "$NEW" "$CACHE"; rm -rf "$CACHE.old"
log "built in $((T2 - T0))s (configure $((T1 - T0))s, compile $((T2 - T1))s) -> $CACHE"
echo "$CACHE/libstrongswan-kernel-libipsec.so"
