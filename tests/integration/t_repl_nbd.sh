#!/bin/bash
# Two-node replication on the host, both nodes on loopback and served over
# their NBD exports (the host has no ublk: duetd runs NBD-only when
# /dev/ublk-control is absent and nbd-listen is set):
#  - a fresh pair, `primary --force`: the full initial sync copies the whole
#    device (a pattern written to alpha's disk before `up` reaches beta);
#  - protocol C: fio --verify through the primary, then both data areas
#    byte-identical; the Secondary's device refuses writes (EROFS);
#  - the peer gone (stopped) while the primary writes: the writes go to the
#    bitmap, a new generation starts, and the reconnect resyncs only them;
#  - kill -9 of the secondary, then of the primary, in the middle of a
#    (rate-limited) resync: after the restart the resync resumes and ends
#    with identical disks;
#  - protocol C's promise: right after qemu-io's writes are acknowledged,
#    kill -9 both daemons: the secondary's disk holds every one of them.
# timeout: 180
set -uo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
require_cmd fio
# shellcheck source=tests/integration/pair.sh
. "$(dirname "$0")/pair.sh"

setup() {	# setup RATE
	mk_sparse "$T/alpha.img" 64M
	mk_sparse "$T/beta.img" 64M
	pair_resource "resync-rate = \"$1\"; reconnect-min = 100; reconnect-max = 500;"
	expect_rc 0 A create-md r0 --force
	expect_rc 0 B create-md r0 --force
}

step "fresh pair: primary --force starts the full initial sync"
setup 100M
qemu-io -f raw "$T/alpha.img" -c "write -P 0x5a 0 8M" >/dev/null ||
	fail "qemu-io on alpha.img"
expect_rc 0 A up r0
expect_rc 0 B up r0
wait_until 10 field_is A .connection Connected ||
	fail "no connection: $(status A .replication_stats.last_error)"
expect_rc 8 A primary r0
assert_contains "$ERR" "Inconsistent" "primary without --force"
expect_rc 0 A primary r0 --force
wait_until 30 synced || fail "initial sync did not end: $(status A .state)"
total=$(log_bytes)
data=$(status A .data_bytes)
assert_eq "$total" "$data" "initial sync bytes = device size"
assert_eq "$(status B .disk)" UpToDate "beta's disk"
assert_eq "$(status B .current_uuid)" "$(status A .current_uuid)" \
	"both on the same generation"
same_data "after the initial sync"

step "protocol C: fio --verify through the primary, identical replicas"
fio --name=w --ioengine=nbd --uri="$NA" --rw=randwrite --bs=4k-256k \
	--size=48M --io_size=24M --iodepth=8 --verify=crc32c --verify_fatal=1 \
	--do_verify=1 --direct=1 >"$T/fio.log" 2>&1 || {
	cat "$T/fio.log"
	fail "fio through alpha"
}
assert_eq "$(status A .replication_stats.not_acked)" 0 "writes the peer failed"
assert_eq "$(status A .bitmap.dirty_bytes)" 0 "bitmap while connected"
same_data "after fio"
run qemu-io -f raw "$NB" -c "write -P 0x11 0 4k"
# EROFS travels as NBD_EPERM
assert_eq "$RC" 1 "qemu-io's exit code for a write on the Secondary"
assert_contains "$OUT$ERR" "write failed: Operation not permitted" \
	"a write on the Secondary"
same_data "after the refused write"

step "peer stopped: writes go to the bitmap, the reconnect resyncs them"
expect_rc 0 B down r0
old_uuid=$(status A .current_uuid)
qemu-io -f raw "$NA" -c "write -P 0xc1 20M 3M" -c "write -P 0xc2 40M 1M" \
	>/dev/null || fail "qemu-io while the peer is down"
assert_eq "$(status A .bitmap.dirty_bytes)" $((4 * MiB)) \
	"bitmap after 4 MiB written alone"
assert_ne "$(status A .current_uuid)" "$old_uuid" "a new generation"
expect_rc 0 B up r0
wait_until 30 synced || fail "no resync after the reconnect"
assert_eq "$(log_bytes)" $((4 * MiB)) "resynced bytes = bytes written alone"
assert_eq "$(status A .bitmap.dirty_bytes)" 0 "bitmap after the resync"
same_data "after the bitmap resync"

step "secondary killed (-9) mid-resync, restarted: the resync resumes"
expect_rc 0 A down r0
expect_rc 0 B down r0
setup 4M
expect_rc 0 A up r0
expect_rc 0 B up r0
wait_until 10 field_is A .connection Connected || fail "no connection"
expect_rc 0 A primary r0 --force
wait_until 10 field_ge A .resync.done_bytes $((4 * MiB)) ||
	fail "resync not progressing"
kill -9 "$(status B .pid)"
wait_until 10 field_ne A .connection Connected || fail "loss not seen"
left=$(status A .bitmap.dirty_bytes)
[ "$left" -gt 0 ] && [ "$left" -lt "$data" ] ||
	fail "dirty bytes after the interrupted resync: $left"
expect_rc 0 B up r0
wait_until 60 synced || fail "the resync did not resume: $(status A .state)"
# what the source had left, plus what the target had written but not yet
# recorded in its on-disk bitmap (persisted every second: at most ~2 s at
# the 4 MiB/s rate)
got=$(log_bytes)
[ "$got" -ge "$left" ] && [ "$got" -le $((left + 8 * MiB)) ] ||
	fail "the resumed resync sent $got bytes; $left were left"
same_data "after a resync interrupted by the secondary's crash"

step "primary killed (-9) mid-resync, restarted: the resync resumes"
expect_rc 0 A down r0
expect_rc 0 B down r0
setup 4M
qemu-io -f raw "$T/alpha.img" -c "write -P 0x77 0 32M" >/dev/null
expect_rc 0 A up r0
expect_rc 0 B up r0
wait_until 10 field_is A .connection Connected || fail "no connection"
expect_rc 0 A primary r0 --force
wait_until 10 field_ge A .resync.done_bytes $((4 * MiB)) ||
	fail "resync not progressing"
kill -9 "$(status A .pid)"
wait_until 10 field_ne B .connection Connected || fail "loss not seen"
assert_eq "$(status B .disk)" Inconsistent "the target mid-resync"
expect_rc 0 A up r0
expect_rc 0 A primary r0
wait_until 60 synced || fail "the resync did not resume: $(status A .state)"
[ "$(log_bytes)" -lt "$data" ] ||
	fail "the resync started over: $(log_bytes) bytes (persisted progress lost)"
same_data "after a resync interrupted by the primary's crash"

step "protocol C: every acknowledged write is on the secondary's disk"
qemu-io -f raw "$NA" -c "write -P 0xe1 8M 1M" -c "write -P 0xe2 30M 64k" \
	-c "write -P 0xe3 60M 4k" >/dev/null || fail "qemu-io"
kill -9 "$(status A .pid)" "$(status B .pid)"
qemu-io -f raw "$T/beta.img" -c "read -P 0xe1 8M 1M" \
	-c "read -P 0xe2 30M 64k" -c "read -P 0xe3 60M 4k" >"$T/check.log" ||
	fail "beta's disk lacks an acknowledged write: $(cat "$T/check.log")"
assert_not_contains "$(cat "$T/check.log")" "Pattern verification failed" \
	"beta's disk holds every acknowledged write"
pass
