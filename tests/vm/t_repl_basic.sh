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
# shellcheck source=tests/vm/pair.sh
. "$(dirname "$0")/pair.sh"
require_cmd fio

pair_netns 10
pair_resource 96M 'queues = 2; queue-depth = 32; resync-rate = "1G";'

step "up: both Secondary; primary --force runs the full initial sync"
pair_up 20
assert_eq "$(status A .role)" Secondary "alpha's role at up"
assert_eq "$(status B .role)" Secondary "beta's role at up"
expect_rc 0 A primary r0 --force
wait_until 120 synced || fail "initial sync did not end: $(status A .state)"
data=$(status A .data_bytes)
assert_eq "$(last_resync)" "$data" "initial sync bytes = device size"
same_data "after the initial sync"

step "protocol C: fio --verify through the primary"
adev=$(status A .device)
bdev=$(status B .device)
[ -b "$adev" ] && [ -b "$bdev" ] || fail "no devices: $adev $bdev"
fio_verify "$adev" --bsrange=4k-128k --size=40M --offset_increment=44M \
	--io_size=12M
assert_eq "$(status A .replication_stats.not_acked)" 0 "unacknowledged writes"
assert_eq "$(status A .bitmap.dirty_bytes)" 0 "bitmap while connected"
[ "$(status B .replication_stats.applied_bytes)" -ge $((24 << 20)) ] ||
	fail "beta applied $(status B .replication_stats.applied_bytes) bytes"
same_data "after fio"

step "the Secondary's device: reads yes, writes EROFS"
dd if="$bdev" of=/dev/null bs=64k count=16 iflag=direct status=none ||
	fail "read from the Secondary's device"
run dd if=/dev/zero of="$bdev" bs=4k count=1 oflag=direct status=none
assert_ne "$RC" 0 "dd onto the Secondary's device"
same_data "after the refused write"

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
