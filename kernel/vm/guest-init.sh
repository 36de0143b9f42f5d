#!/bin/busybox sh
# PID 1 of the duet test guest (busybox sh; the host side is kernel/vm/duet-vm).
#
# duet-vm appends this file as /init, plus /ctl/{conf,env,cmd}, to the cached
# initramfs of every run, so editing it never needs a new `duet-vm prepare`.
#
# It mounts the host's root (9p, read-only) on /host, gives it fresh /proc,
# /sys, /dev, /tmp and /run, makes the test kernel's module tree appear at
# /lib/modules/$(uname -r) there, loads the modules asked for, then runs the
# command chrooted in /host with stdout on ttyS0 and stderr on ttyS1. The
# exit status goes back on ttyS0 as one marker line carrying the run's nonce,
# so nothing the command prints can fake it. Any failure before the command
# runs powers off without a marker: the host reports that as a boot failure.

export PATH=/bin
/bin/busybox mkdir -p /proc /sys /dev /bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

. /ctl/conf

# The initramfs has no /dev/console node (building one needs root), so the
# kernel started us with no open descriptors: attach them now.
exec </dev/null >/dev/ttyS0 2>&1

# --trace: guest uptime at each step, on stderr.
trace() {
	[ "$TRACE" = 1 ] && echo "duet-vm guest: [$(cut -d' ' -f1 /proc/uptime)] $*" >&2
}

flush_ttys() {
	for t in $ERR_TTY $OUT_TTY; do
		stty -F "$t" raw -echo 2>/dev/null
	done
}

halt_now() {
	sync
	# Not even "reboot: Power down" (printed at KERN_EMERG) after this.
	[ "$VERBOSE" = 1 ] || echo 0 >/proc/sys/kernel/printk
	flush_ttys
	# The UART is drained, but qemu may still hold console bytes it could
	# not yet write to a slow reader on the host (seen under load: the last
	# lines, exit marker included, were lost at power-off). Give it time.
	sleep 1
	poweroff -f
	sleep 5 # poweroff -f does not return; never let PID 1 exit
}

die() {
	echo "duet-vm guest: $*" >&2
	if [ "$DEBUG" = 1 ]; then
		echo "duet-vm guest: debug shell on the console; exit to power off" >&2
		setsid -c sh -i <"$OUT_TTY" >"$OUT_TTY" 2>&1
	fi
	halt_now
}

# The command's stdout shares ttyS0 with the kernel console (kept quiet but
# for oopses and panics); its stderr has ttyS1 to itself. Raw ports: no
# "\n" -> "\r\n", no echo. Setting a mode also waits for the port to drain
# (TCSADRAIN), which flush_ttys relies on before power-off.
exec >"$OUT_TTY" 2>"$ERR_TTY"
for t in $OUT_TTY $ERR_TTY; do
	stty -F "$t" raw -echo
done
[ -n "$TTY_ROWS" ] && stty -F "$OUT_TTY" rows "$TTY_ROWS" cols "$TTY_COLS"
trace "init started"

for m in $(cat /lib/early/order); do
	insmod "/lib/early/$m.ko" || die "insmod $m failed"
done

# --- the host's root, read-only, with fresh kernel file systems -----------
mkdir -p /host /orig /layer
mount -t 9p -o "trans=virtio,version=9p2000.L,ro,msize=$MSIZE,cache=$ROOT_CACHE" \
	host /host || die "cannot mount the host root (9p tag 'host')"
# A second, plain view of the same 9p mount: the tmpfs mounts below hide
# /tmp and /run in /host, and paths under them are re-exposed from here.
mount -o bind /host /orig || die "bind /host"
trace "host root mounted"

mount -t proc proc /host/proc || die "mount /proc"
mount -t sysfs sysfs /host/sys || die "mount /sys"
mount -t devtmpfs devtmpfs /host/dev || die "mount /dev"
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /host/dev/pts
mount -t tmpfs -o mode=1777 shm /host/dev/shm
ln -sf /proc/self/fd /host/dev/fd
ln -sf /proc/self/fd/0 /host/dev/stdin
ln -sf /proc/self/fd/1 /host/dev/stdout
ln -sf /proc/self/fd/2 /host/dev/stderr
mount -t tmpfs -o mode=1777 tmp /host/tmp || die "mount /tmp"
mount -t tmpfs -o mode=755 run /host/run || die "mount /run"
mount -t cgroup2 cgroup2 /host/sys/fs/cgroup 2>/dev/null
mount -t debugfs debugfs /host/sys/kernel/debug 2>/dev/null
mkdir -p /host/run/duet-vm/modules
cp /ctl/env /ctl/cmd /ctl/conf /host/run/duet-vm/

# Bring a directory of the read-only view back where a tmpfs now hides it.
reexpose() {
	case $1 in
	/tmp | /tmp/* | /run | /run/*)
		[ -d "/orig$1" ] || return 0
		mkdir -p "/host$1" && mount -o bind "/orig$1" "/host$1" ||
			die "cannot re-expose $1 under the guest's tmpfs"
		;;
	esac
}
reexpose "$CWD"

# --- the test kernel's modules at /lib/modules/$(uname -r) -----------------
# The host has no such directory and its root is read-only, so /usr/lib (or
# /lib when not merged) becomes a read-only overlay whose top layer holds only
# modules/$KVER, a link to a bind mount of the cached tree.
mount -o bind "/orig$KDIR/lib/modules/$KVER" /host/run/duet-vm/modules ||
	die "module tree $KDIR/lib/modules/$KVER not visible in the guest"
libdir=/lib
while [ -L "/orig$libdir" ]; do
	l=$(readlink "/orig$libdir")
	case $l in
	/*) libdir=$l ;;
	*) libdir=${libdir%/*}/$l ;;
	esac
done
mkdir -p /layer/modules
ln -s /run/duet-vm/modules "/layer/modules/$KVER"
mount -t overlay -o "lowerdir=/layer:/orig$libdir" overlay "/host$libdir" ||
	die "cannot overlay $libdir to add modules/$KVER"

trace "module tree in place"

# Kernel-initiated loads (request_module: "ip link add type veth", netem,
# "rdma link add") run the helper in our root, not in the chroot.
printf '#!/bin/sh\nexec /bin/chroot /host /sbin/modprobe "$@"\n' >/bin/duet-modprobe
chmod 755 /bin/duet-modprobe
echo /bin/duet-modprobe >/proc/sys/kernel/modprobe

# Modules the initramfs carries go in with insmod, the rest with modprobe.
load_module() {
	mod=$(echo "$1" | tr - _)
	if [ -f "/lib/carried/$mod.order" ]; then
		for d in $(cat "/lib/carried/$mod.order"); do
			grep -q "^$d " /proc/modules && continue
			insmod "/lib/carried/$d.ko" || return 1
		done
		return 0
	fi
	chroot /host /sbin/modprobe "$1"
}
for m in $MODULES; do
	load_module "$m" || die "modprobe $m failed"
done

trace "modules loaded: $MODULES"

# virtio-blk disks come up as vda, vdb... in the order of --disk.
ndisks() {
	n=0
	for d in /host/dev/vd[a-z] /host/dev/vd[a-z][a-z]; do
		[ -b "$d" ] && n=$((n + 1))
	done
	echo $n
}
i=0
while [ "$(ndisks)" -lt "$NDISKS" ]; do
	i=$((i + 1))
	[ $i -gt 100 ] && die "only $(ndisks) of $NDISKS disks appeared"
	sleep 0.1
done

# --- writable shares (duet-vm sorts them: parents before nested ones) ------
i=0
while [ $i -lt "$NSHARES" ]; do
	eval "p=\$SHARE_$i"
	# shellcheck disable=SC2154 # p is set by the eval
	case $p in
	/tmp | /tmp/* | /run | /run/*) mkdir -p "/host$p" ;;
	esac
	mount -t 9p -o "trans=virtio,version=9p2000.L,msize=$MSIZE,cache=mmap" \
		"share$i" "/host$p" || die "cannot mount share $p"
	i=$((i + 1))
done

# Mounts shared, as systemd makes them on a real host: a mount namespace
# made later (ip netns exec) then follows mounts and unmounts done here
# instead of keeping its own copy of a filesystem alive.
chroot /host /bin/mount --make-rshared / || trace "mount --make-rshared failed"
ip link set lo up
hostname duet-vm
trace "starting the command"

# --- the command ------------------------------------------------------------
if [ "$MODE" = shell ]; then
	# A terminal again (signals, line editing) for the interactive shell.
	stty -F "$OUT_TTY" sane
	env -i chroot /host /bin/bash -c \
		'. /run/duet-vm/env; cd "$1" || cd /; exec setsid -c -w bash -i' \
		duet-vm "$CWD" <"$OUT_TTY" >"$OUT_TTY" 2>&1
	halt_now
fi

# Every exec costs ~0.1 s under TCG: busybox's env and chroot (static, in
# this initramfs), then one bash that sources the command.
env -i chroot /host /bin/bash -c \
	'. /run/duet-vm/env; cd "$1" || exit 125; shift; . /run/duet-vm/cmd' \
	duet-vm "$CWD" </dev/null >"$OUT_TTY" 2>"$ERR_TTY"
rc=$?
sync
flush_ttys
echo "@@DUET-VM $NONCE EXIT $rc@@"
halt_now
