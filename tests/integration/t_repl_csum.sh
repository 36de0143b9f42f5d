#!/bin/bash
# Checksum-based resync and online verify, two nodes on loopback served over
# their NBD exports (as in t_repl_nbd.sh), csums-alg crc32c:
#  - initial sync of a pair whose disks already agree except in 4 MiB:
#    only those 4 MiB travel as data, the rest is found identical by
#    checksum (resync_same_bytes), and the data areas end identical;
#  - bitmap-based resync after an outage in which the primary rewrote 8 MiB
#    with the data they already held and wrote 2 MiB of new data: 8 MiB
#    found identical, 2 MiB sent;
#  - online verify while fio writes through the primary: nothing found
#    (no false positive from writes in flight);
#  - two 4 KiB blocks changed behind duet's back on the secondary's disk:
#    `verify --wait` on the primary finds exactly the two verify blocks,
#    marks them, and the same from the secondary's side; a reconnect
#    resyncs them and the data areas end identical;
#  - verify refused with a reason while not connected.
# timeout: 150
set -uo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
require_cmd fio
# shellcheck source=tests/integration/pair.sh
. "$(dirname "$0")/pair.sh"

VBLK=$((256 << 10))	# RESYNC_VERIFY_BLOCK
pattern() {	# pattern FILE BYTE OFFSET LEN
	qemu-io -f raw "$1" -c "write -P $2 $3 $4" >/dev/null ||
		fail "qemu-io on $1"
}

mk_sparse "$T/alpha.img" 64M
mk_sparse "$T/beta.img" 64M
pair_resource 'csums-alg = "crc32c"; verify-alg = "sha256"; resync-rate = "200M"; reconnect-min = 100; reconnect-max = 500;'
expect_rc 0 A create-md r0 --force
expect_rc 0 B create-md r0 --force

step "initial sync: only the 4 MiB that differ travel as data"
for f in alpha beta; do
	pattern "$T/$f.img" 0x5a 0 16M
done
pattern "$T/alpha.img" 0x77 $((32 * MiB)) 4M
expect_rc 0 A up r0
expect_rc 0 B up r0
wait_until 10 field_is A .connection Connected ||
	fail "no connection: $(status A .replication_stats.last_error)"
expect_rc 0 A primary r0 --force
wait_until 30 synced || fail "initial sync did not end: $(status A .state)"
data=$(status A .data_bytes)
assert_eq "$(status A .replication_stats.resync_bytes)" "$data" \
	"initial sync covered the device"
assert_eq "$(status A .replication_stats.resync_same_bytes)" \
	$((data - 4 * MiB)) "bytes found identical by checksum (source)"
assert_eq "$(status B .replication_stats.resync_same_bytes)" \
	$((data - 4 * MiB)) "bytes found identical by checksum (target)"
grep -q 'resync to beta begins: .* (checksum-based)' "$T/ra/r0.log" ||
	fail "the log does not say the resync was checksum-based"
same_data "after the initial sync"

step "outage: 8 MiB rewritten with the same data, 2 MiB new; only 2 MiB sent"
expect_rc 0 B down r0
wait_until 10 field_is A .connection Connecting ||
	fail "alpha did not notice: $(status A .connection)"
run qemu-io -f raw "$NA" -c "write -P 0x5a 0 8M" -c "write -P 0x33 40M 2M"
assert_eq "$RC" 0 "writes through alpha while beta is down"
assert_eq "$(status A .bitmap.dirty_bytes)" $((10 * MiB)) "dirty bytes"
same0=$(status A .replication_stats.resync_same_bytes)
rs0=$(status A .replication_stats.resync_bytes)
expect_rc 0 B up r0
wait_until 30 synced || fail "resync did not end: $(status A .state)"
assert_eq $(($(status A .replication_stats.resync_bytes) - rs0)) \
	$((10 * MiB)) "bytes resynced"
assert_eq $(($(status A .replication_stats.resync_same_bytes) - same0)) \
	$((8 * MiB)) "bytes found identical (not sent)"
same_data "after the checksum-based resync"

step "verify under a write load: nothing found"
fio --name=w --ioengine=nbd --uri="$NA" --rw=randwrite --bs=4k-64k \
	--size=64M --time_based --runtime=4 --iodepth=4 --direct=1 \
	--rate=8m >"$T/fio.log" 2>&1 &
fio_pid=$!
expect_rc 0 A verify r0 --wait --timeout 60 --json
wait "$fio_pid" || { cat "$T/fio.log"; fail "fio through alpha"; }
assert_eq "$(jq -r .oos_bytes <<<"$OUT")" 0 "out of sync found under load"
assert_eq "$(jq -r .complete <<<"$OUT")" true "verify complete"
assert_eq "$(jq -r .done_bytes <<<"$OUT")" "$data" "bytes compared"
assert_eq "$(status B .verify.role)" target "beta's view of the verify"
assert_eq "$(status A .replication)" Established "after the verify"
same_data "after the verify under load"

step "two blocks changed behind duet's back: verify finds exactly them"
# 4 KiB inside the verify block at 20 MiB, and 4 KiB straddling nothing
# at 50 MiB + 8 KiB
dd if=/dev/urandom of="$T/beta.img" bs=4k seek=$((20 * 256)) count=1 \
	conv=notrunc,fsync status=none
dd if=/dev/urandom of="$T/beta.img" bs=4k seek=$((50 * 256 + 2)) count=1 \
	conv=notrunc,fsync status=none
expect_rc 0 A verify r0 --wait --timeout 60
assert_contains "$OUT" "$((2 * VBLK)) bytes in 2 blocks out of sync" \
	"verify on alpha"
assert_eq "$(status A .verify.oos_blocks)" 2 "blocks found (alpha)"
[ "$(status A .bitmap.dirty_bytes)" -ge $((2 * 4096)) ] ||
	fail "alpha's bitmap does not mark them: $(status A .bitmap.dirty_bytes)"
expect_rc 0 B verify r0 --wait --timeout 60 --json
assert_eq "$(jq -r .oos_bytes <<<"$OUT")" $((2 * VBLK)) \
	"verify from the secondary's side"

step "a reconnect resyncs what verify marked"
expect_rc 0 B down r0
expect_rc 0 B up r0
wait_until 30 synced || fail "resync did not end: $(status A .state)"
wait_until 10 field_is A .bitmap.dirty_bytes 0 ||
	fail "bits left: $(status A .bitmap.dirty_bytes)"
same_data "after repairing what verify found"
expect_rc 0 A verify r0 --wait --timeout 60 --json
assert_eq "$(jq -r .oos_bytes <<<"$OUT")" 0 "verify after the repair"

step "verify refused while not connected"
expect_rc 0 B down r0
wait_until 10 field_is A .connection Connecting || fail "still connected"
expect_rc 8 A verify r0
assert_contains "$ERR" "not connected" "the refusal"
expect_rc 2 A verify r0 --timeout 5
expect_rc 2 A verify
pass
