#!/bin/bash
# duet's main job on one machine (run by `make demo`, see README): a
# replicated disk with two nodes, alpha and beta, each in its own network
# namespace, each on its own file-backed disk.
#
#  1. the resource file, metadata on both disks (create-md, dump-md);
#  2. both nodes up; alpha made Primary with --force: the initial sync, with
#     its progress;
#  3. an ext4 filesystem with files on alpha's /dev/ublkbN (replicated);
#  4. alpha crashes (kill -9 of its daemon); beta is promoted, mounts the
#     filesystem: the files are intact; beta writes more while alpha is away;
#  5. alpha comes back: it rejoins as Secondary and resyncs only what
#     changed, not the whole disk; both disks end byte-identical.
# `duetctl status` at each step.
#
# ublk is needed for the block device: on a kernel without it (or without
# the permission to load it) the device part runs inside the bundled test
# kernel (kernel/vm/duet-vm), with the two disk images attached to it.
# Everything lives in $DEMO_DIR (default /var/tmp/duet-demo), removed at the
# end unless DEMO_KEEP=1.
set -euo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${DUET_BUILD:-$TOP/build}
DUETCTL=$BUILD/duetctl
DEMO_DIR=${DEMO_DIR:-/var/tmp/duet-demo}
SIZE=${DEMO_SIZE:-256M}

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# resource FILE DISK_A DISK_B: the two-node resource file
resource() {
	cat >"$1" <<EOF
resource = "r0";
protocol = "C";                  # a write completes once both disks have it
secret = "demo-shared-secret";   # peers authenticate each other (HMAC)
resync-rate = "48M";             # slow enough to watch the initial sync
csums-alg = "crc32c";            # resync sends only blocks whose checksums differ
al-extents = 16;                 # activity log hot set: 16 x 4 MiB may be
                                 # out of sync after a crash of the Primary
queues = 2;
queue-depth = 32;
reconnect-min = 200;
reconnect-max = 1000;
nodes = (
  { name = "alpha"; id = 0; address = "10.91.0.1:7789";
    disk = "$2"; meta-disk = "internal"; },
  { name = "beta";  id = 1; address = "10.91.0.2:7789";
    disk = "$3"; meta-disk = "internal"; }
);
EOF
}

# ---------------------------------------------------------------- device part
# Runs where ublk is: $1 $2 are alpha's and beta's disks, $3 a scratch dir.

A() { ip netns exec demo-a "$DUETCTL" --node alpha --run-dir "$SCRATCH/ra" "$@"; }
B() { ip netns exec demo-b "$DUETCTL" --node beta --run-dir "$SCRATCH/rb" "$@"; }
field() { "$1" status r0 --json 2>/dev/null | jq -r "$2"; }

# wait_for SECONDS WHAT CMD...: poll until CMD succeeds
wait_for() {
	local t=$(($1 * 5)) what=$2
	shift 2
	while ! "$@"; do
		t=$((t - 1))
		[ "$t" -gt 0 ] || die "gave up waiting for: $what"
		sleep 0.2
	done
}
state_is() { [ "$(field A .state)" = "$1" ] || [ "$(field B .state)" = "$1" ]; }
conn_is() { [ "$(field "$1" .connection)" = "$2" ]; }

# progress NODE: print the resync figures once a second until it ends
progress() {
	local n=$1 j
	while j=$("$n" status r0 --json 2>/dev/null) &&
		[ "$(jq -r .resync <<<"$j")" != null ]; do
		jq -r '.resync | "  resync: \(.done_bytes / 1048576 | floor) MiB done, \(.left_bytes / 1048576 | floor) MiB left, \(.rate_bps / 1048576 | floor) MiB/s, ETA \(.eta_s // "?") s"' <<<"$j"
		sleep 1
	done
}

data_sha() {	# data_sha NODE DISK: sha256 of the data area
	head -c "$(field "$1" .data_bytes)" "$2" | sha256sum | cut -c1-16
}

device_part() {
	local da=$1 db=$2 mnt dev
	SCRATCH=$3
	export DUET_CONFIG_DIR=$SCRATCH/etc
	mnt=$SCRATCH/mnt
	mkdir -p "$DUET_CONFIG_DIR" "$SCRATCH/ra" "$SCRATCH/rb" "$mnt"
	resource "$DUET_CONFIG_DIR/r0.conf" "$da" "$db"
	trap 'A down r0 >/dev/null 2>&1 || true; B down r0 >/dev/null 2>&1 || true;
	      ip netns del demo-a 2>/dev/null || true; ip netns del demo-b 2>/dev/null || true' EXIT

	bold "two network namespaces joined by a veth pair: alpha 10.91.0.1, beta 10.91.0.2"
	ip netns add demo-a
	ip netns add demo-b
	ip link add demo-a-v type veth peer name demo-b-v
	ip link set demo-a-v netns demo-a
	ip link set demo-b-v netns demo-b
	ip -n demo-a addr add 10.91.0.1/24 dev demo-a-v
	ip -n demo-b addr add 10.91.0.2/24 dev demo-b-v
	for n in a b; do
		ip -n "demo-$n" link set "demo-$n-v" up
		ip -n "demo-$n" link set lo up
	done

	bold "both nodes up: each serves /dev/ublkbN, both Secondary, connected"
	run A up r0
	run B up r0
	wait_for 20 "the connection" conn_is A Connected
	run A status r0

	bold "alpha becomes Primary (--force: a new pair, its data is declared the newest): initial sync"
	run A primary r0 --force
	progress A
	wait_for 120 "the initial sync" state_is \
		"Primary/Secondary UpToDate/UpToDate Connected Established"
	run A status r0
	grep 'resync to beta done' "$SCRATCH/ra/r0.log" | tail -1 | sed 's/^/  log: /'

	dev=$(field A .device)
	bold "a filesystem on alpha's $dev, files on it (every write also lands on beta)"
	run mkfs.ext4 -q -F "$dev"
	run mount "$dev" "$mnt"
	run dd if=/dev/urandom of="$mnt/orders.db" bs=1M count=24 status=none
	run cp -r "$TOP/docs" "$mnt/docs"
	(cd "$mnt" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$SCRATCH/files.sha"
	echo "  $(wc -l <"$SCRATCH/files.sha") files, checksums kept in $SCRATCH/files.sha"
	run umount "$mnt"
	run A status r0

	bold "alpha crashes: kill -9 of its daemon"
	run kill -9 "$(field A .pid)"
	wait_for 30 "beta noticing" conn_is B Connecting
	run B status r0

	bold "failover: beta becomes Primary and mounts the filesystem"
	run B primary r0
	dev=$(field B .device)
	run mount "$dev" "$mnt"
	printf '\033[2m$ (cd %s && sha256sum -c --quiet files.sha)\033[0m\n' "$mnt"
	(cd "$mnt" && sha256sum -c --quiet "$SCRATCH/files.sha") ||
		die "files differ after the failover"
	echo "  every file intact on beta"
	run dd if=/dev/urandom of="$mnt/orders-after-failover.db" bs=1M count=8 status=none
	run sync
	run B status r0
	echo "  beta's bitmap now marks what alpha misses: $(field B .bitmap.dirty_bytes) bytes"

	bold "alpha returns: it knows it crashed as Primary, rejoins as Secondary and resyncs only what changed"
	run A up r0
	wait_for 30 "the reconnect" conn_is A Connected
	progress B
	wait_for 60 "the resync" state_is \
		"Primary/Secondary UpToDate/UpToDate Connected Established"
	grep 'resync to alpha done' "$SCRATCH/rb/r0.log" | tail -1 | sed 's/^/  log: /'
	echo "  (the device is $(field B .data_bytes) bytes: the resync covered beta's writes since the"
	echo "  failover and the extents alpha's activity log held when it crashed; of those, only"
	echo "  blocks whose checksums differed were sent)"
	run A status r0
	run B status r0

	bold "both disks byte-identical"
	run umount "$mnt"
	echo "  alpha's data area: $(data_sha A "$da")"
	echo "  beta's data area:  $(data_sha B "$db")"
	[ "$(data_sha A "$da")" = "$(data_sha B "$db")" ] || die "the disks differ"
	run B down r0
	run A down r0
}

if [ "${1:-}" = "--device-part" ]; then
	shift
	device_part "$@"
	exit 0
fi

# ---------------------------------------------------------------- host part
[ -x "$DUETCTL" ] || die "$DUETCTL is missing: run make first"
rm -rf "$DEMO_DIR"
mkdir -p "$DEMO_DIR/etc"
trap '[ "${DEMO_KEEP:-0}" = 1 ] || rm -rf "$DEMO_DIR"' EXIT

bold "two $SIZE file-backed disks and the resource file"
run truncate -s "$SIZE" "$DEMO_DIR/alpha.img" "$DEMO_DIR/beta.img"
resource "$DEMO_DIR/etc/r0.conf" "$DEMO_DIR/alpha.img" "$DEMO_DIR/beta.img"
cat "$DEMO_DIR/etc/r0.conf"
export DUET_CONFIG_DIR=$DEMO_DIR/etc

bold "metadata on both disks"
run "$DUETCTL" --node alpha create-md r0
run "$DUETCTL" --node beta create-md r0
run "$DUETCTL" --node alpha dump-md r0

if [ -e /dev/ublk-control ] || modprobe ublk_drv 2>/dev/null; then
	"$0" --device-part "$DEMO_DIR/alpha.img" "$DEMO_DIR/beta.img" \
		"$DEMO_DIR/scratch"
elif [ -x "$TOP/kernel/vm/duet-vm" ]; then
	bold "this kernel has no ublk: the rest runs in the test kernel (qemu), the images as /dev/vda and /dev/vdb"
	"$TOP/kernel/vm/duet-vm" run --mem 1024 --cpus 2 --timeout 600 \
		--disk "$DEMO_DIR/alpha.img" --disk "$DEMO_DIR/beta.img" -- \
		"$0" --device-part /dev/vda /dev/vdb /tmp/duet-demo
else
	die "no ublk here and no test kernel harness"
fi
bold "done"
