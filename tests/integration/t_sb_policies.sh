#!/bin/bash
# The automatic split-brain policies (after-sb-0pri / after-sb-1pri), each
# once, two nodes on loopback over their NBD exports. Each scenario makes
# a split brain (both nodes start a generation of their own while
# disconnected), connects, and checks which side the policy made the sync
# target: its status, the log line, the "split-brain" event (jq), the
# resync's direction and size, and byte-identical data areas where the
# loser's writes are gone and the winner's are present.
#  - discard-zero-changes: beta started a generation without writing
#    (new-current-uuid), alpha wrote and stays Primary (after-sb-1pri):
#    beta loses nothing and becomes the target;
#  - discard-least-changes: alpha wrote 1 MiB, beta 4 MiB: alpha loses;
#  - discard-younger-primary: beta was promoted first and wrote 1 MiB,
#    alpha was promoted 2 s later and wrote 4 MiB: alpha, the younger
#    Primary, loses although it changed more.
# timeout: 150
set -uo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=tests/integration/pair.sh
. "$(dirname "$0")/pair.sh"

config() {	# config POLICY
	pair_resource "resync-rate = \"200M\"; reconnect-min = 100; reconnect-max = 500;
after-sb-0pri = \"$1\"; after-sb-1pri = \"$1\";"
}

# restart both daemons with POLICY; they reconnect in sync
restart() {
	expect_rc 0 A down r0
	expect_rc 0 B down r0
	config "$1"
	expect_rc 0 A up r0
	expect_rc 0 B up r0
	expect_rc 0 A wait-sync r0 --timeout 30
	assert_eq "$(status A .after_sb_0pri)" "$1" "policy in effect"
	bg_stop evA
	bg_stop evB
	rm -f "$T/evA.log" "$T/evB.log"
	bg_start evA A events r0 --json
	bg_start evB B events r0 --json
	wait_until 5 grep -q '"exists"' "$T/evB.log" || fail "no events stream"
}

split() {	# both StandAlone, both Secondary
	expect_rc 0 A disconnect r0
	expect_rc 0 B disconnect r0
}

# check_victim POLICY WINNER LOSER BYTES: after connecting, the policy made
# LOSER the sync target of a BYTES resync from WINNER
check_victim() {
	local pol=$1 win=$2 lose=$3 bytes=$4 W L wlog
	W=$(echo "$win" | cut -c1 | tr a-z A-Z)
	L=$(echo "$lose" | cut -c1 | tr a-z A-Z)
	wlog=$T/r$(echo "$W" | tr A-Z a-z)/r0.log
	expect_rc 0 "$L" wait-sync r0 --timeout 60
	assert_eq "$(status "$W" .handshake.split_brain)" true "split brain seen"
	assert_eq "$(status "$W" .handshake.resolved)" true "resolved"
	assert_eq "$(status "$W" .handshake.policy)" "$pol" "deciding policy"
	assert_match "$(status "$L" .handshake.verdict)" '^sync-target' \
		"$lose's verdict"
	assert_match "$(status "$W" .handshake.verdict)" '^sync-source' \
		"$win's verdict"
	grep -q "resolved by $pol (rule [0-9]*): $lose becomes the sync target" \
		"$T/ra/r0.log" || fail "alpha's log does not name $lose"
	assert_eq "$(log_bytes "$wlog" "$lose")" "$bytes" \
		"resync $win -> $lose (both sides' changes)"
	wait_until 5 has_event "$T/evA.log" \
		".event == \"split-brain\" and .resolved and .policy == \"$pol\" and .victim == \"$lose\"" ||
		fail "no split-brain event naming $lose on alpha"
	wait_until 5 has_event "$T/evB.log" \
		".event == \"split-brain\" and .resolved and .policy == \"$pol\" and .victim == \"$lose\"" ||
		fail "no split-brain event naming $lose on beta"
	same_data "after $pol"
	assert_eq "$(status A .current_uuid)" "$(status B .current_uuid)" \
		"one generation after $pol"
}

# read_ok IMG "qemu-io read commands...": the patterns are there
read_ok() {
	local img=$1
	shift
	qemu-io -f raw "$img" "$@" >"$T/check.log" ||
		fail "reading $img: $(cat "$T/check.log")"
	assert_not_contains "$(cat "$T/check.log")" \
		"Pattern verification failed" "$img's data"
}

mk_sparse "$T/alpha.img" 64M
mk_sparse "$T/beta.img" 64M
config discard-zero-changes
expect_rc 0 A create-md r0 --force
expect_rc 0 B create-md r0 --force
expect_rc 0 A up r0
expect_rc 0 B up r0
expect_rc 0 A wait-connect r0 --timeout 20
expect_rc 0 A primary r0 --force
expect_rc 0 A wait-sync r0 --timeout 60
bg_start evA A events r0 --json
bg_start evB B events r0 --json
wait_until 5 grep -q '"exists"' "$T/evB.log" || fail "no events stream"

step "discard-zero-changes: beta changed nothing, alpha (Primary) did"
expect_rc 0 A secondary r0
split
expect_rc 0 A primary r0
qemu-io -f raw "$NA" -c "write -P 0xa1 4M 2M" >/dev/null || fail "write on alpha"
# a generation of beta's own, without a single write
expect_rc 0 B new-current-uuid r0
assert_eq "$(status B .bitmap.dirty_bytes)" 0 "beta's changes"
expect_rc 0 A connect r0
expect_rc 0 B connect r0
check_victim discard-zero-changes alpha beta $((2 * MiB))
assert_eq "$(status A .role)" Primary "alpha stays Primary"
read_ok "$T/beta.img" -c "read -P 0xa1 4M 2M"

step "discard-least-changes: alpha wrote 1 MiB, beta 4 MiB"
expect_rc 0 A secondary r0
restart discard-least-changes
split
expect_rc 0 A primary r0
qemu-io -f raw "$NA" -c "write -P 0xa2 16M 1M" >/dev/null || fail "write on alpha"
expect_rc 0 A secondary r0
expect_rc 0 B primary r0
qemu-io -f raw "$NB" -c "write -P 0xb2 32M 4M" >/dev/null || fail "write on beta"
expect_rc 0 B secondary r0
expect_rc 0 A connect r0
expect_rc 0 B connect r0
check_victim discard-least-changes beta alpha $((5 * MiB))
read_ok "$T/alpha.img" -c "read -P 0xb2 32M 4M" -c "read -P 0 16M 1M"

step "discard-younger-primary: alpha promoted last loses, though it wrote more"
restart discard-younger-primary
split
expect_rc 0 B primary r0
qemu-io -f raw "$NB" -c "write -P 0xb3 20M 1M" >/dev/null || fail "write on beta"
sleep 2	# promotion times are in seconds
expect_rc 0 A primary r0
qemu-io -f raw "$NA" -c "write -P 0xa3 40M 4M" >/dev/null || fail "write on alpha"
expect_rc 0 A secondary r0
expect_rc 0 B secondary r0
[ "$(A status r0 --json --verbose | jq .uuids.promoted)" -gt \
	"$(B status r0 --json --verbose | jq .uuids.promoted)" ] ||
	fail "alpha's promotion is not the younger one"
expect_rc 0 A connect r0
expect_rc 0 B connect r0
check_victim discard-younger-primary beta alpha $((5 * MiB))
read_ok "$T/alpha.img" -c "read -P 0xb3 20M 1M" -c "read -P 0 40M 4M"
pass
