#!/bin/bash
# duet's main job on one machine (run by `make demo`, see README).
#
# 1. a file-backed disk gets duet metadata (create-md) and we look at it
#    (dump-md, human and JSON);
# 2. the resource comes up as a ublk block device — on this kernel when it has
#    ublk, else inside the bundled test kernel (kernel/vm/duet-vm) — gets an
#    ext4 filesystem with a file on it, shows its status, and goes down.
#
# Everything lives in $DEMO_DIR (default: /var/tmp/duet-demo) and is removed at
# the end unless DEMO_KEEP=1.
set -euo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
DUETCTL=${DUET_BUILD:-$TOP/build}/duetctl
DEMO_DIR=${DEMO_DIR:-/var/tmp/duet-demo}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

# $1: the disk holding r0's data and metadata (the image itself, or the
# guest's /dev/vda when it is attached to the test kernel).
device_part() {
	local disk=$1 dev etc=/run/duet-demo/etc mnt=/run/duet-demo/mnt
	export DUET_CONFIG_DIR=$etc DUET_RUN_DIR=/run/duet-demo/run DUET_NODE=alpha
	mkdir -p "$etc" "$mnt" "$DUET_RUN_DIR"
	sed "s|disk = \"[^\"]*\"|disk = \"$disk\"|" "$CONF" >"$etc/r0.conf"
	step "bring the device up"
	run "$DUETCTL" up r0
	run "$DUETCTL" status r0
	dev=$("$DUETCTL" status r0 --json | jq -r '.device')
	step "a filesystem on $dev"
	run mkfs.ext4 -q -F "$dev"
	run mount "$dev" "$mnt"
	run dd if=/dev/urandom of="$mnt/hello.bin" bs=1M count=16 status=none
	run sync
	run sha256sum "$mnt/hello.bin"
	run umount "$mnt"
	run fsck.ext4 -n "$dev"
	run "$DUETCTL" status r0
	step "take it down"
	run "$DUETCTL" down r0
	printf '$ duetctl dump-md r0 --json | jq ...   # the writes left hot extents in the activity log\n'
	"$DUETCTL" dump-md r0 --json | jq -cM '{flags: .superblock.flags,
		al_active: .activity_log.active, dirty_bytes: .bitmap.dirty_bytes}'
}

if [ "${1:-}" = "--device-part" ]; then
	CONF=$2
	device_part "$3"
	exit 0
fi

rm -rf "$DEMO_DIR"
mkdir -p "$DEMO_DIR/etc" "$DEMO_DIR/run"
trap '[ "${DEMO_KEEP:-0}" = 1 ] || rm -rf "$DEMO_DIR"' EXIT

step "a 1 GiB file-backed disk and a resource file"
run truncate -s 1G "$DEMO_DIR/alpha.img"
cat >"$DEMO_DIR/etc/r0.conf" <<EOF
# one node for now: replication arrives with the next issue
resource = "r0";
io-engine = "io_uring";
queues = 2;
nodes = (
  { name = "alpha"; id = 0; disk = "$DEMO_DIR/alpha.img"; meta-disk = "internal"; }
);
EOF
cat "$DEMO_DIR/etc/r0.conf"
export DUET_CONFIG_DIR=$DEMO_DIR/etc DUET_RUN_DIR=$DEMO_DIR/run DUET_NODE=alpha
run "$DUETCTL" show r0

step "create the metadata"
run "$DUETCTL" create-md r0

step "look at it"
run "$DUETCTL" dump-md r0
printf '$ duetctl dump-md r0 --json | jq ...\n'
"$DUETCTL" dump-md r0 --json | jq -cM '{version: .superblock.version, data_bytes: .superblock.data_bytes,
	dirty_bytes: .bitmap.dirty_bytes, al_slots: .activity_log.nr_slots}'

step "refusals are clear"
printf '$ duetctl create-md r0   # again, without --force\n'
"$DUETCTL" create-md r0 || echo "(exit $?: refused, as it should be)"

if [ -e /dev/ublk-control ] || modprobe ublk_drv 2>/dev/null; then
	"$0" --device-part "$DEMO_DIR/etc/r0.conf" "$DEMO_DIR/alpha.img"
elif [ -x "$TOP/kernel/vm/duet-vm" ]; then
	step "this kernel has no ublk: continuing in the test kernel (qemu), the image as /dev/vda"
	"$TOP/kernel/vm/duet-vm" run --timeout 300 --disk "$DEMO_DIR/alpha.img" -- \
		"$0" --device-part "$DEMO_DIR/etc/r0.conf" /dev/vda
else
	echo "no ublk here and no test kernel harness: skipping the device part"
fi
step "done"
