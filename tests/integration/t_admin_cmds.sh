#!/bin/bash
# The administrative commands on a two-node pair (loopback, NBD exports):
#  - invalidate: refused on the Primary; on the Secondary, a byte corrupted
#    behind duet's back is repaired by a full resync whose size is the
#    device size;
#  - invalidate-remote: refused towards a Primary peer; from the Primary, a
#    full resync to the peer (device size), again repairing a corruption;
#  - pause-sync / resume-sync: a rate-limited full resync paused on one
#    node: both show PausedSync, the bytes left do not move while paused;
#    resumed from the other node, it restarts from what was left (not from
#    the start) and ends with identical data;
#  - outdate: refused while connected and on a Primary; on a disconnected
#    Secondary the disk becomes Outdated, dump-md no longer shows
#    was-up-to-date, `primary` without --force is refused, also after a
#    restart; reconnected to the UpToDate peer it becomes UpToDate again.
# timeout: 150
set -uo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=tests/integration/pair.sh
. "$(dirname "$0")/pair.sh"

count_done() { grep -c "resync to beta done" "$T/ra/r0.log"; }
done_more() { [ "$(count_done)" -gt "$1" ]; }

mk_sparse "$T/alpha.img" 64M
mk_sparse "$T/beta.img" 64M
pair_resource 'resync-rate = "32M"; reconnect-min = 100; reconnect-max = 500;'
expect_rc 0 A create-md r0 --force
expect_rc 0 B create-md r0 --force
qemu-io -f raw "$T/alpha.img" -c "write -P 0x3c 0 8M" >/dev/null || fail qemu-io
expect_rc 0 A up r0
expect_rc 0 B up r0
expect_rc 0 A wait-connect r0 --timeout 20
expect_rc 0 A primary r0 --force
expect_rc 0 A wait-sync r0 --timeout 60
data=$(status A .data_bytes)

step "invalidate: refused on the Primary, a full resync on the Secondary"
expect_rc 8 A invalidate r0
assert_contains "$ERR" "Primary" "invalidate on the Primary"
flip_byte "$T/beta.img" $((3 * MiB + 17))
cmp -s -n "$data" "$T/alpha.img" "$T/beta.img" && fail "corruption not made"
n=$(count_done)
expect_rc 0 B invalidate r0
assert_match "$(status B .disk)/$(status B .replication)" \
	'^(Inconsistent/SyncTarget|UpToDate/Established)$' "beta after invalidate"
expect_rc 0 B wait-sync r0 --timeout 60
wait_until 5 done_more "$n" || fail "no resync done line"
assert_eq "$(log_bytes "$T/ra/r0.log" beta)" "$data" \
	"invalidate: full resync bytes = device size"
same_data "after invalidate"

step "invalidate-remote: refused towards a Primary, full resync to the peer"
expect_rc 8 B invalidate-remote r0
assert_contains "$ERR" "Primary" "invalidate-remote towards the Primary"
flip_byte "$T/beta.img" $((40 * MiB + 5))
n=$(count_done)
expect_rc 0 A invalidate-remote r0
expect_rc 0 A wait-sync r0 --timeout 60
wait_until 5 done_more "$n" || fail "no resync done line"
assert_eq "$(log_bytes "$T/ra/r0.log" beta)" "$data" \
	"invalidate-remote: full resync bytes = device size"
same_data "after invalidate-remote"
expect_rc 8 A pause-sync r0
assert_contains "$ERR" "no resync to pause" "pause-sync without a resync"

step "pause-sync / resume-sync: the resync stops, then goes on from where it was"
expect_rc 0 B invalidate r0
wait_until 10 field_ge A .resync.done_bytes $((4 * MiB)) ||
	fail "resync not progressing: $(status A .state)"
expect_rc 0 A pause-sync r0
assert_eq "$(status A .replication)" PausedSync "alpha's replication"
wait_until 5 field_is B .replication PausedSync ||
	fail "beta did not follow the pause: $(status B .state)"
left1=$(status A .resync.left_bytes)
sleep 2
left2=$(status A .resync.left_bytes)
assert_eq "$left2" "$left1" "bytes left while paused"
[ "$left1" -gt 0 ] && [ "$left1" -lt "$data" ] ||
	fail "bytes left when paused: $left1"
grep -q "resync to beta paused" "$T/ra/r0.log" || fail "no pause in alpha's log"
expect_rc 0 B resume-sync r0
wait_until 5 field_is A .replication SyncSource ||
	fail "alpha did not follow the resume: $(status A .state)"
begins=$(grep 'resync to beta begins' "$T/ra/r0.log" | tail -1 |
	sed 's/.*begins: \([0-9]*\) bytes.*/\1/')
[ "$begins" -le "$left1" ] ||
	fail "the resumed resync started with $begins bytes, $left1 were left"
expect_rc 0 B wait-sync r0 --timeout 60
same_data "after pause and resume"

step "outdate: refused while connected and on a Primary; persisted"
expect_rc 8 B outdate r0
assert_contains "$ERR" "disconnect first" "outdate while connected"
expect_rc 0 A secondary r0
# beta must know its peer is no Primary any more, or leaving it would
# outdate beta already
wait_until 5 field_is B .peer_role Secondary || fail "beta: $(status B .state)"
expect_rc 0 B disconnect r0
expect_rc 0 A disconnect r0
assert_eq "$(status B .disk)" UpToDate "beta before outdate"
expect_rc 0 A primary r0
expect_rc 8 A outdate r0
assert_contains "$ERR" "Primary" "outdate on a Primary"
expect_rc 0 A secondary r0
expect_rc 0 B outdate r0
assert_eq "$(status B .disk)" Outdated "beta after outdate"
run B dump-md r0 --json
assert_eq "$(jq -r 'any(.superblock.flag_names[]; . == "was-up-to-date")' <<<"$OUT")" \
	false "dump-md: was-up-to-date cleared"
assert_eq "$(jq -r 'any(.superblock.flag_names[]; . == "consistent")' <<<"$OUT")" \
	true "dump-md: still consistent"
expect_rc 8 B primary r0
assert_contains "$ERR" "Outdated" "primary on an Outdated disk"
expect_rc 0 B down r0
expect_rc 0 B up r0
assert_eq "$(status B .disk)" Outdated "beta after a restart"
expect_rc 8 B primary r0
expect_rc 0 A connect r0
expect_rc 0 B wait-sync r0 --timeout 30
assert_eq "$(status B .disk)" UpToDate "beta connected to its UpToDate peer"
same_data "at the end"
pass
