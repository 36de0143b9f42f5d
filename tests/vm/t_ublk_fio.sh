#!/bin/bash
# The ublk device under fio --verify=crc32c: random writes of mixed sizes
# over the whole device from two jobs on two hardware queues, then every
# block read back and checked, with duetd's io_uring engine (fio on
# io_uring) and its libaio engine (fio on libaio). `duetctl up/status/down`
# drive the daemon; the counters must show the I/O and no error, and
# nothing may be left under /dev/ublk* afterwards.
# timeout: 420
set -uo pipefail
# shellcheck source=tests/vm/lib.sh
. "$(dirname "$0")/lib.sh"
vm_run_self --mem 1024 --cpus 2 --timeout 400 -- "$@"

# ---- in the guest from here on
set -e
# shellcheck source=tests/integration/lib.sh
. "$VM_TOP/tests/integration/lib.sh"
require_bin duetctl duetd
require_cmd fio jq blockdev
export DUET_NODE=alpha
cd "$T"

json() { jq -r "$1" <<<"$OUT"; }

no_ublk_devices() {
	! compgen -G '/dev/ublkb*' >/dev/null && ! compgen -G '/dev/ublkc*' >/dev/null
}

# one_engine DUETD_ENGINE FIO_ENGINE
one_engine() {
	local eng=$1 fio_eng=$2 dev size half
	step "duetd engine $eng, fio engine $fio_eng"
	mk_sparse "$T/alpha.img" 256M
	write_resource r0 nodes=alpha \
		extra="io-engine = \"$eng\"; queues = 2; queue-depth = 64;"
	expect_rc 0 "$DUETCTL" create-md r0 --force
	expect_rc 0 "$DUETCTL" up r0
	expect_rc 0 "$DUETCTL" status r0 --json
	dev=$(json .device)
	assert_eq "$(json .engine)" "$eng" "engine in status"
	assert_eq "$(json .queues)" 2 "hardware queues"
	assert_eq "$(json .state)" running "daemon state"
	[ -b "$dev" ] || fail "$dev is not a block device"
	size=$(blockdev --getsize64 "$dev")
	assert_eq "$size" "$(json .data_bytes)" "device size = data area"
	half=$(((size / 2) & ~65535))

	# Two jobs, one per half, random writes of 4-64 KiB all over it;
	# each job then reads back and verifies everything it wrote.
	run fio --name=verify --filename="$dev" --ioengine="$fio_eng" \
		--direct=1 --rw=randwrite --bsrange=4k-64k --iodepth=16 \
		--numjobs=2 --size="$half" --offset_increment="$half" \
		--io_size=12M --verify=crc32c --do_verify=1 --verify_fatal=1 \
		--group_reporting
	[ "$RC" -eq 0 ] || fail "fio verify failed (exit $RC)"
	assert_contains "$OUT" "err= 0" "fio error count"
	# and a pass of random reads at depth over the whole device
	run fio --name=rread --filename="$dev" --ioengine="$fio_eng" \
		--direct=1 --rw=randread --bs=4k --iodepth=32 --numjobs=2 \
		--io_size=4M --group_reporting
	[ "$RC" -eq 0 ] || fail "fio randread failed (exit $RC)"

	expect_rc 0 "$DUETCTL" status r0 --json
	[ "$(json .io.writes)" -gt 0 ] || fail "no writes counted"
	[ "$(json .io.reads)" -gt 0 ] || fail "no reads counted"
	[ "$(json .io.write_bytes)" -ge $((24 << 20)) ] ||
		fail "write_bytes $(json .io.write_bytes) < 24 MiB"
	assert_eq "$(json .io.errors)" 0 "I/O errors"
	assert_eq "$(json .md_error)" null "metadata error"
	[ "$(json .al.transactions)" -gt 0 ] ||
		fail "writes to cold extents wrote no AL transaction"

	expect_rc 0 "$DUETCTL" down r0
	wait_until 10 no_ublk_devices || fail "ublk devices left: $(ls /dev/ublk*)"
	[ ! -e "$RUN_DIR/r0.sock" ] || fail "control socket left behind"
	[ ! -e "$RUN_DIR/r0.state" ] || fail "state file left after a clean stop"
	# a clean stop leaves a clean superblock
	expect_rc 0 "$DUETCTL" dump-md r0 --json
	assert_eq "$(json '.superblock.flag_names | index("primary")')" null \
		"primary flag after a clean stop"
	assert_eq "$(json '.superblock.flag_names | index("al-clean") != null')" \
		true "al-clean flag after a clean stop"
}

one_engine io_uring io_uring
one_engine libaio libaio
pass
