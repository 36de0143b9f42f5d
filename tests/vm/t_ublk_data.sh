#!/bin/bash
# What is written through /dev/ublkbN is on the backing file at the same
# offsets (and reads back through the device); FLUSH and FUA reach the
# daemon (its counters move); DISCARD and WRITE_ZEROES zero the range on the
# backing file and nothing else; the metadata behind the data area survives
# a write to the device's last block. Both backing engines.
# timeout: 300
set -uo pipefail
# shellcheck source=tests/vm/lib.sh
. "$(dirname "$0")/lib.sh"
vm_run_self --mem 1024 --cpus 2 --timeout 280 -- "$@"

# ---- in the guest from here on
set -e
# shellcheck source=tests/integration/lib.sh
. "$VM_TOP/tests/integration/lib.sh"
require_bin duetctl duetd
require_cmd jq blockdev blkdiscard cmp dd
export DUET_NODE=alpha
cd "$T"

json() { jq -r "$1" <<<"$OUT"; }
counter() {	# counter NAME: an io counter from status
	expect_rc 0 "$DUETCTL" status r0 --json
	json ".io.$1"
}

# region FILE OFFSET LEN: LEN bytes of FILE from OFFSET
region() {
	dd if="$1" iflag=skip_bytes,count_bytes skip="$2" count="$3" \
		status=none
}

one_engine() {
	local eng=$1 dev size off len i f0 f1 before
	step "patterns through the $eng engine"
	mk_sparse "$T/alpha.img" 64M
	write_resource r0 nodes=alpha extra="io-engine = \"$eng\";"
	expect_rc 0 "$DUETCTL" create-md r0 --force
	expect_rc 0 "$DUETCTL" dump-md r0 --json
	local sb_before
	sb_before=$(json '.superblock | del(.seq, .flags, .flag_names)')
	expect_rc 0 "$DUETCTL" up r0
	expect_rc 0 "$DUETCTL" status r0 --json
	dev=$(json .device)
	size=$(blockdev --getsize64 "$dev")

	# offsets in bytes and lengths: aligned, 512-aligned odd, a large
	# one spanning two 4 MiB AL extents, and the very last sector
	local -a offs=(0 12288 1049088 $(((4 << 20) - 65536)) $((size - 512)))
	local -a lens=(4096 1536 8192 131072 512)
	for i in "${!offs[@]}"; do
		head -c "${lens[i]}" /dev/urandom >"$T/p$i"
		dd if="$T/p$i" of="$dev" bs="${lens[i]}" count=1 \
			seek="${offs[i]}" oflag=direct,seek_bytes status=none ||
			fail "dd to $dev at ${offs[i]} failed"
	done
	for i in "${!offs[@]}"; do
		cmp <(region "$T/alpha.img" "${offs[i]}" "${lens[i]}") "$T/p$i" ||
			fail "backing file differs at ${offs[i]} (+${lens[i]})"
		cmp <(dd if="$dev" iflag=direct,skip_bytes,count_bytes \
			skip="${offs[i]}" count="${lens[i]}" bs=512 status=none) \
			"$T/p$i" || fail "device reads back wrong at ${offs[i]}"
	done
	# nothing else was written: the bytes right around stay zero
	cmp <(region "$T/alpha.img" 4096 8192) <(head -c 8192 /dev/zero) ||
		fail "bytes between the patterns changed"

	step "FLUSH and FUA reach the daemon ($eng)"
	before=$(counter flushes)
	dd if=/dev/zero of="$dev" bs=4096 count=1 seek=100 oflag=direct \
		conv=fsync status=none
	[ "$(counter flushes)" -gt "$before" ] ||
		fail "fsync of $dev sent no FLUSH to duetd"
	before=$(counter fua_writes)
	dd if="$T/p0" of="$dev" bs=4096 count=1 seek=200 oflag=direct,dsync \
		status=none
	[ "$(counter fua_writes)" -gt "$before" ] ||
		fail "an O_DSYNC write reached duetd without FUA"
	cmp <(region "$T/alpha.img" $((200 * 4096)) 4096) "$T/p0" ||
		fail "FUA write not on the backing file"

	step "FLUSH after only FUA writes needs no fdatasync ($eng)"
	# everything so far is flushed or FUA: this FLUSH is elided...
	dd if=/dev/zero of="$dev" bs=4096 count=1 seek=300 oflag=direct \
		conv=fsync status=none
	before=$(counter flushes_elided)
	local real
	real=$(($(counter flushes) - before))
	dd if="$T/p0" of="$dev" bs=4096 count=1 seek=301 \
		oflag=direct,dsync conv=fsync status=none
	[ "$(counter flushes_elided)" -gt "$before" ] ||
		fail "FLUSH after a FUA write was not elided"
	# ...but one after a plain write is not
	before=$(counter flushes_elided)
	dd if="$T/p0" of="$dev" bs=4096 count=1 seek=302 oflag=direct \
		conv=fsync status=none
	assert_eq "$(counter flushes_elided)" "$before" \
		"elided FLUSHes after a plain write"
	[ $(($(counter flushes) - before)) -gt "$real" ] ||
		fail "FLUSH after a plain write did not reach the engine"

	step "DISCARD and WRITE_ZEROES ($eng)"
	head -c $((3 << 20)) /dev/urandom >"$T/big"
	dd if="$T/big" of="$dev" bs=1M seek=8 oflag=direct status=none
	before=$(counter discards)
	blkdiscard -o $((8 << 20)) -l $((1 << 20)) "$dev"
	[ "$(counter discards)" -gt "$before" ] || fail "no DISCARD counted"
	before=$(counter write_zeroes)
	blkdiscard -z -o $((10 << 20)) -l $((512 << 10)) "$dev"
	[ "$(counter write_zeroes)" -gt "$before" ] ||
		fail "no WRITE_ZEROES counted"
	cmp <(region "$T/alpha.img" $((8 << 20)) $((1 << 20))) \
		<(head -c $((1 << 20)) /dev/zero) || fail "discarded range not zero"
	cmp <(region "$T/alpha.img" $((10 << 20)) $((512 << 10))) \
		<(head -c $((512 << 10)) /dev/zero) || fail "zeroed range not zero"
	cmp <(region "$T/alpha.img" $((9 << 20)) $((1 << 20))) \
		<(region "$T/big" $((1 << 20)) $((1 << 20))) ||
		fail "data between the ranges changed"
	cmp <(region "$T/alpha.img" $(((10 << 20) + (512 << 10))) $((512 << 10))) \
		<(region "$T/big" $(((2 << 20) + (512 << 10))) $((512 << 10))) ||
		fail "data after the zeroed range changed"
	expect_rc 0 "$DUETCTL" status r0 --json
	assert_eq "$(json .io.errors)" 0 "I/O errors"

	expect_rc 0 "$DUETCTL" down r0
	# the metadata behind the last data sector is intact
	expect_rc 0 "$DUETCTL" dump-md r0 --json
	assert_eq "$(json '.superblock | del(.seq, .flags, .flag_names)')" \
		"$sb_before" "superblock after the run"
	cmp <(region "$T/alpha.img" $((size - 512)) 512) "$T/p4" ||
		fail "last data sector lost after stop"
}

one_engine io_uring
one_engine libaio
pass
