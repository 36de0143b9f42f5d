#!/bin/bash
# Two nodes in one guest, each in its own network namespace (veth pair),
# each with its own backing file and run directory, both serving a ublk
# device:
#  - Secondary at `up`; `primary --force` on a fresh pair runs the full
#    initial sync (resync bytes = device size);
#  - fio --verify=crc32c through the primary's /dev/ublkbN with protocol C,
#    then both data areas byte-identical (sha256 over data_bytes);
#  - the Secondary's /dev/ublkbN serves reads and refuses writes (EROFS);
#  - protocol C's promise: dd writes O_DIRECT|O_SYNC through the primary,
#    kill -9 of both daemons right after: the secondary's backing file holds
#    every acknowledged write.
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
require_cmd fio jq sha256sum ip
cd "$T"

vm_netns_pair na nb 10 || fail "cannot build the namespaces"
mkdir -p "$T/ra" "$T/rb"
A() { ip netns exec na "$DUETCTL" --node alpha --run-dir "$T/ra" "$@"; }
B() { ip netns exec nb "$DUETCTL" --node beta --run-dir "$T/rb" "$@"; }
on_exit 'A down r0 >/dev/null 2>&1; B down r0 >/dev/null 2>&1'
status() { "$1" status r0 --json | jq -r "$2"; }
field_is() { [ "$(status "$1" "$2" 2>/dev/null)" = "$3" ]; }
synced() {
	field_is A .state \
		"Primary/Secondary UpToDate/UpToDate Connected Established"
}
data_sha() {	# data_sha FILE: sha256 of the data area
	head -c "$(status A .data_bytes)" "$1" | sha256sum | cut -d' ' -f1
}

mk_sparse "$T/alpha.img" 96M
mk_sparse "$T/beta.img" 96M
write_resource r0 alpha_addr=10.10.0.1:7789 beta_addr=10.10.0.2:7789 \
	extra='queues = 2; queue-depth = 32; resync-rate = "1G";'
expect_rc 0 A create-md r0 --force
expect_rc 0 B create-md r0 --force

step "up: both Secondary; primary --force runs the full initial sync"
expect_rc 0 A up r0
expect_rc 0 B up r0
wait_until 20 field_is A .connection Connected ||
	fail "not connected: $(status A .replication_stats.last_error)"
assert_eq "$(status A .role)" Secondary "alpha's role at up"
assert_eq "$(status B .role)" Secondary "beta's role at up"
expect_rc 0 A primary r0 --force
wait_until 120 synced || fail "initial sync did not end: $(status A .state)"
data=$(status A .data_bytes)
got=$(grep 'resync to beta done' "$T/ra/r0.log" | tail -1 |
	sed 's/.*done: \([0-9]*\) bytes.*/\1/')
assert_eq "$got" "$data" "initial sync bytes = device size"
assert_eq "$(data_sha "$T/alpha.img")" "$(data_sha "$T/beta.img")" \
	"data areas after the initial sync"

step "protocol C: fio --verify through the primary"
adev=$(status A .device)
bdev=$(status B .device)
[ -b "$adev" ] && [ -b "$bdev" ] || fail "no devices: $adev $bdev"
run fio --name=verify --filename="$adev" --ioengine=io_uring --direct=1 \
	--rw=randwrite --bsrange=4k-128k --iodepth=16 --numjobs=2 \
	--size=40M --offset_increment=44M --io_size=12M --verify=crc32c \
	--do_verify=1 --verify_fatal=1 --group_reporting
[ "$RC" -eq 0 ] || fail "fio verify failed (exit $RC)"
assert_contains "$OUT" "err= 0" "fio error count"
assert_eq "$(status A .replication_stats.not_acked)" 0 "unacknowledged writes"
assert_eq "$(status A .bitmap.dirty_bytes)" 0 "bitmap while connected"
[ "$(status B .replication_stats.applied_bytes)" -ge $((24 << 20)) ] ||
	fail "beta applied $(status B .replication_stats.applied_bytes) bytes"
assert_eq "$(data_sha "$T/alpha.img")" "$(data_sha "$T/beta.img")" \
	"data areas after fio"

step "the Secondary's device: reads yes, writes EROFS"
dd if="$bdev" of=/dev/null bs=64k count=16 iflag=direct status=none ||
	fail "read from the Secondary's device"
run dd if=/dev/zero of="$bdev" bs=4k count=1 oflag=direct status=none
assert_ne "$RC" 0 "dd onto the Secondary's device"
assert_eq "$(data_sha "$T/alpha.img")" "$(data_sha "$T/beta.img")" \
	"data areas after the refused write"

step "protocol C: acknowledged writes survive kill -9 of both nodes"
head -c 1M /dev/urandom >"$T/p1"
head -c 64k /dev/urandom >"$T/p2"
dd if="$T/p1" of="$adev" bs=1M seek=10 oflag=direct,sync status=none
dd if="$T/p2" of="$adev" bs=64k seek=900 oflag=direct,sync status=none
kill -9 "$(status A .pid)" "$(status B .pid)"
cmp -n $((1 << 20)) "$T/p1" <(tail -c +$((10 * 1048576 + 1)) "$T/beta.img") ||
	fail "beta lacks the first acknowledged write"
cmp -n 65536 "$T/p2" <(tail -c +$((900 * 65536 + 1)) "$T/beta.img") ||
	fail "beta lacks the second acknowledged write"
pass
