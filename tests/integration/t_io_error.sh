#!/bin/bash
# Local disk failure on the primary, over the NBD exports on the host, with
# I/O errors injected into alpha's backing engine (the test-only
# DUET_TEST_FAIL_IO, userspace/duetd/eng_fault.h):
#  - on-io-error detach: alpha's disk starts failing in the middle of a fio
#    --verify run through alpha; fio sees no error (failed writes complete
#    once beta has them, failed and later reads come from beta's disk);
#    alpha is Diskless with the reason in status; writes made while
#    diskless are on beta's disk and not on alpha's; beta starts a new
#    generation and marks everything for alpha; the local-io-error
#    handler runs;
#  - recovery: alpha down, up again without the fault: a full resync from
#    beta ends with identical disks;
#  - on-io-error pass-on: the application gets EIO and nothing changes.
# timeout: 120
set -uo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
require_cmd fio
# shellcheck source=tests/integration/pair.sh
. "$(dirname "$0")/pair.sh"

FAIL="$T/fail-io"	# pass-on: alpha's reads fail while this file exists

# alpha down, and its daemon gone (down may return just before it exits)
a_down() {
	local pid
	pid=$(status A .pid)
	[[ "$pid" =~ ^[0-9]+$ ]] || fail "alpha's pid: '$pid'"
	expect_rc 0 A down r0
	wait_until 10 eval "! kill -0 $pid 2>/dev/null" ||
		fail "alpha's duetd (pid $pid) still runs after down"
}

# handlers.local-io-error: records what it was told
printf '#!/bin/sh\nenv | grep "^DUET_" >"%s.tmp" && mv "%s.tmp" "%s"\n' \
	"$T/io-handler.env" "$T/io-handler.env" "$T/io-handler.env" \
	>"$T/io-handler.sh"
chmod +x "$T/io-handler.sh"

mk_sparse "$T/alpha.img" 64M
mk_sparse "$T/beta.img" 64M
pair_resource "resync-rate = \"400M\"; reconnect-min = 100; reconnect-max = 500; handlers = { local-io-error = \"$T/io-handler.sh\"; };"
expect_rc 0 A create-md r0 --force
expect_rc 0 B create-md r0 --force

step "a connected pair, alpha's engine wrapped by the fault injection"
# The initial sync reads and writes outside the engines: the count is of
# application I/O only, and fio below issues about 700 writes.
DUET_TEST_FAIL_IO="after=250" A up r0 || fail "alpha up"
expect_rc 0 B up r0
grep -q "TEST ONLY: DUET_TEST_FAIL_IO" "$T/ra/r0.log" ||
	fail "alpha's log does not announce the fault injection"
wait_until 10 field_is A .connection Connected || fail "no connection"
expect_rc 0 A primary r0 --force
wait_until 30 synced || fail "initial sync did not end: $(status A .state)"
old_uuid=$(status B .current_uuid)
data=$(status A .data_bytes)

step "the disk fails in the middle of fio --verify: fio sees no error"
fio --name=w --ioengine=nbd --uri="$NA" --rw=randwrite --bsrange=4k-64k \
	--size=48M --io_size=24M --iodepth=8 --verify=crc32c --verify_fatal=1 \
	--do_verify=1 --direct=1 >"$T/fio.log" 2>&1 || {
	cat "$T/fio.log"
	fail "fio through alpha failed after the disk failed"
}
# the failure came in the middle of the writes, not before or after
sent=$(status A .replication_stats.writes_sent)
[ "$sent" -gt 300 ] || fail "only $sent writes: the disk failed too late"
grep -q "TEST fault injection" "$T/ra/r0.log" ||
	fail "no I/O failed: the injection never fired"
assert_eq "$(status A .disk)" Diskless "alpha's disk"
assert_contains "$(status A .disk_failure.reason)" "Input/output error" \
	"the reason in status"
assert_eq "$(status A .disk_failure.on_io_error)" detach "the policy"
assert_eq "$(status A .role)" Primary "alpha's role"
assert_eq "$(status B .peer_disk)" Diskless "beta's view of alpha's disk"
assert_eq "$(status B .disk)" UpToDate "beta's disk"
field_ge A .replication_stats.remote_reads 1 ||
	fail "fio's verify read nothing through beta"
field_ge A .replication_stats.local_io_errors 1 || fail "no local I/O error counted"
assert_ne "$(status B .current_uuid)" "$old_uuid" "beta's new generation"
assert_eq "$(status B .bitmap.dirty_bytes)" "$data" \
	"beta marks all of alpha's disk out of date"
grep -q "local I/O error" "$T/ra/r0.log" || fail "no detach line in alpha's log"
wait_until 10 test -s "$T/io-handler.env" ||
	fail "the local-io-error handler did not run"
grep -qx "DUET_IO_ERRNO=5" "$T/io-handler.env" ||
	fail "the handler was not told EIO: $(cat "$T/io-handler.env")"
grep -qx "DUET_ON_IO_ERROR=detach" "$T/io-handler.env" ||
	fail "the handler was not told the policy: $(cat "$T/io-handler.env")"

step "diskless writes land on beta's disk, not on alpha's; reads come back"
run qemu-io -f raw "$NA" -c "write -P 0x77 8M 1M" -c "write -P 0x78 60M 64k" \
	-c "read -P 0x77 8M 1M" -c "read -P 0x78 60M 64k"
assert_eq "$RC" 0 "qemu-io through diskless alpha: $OUT$ERR"
assert_not_contains "$OUT$ERR" "failed" "qemu-io through diskless alpha"
run qemu-io -f raw -r "$T/beta.img" -c "read -P 0x77 8M 1M" \
	-c "read -P 0x78 60M 64k"
assert_not_contains "$OUT$ERR" "failed" "beta's disk holds the writes"
run qemu-io -f raw -r "$T/alpha.img" -c "read -P 0x77 8M 1M"
assert_contains "$OUT$ERR" "Pattern verification failed" \
	"alpha's failed disk was not written"
# everything alpha serves now is beta's disk
qemu-img convert -f raw -O raw "$NA" "$T/via-alpha.img" ||
	fail "reading the device through alpha"
cmp -n "$data" "$T/via-alpha.img" "$T/beta.img" ||
	fail "what alpha serves differs from beta's disk"

step "recovery: down, up without the fault, full resync from beta"
a_down
lines=$(wc -l <"$T/ra/r0.log")
expect_rc 0 A up r0
both_up() {
	[ "$(status A .disk)" = UpToDate ] && [ "$(status B .disk)" = UpToDate ] &&
		[ "$(status A .replication)" = Established ]
}
wait_until 60 both_up ||
	fail "no resync after the restart: $(status A .state) / $(status B .state)"
assert_eq "$(log_bytes "$T/rb/r0.log" alpha)" "$data" \
	"beta resynced the whole device to alpha"
same_data "after the recovery"
assert_not_contains "$(tail -n +$((lines + 1)) "$T/ra/r0.log")" "TEST" \
	"fault injection after the restart without DUET_TEST_FAIL_IO"

step "on-io-error pass-on: the application gets EIO, nothing else changes"
a_down
pair_resource "resync-rate = \"400M\"; reconnect-min = 100; reconnect-max = 500; on-io-error = \"pass-on\";"
DUET_TEST_FAIL_IO="file=$FAIL,ops=read,sectors=2048+2048" A up r0 ||
	fail "alpha up with pass-on"
wait_until 10 field_is A .connection Connected || fail "no connection"
expect_rc 0 A primary r0
wait_until 10 synced || fail "not in sync again: $(status A .state)"
touch "$FAIL"
run qemu-io -f raw "$NA" -c "read 1M 64k"
assert_contains "$OUT$ERR" "Input/output error" "a failed read with pass-on"
run qemu-io -f raw "$NA" -c "read 4M 64k"
assert_eq "$RC" 0 "a read outside the failing range: $OUT$ERR"
assert_eq "$(status A .disk)" UpToDate "alpha's disk with pass-on"
assert_eq "$(status A .disk_failure)" null "no detach with pass-on"
assert_eq "$(status A .replication_stats.remote_reads)" 0 "no remote read"
rm -f "$FAIL"
same_data "after pass-on"
expect_rc 0 A down r0
expect_rc 0 B down r0
