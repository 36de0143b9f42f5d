#!/bin/bash
# Split brain with the default policy (disconnect), and its manual recovery,
# two nodes on loopback served over their NBD exports (the host has no ublk):
#  - disconnect, promote both, write on both (some blocks on both sides),
#    demote both, connect: the handshake finds the split brain, refuses it,
#    both nodes go StandAlone, the log says why and what to do, and
#    `events --json` (parsed with jq) reports it; wait-connect exits 8;
#  - `connect --discard-my-data` on beta, `connect` on alpha: a bitmap-based
#    resync of the union of both sides' changes (3 MiB exactly) from alpha;
#    the data areas end identical, beta's own writes are gone, and the
#    events stream names beta as the one whose changes were discarded.
# timeout: 120
set -uo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=tests/integration/pair.sh
. "$(dirname "$0")/pair.sh"

mk_sparse "$T/alpha.img" 64M
mk_sparse "$T/beta.img" 64M
pair_resource 'resync-rate = "200M"; reconnect-min = 100; reconnect-max = 500;
after-sb-0pri = "disconnect"; after-sb-1pri = "disconnect";'
expect_rc 0 A create-md r0 --force
expect_rc 0 B create-md r0 --force
expect_rc 0 A up r0
expect_rc 0 B up r0
expect_rc 0 A wait-connect r0 --timeout 20
expect_rc 0 A primary r0 --force
expect_rc 0 A wait-sync r0 --timeout 60
assert_eq "$(status B .state)" \
	"Secondary/Primary UpToDate/UpToDate Connected Established" "beta"
bg_start evA A events r0 --json
bg_start evB B events r0 --json
wait_until 5 grep -q '"exists"' "$T/evA.log" || fail "no events stream"

step "disconnect, both promoted, both write"
expect_rc 0 A secondary r0
expect_rc 0 A disconnect r0
assert_eq "$(status A .connection)" StandAlone "alpha after disconnect"
expect_rc 0 B disconnect r0
assert_eq "$(status B .connection)" StandAlone "beta after disconnect"
assert_eq "$(status B .disk)" UpToDate "beta (nobody was Primary)"
expect_rc 0 A primary r0
qemu-io -f raw "$NA" -c "write -P 0xa1 4M 2M" >/dev/null ||
	fail "write on alpha"
expect_rc 0 B primary r0
qemu-io -f raw "$NB" -c "write -P 0xb1 8M 1M" -c "write -P 0xb2 4M 64k" \
	>/dev/null || fail "write on beta"
assert_ne "$(status A .current_uuid)" "$(status B .current_uuid)" \
	"generations after writing alone"
expect_rc 0 A secondary r0
expect_rc 0 B secondary r0

step "connect: split brain detected, refused, both StandAlone"
expect_rc 0 A connect r0
expect_rc 0 B connect r0
expect_rc 8 B wait-connect r0 --timeout 20
assert_contains "$ERR" "StandAlone" "wait-connect's reason"
wait_until 10 field_is A .connection StandAlone ||
	fail "alpha not StandAlone: $(status A .state)"
assert_eq "$(status A .handshake.split_brain)" true "alpha saw a split brain"
assert_eq "$(status A .handshake.resolved)" false "resolved"
assert_eq "$(status A .handshake.policy)" disconnect "policy"
assert_eq "$(status B .handshake.split_brain)" true "beta saw it too"
grep -q 'split brain with beta, not resolved' "$T/ra/r0.log" ||
	fail "alpha's log does not explain the split brain"
grep -q 'connect r0 --discard-my-data' "$T/rb/r0.log" ||
	fail "beta's log does not say how to recover"
wait_until 5 grep -q '"split-brain"' "$T/evA.log" ||
	fail "no split-brain event on alpha"
ev=$(jq -c 'select(.event == "split-brain")' "$T/evA.log" | head -1)
echo "event: $ev"
assert_eq "$(jq -r .resolved <<<"$ev")" false "event: resolved"
assert_eq "$(jq -r .policy <<<"$ev")" disconnect "event: policy"
assert_eq "$(jq -r .resource <<<"$ev")" r0 "event: resource"
assert_eq "$(jq -r .conn <<<"$ev")" Connecting "event: connection at detection"
# the refused handshake itself: a change to StandAlone
wait_until 5 has_event "$T/evA.log" \
	'.event == "change" and .conn == "StandAlone" and .what == "connected"' ||
	fail "no change event to StandAlone after the handshake"
cmp -s -n "$(status A .data_bytes)" "$T/alpha.img" "$T/beta.img" &&
	fail "the data areas are identical: nothing diverged?"
# still StandAlone a while later: nobody retries a split brain
sleep 1.5
assert_eq "$(status B .connection)" StandAlone "beta stays StandAlone"

step "recovery: beta discards its changes"
expect_rc 0 A primary r0
expect_rc 8 A connect r0 --discard-my-data
assert_contains "$ERR" "Primary" "--discard-my-data on a Primary"
expect_rc 0 A secondary r0
expect_rc 0 B connect r0 --discard-my-data
assert_eq "$(status B .discard_my_data)" true "beta's pending flag"
expect_rc 0 A connect r0
expect_rc 0 B wait-sync r0 --timeout 60
assert_eq "$(status B .discard_my_data)" false "flag after the handshake"
assert_eq "$(status A .handshake.resolved)" true "resolved"
assert_eq "$(status A .handshake.policy)" discard-my-data "policy"
same_data "after the recovery"
assert_eq "$(status B .current_uuid)" "$(status A .current_uuid)" \
	"one generation"
qemu-io -f raw "$T/beta.img" -c "read -P 0xa1 4M 2M" -c "read -P 0 8M 1M" \
	>"$T/check.log" || fail "beta's data: $(cat "$T/check.log")"
assert_not_contains "$(cat "$T/check.log")" "Pattern verification failed" \
	"beta holds alpha's writes and none of its own"
assert_eq "$(log_bytes)" $((3 * MiB)) \
	"bitmap-based resync of both sides' changes (2 MiB + 1 MiB)"
wait_until 5 has_event "$T/evB.log" '.event == "split-brain" and .resolved' ||
	fail "no resolved split-brain event on beta"
ev=$(jq -c 'select(.event == "split-brain" and .resolved)' "$T/evB.log" | head -1)
echo "event: $ev"
assert_eq "$(jq -r .victim <<<"$ev")" beta "event: whose changes go"
assert_eq "$(jq -r .policy <<<"$ev")" discard-my-data "event: policy"
pass
