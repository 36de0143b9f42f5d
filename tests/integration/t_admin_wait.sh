#!/bin/bash
# wait-connect, wait-sync and events: exit codes (0, 2 usage, 7 not up,
# 8 StandAlone, 9 time-out), the plain progress lines of wait-sync when
# stdout is not a terminal, the human events stream, and the fields of
# `status --json` (and --verbose) that docs/control-socket.md promises.
# Two nodes on loopback over their NBD exports.
# timeout: 120
set -uo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=tests/integration/pair.sh
. "$(dirname "$0")/pair.sh"

now_ms() { echo $(($(date +%s%N) / 1000000)); }

mk_sparse "$T/alpha.img" 64M
mk_sparse "$T/beta.img" 64M
pair_resource 'resync-rate = "12M"; reconnect-min = 100; reconnect-max = 500;'
expect_rc 0 A create-md r0 --force
expect_rc 0 B create-md r0 --force

step "not up: 7; bad arguments: 2"
expect_rc 7 A wait-connect r0 --timeout 1
expect_rc 7 A wait-sync r0 --timeout 1
expect_rc 7 A events r0 --timeout 1
expect_rc 2 A wait-sync r0 --timeout soon
expect_rc 2 A wait-connect
expect_rc 2 A events r0 extra

step "time-outs: 9"
expect_rc 0 A up r0
t0=$(now_ms)
expect_rc 9 A wait-connect r0 --timeout 1
assert_contains "$ERR" "timeout" "wait-connect's message"
el=$(($(now_ms) - t0))
[ "$el" -ge 900 ] && [ "$el" -lt 5000 ] ||
	fail "wait-connect --timeout 1 took $el ms"
expect_rc 0 B up r0
expect_rc 0 A wait-connect r0 --timeout 20
assert_contains "$OUT" "Connected" "wait-connect's last line"
# a new pair is Inconsistent on both sides: nothing syncs before primary --force
expect_rc 9 A wait-sync r0 --timeout 1

step "wait-sync: progress lines (not a tty), then 0"
bg_start evB B events r0 --timeout 60
wait_until 5 grep -q ' exists ' "$T/evB.log" || fail "no events stream"
expect_rc 0 A primary r0 --force
expect_rc 0 B wait-sync r0 --timeout 60
assert_match "$OUT" '^r0: SyncTarget [0-9.]+% \(.* left, .*/s' \
	"a plain progress line"
assert_contains "$OUT" \
	"r0: Secondary/Primary UpToDate/UpToDate Connected Established" \
	"wait-sync's last line"
expect_rc 0 A wait-sync r0 --timeout 5

step "events, human form"
expect_rc 0 B disconnect r0
expect_rc 8 B wait-connect r0 --timeout 5
assert_contains "$ERR" "StandAlone" "wait-connect on a StandAlone node"
expect_rc 0 B connect r0
expect_rc 0 B wait-connect r0 --timeout 20
wait_until 5 grep -q ' r0 change connected: ' "$T/evB.log" ||
	fail "no 'connected' line: $(cat "$T/evB.log")"
ev=$(cat "$T/evB.log")
assert_match "$ev" '^[0-9T:.-]+ r0 exists exists: Secondary/Secondary Inconsistent/Inconsistent Connected Established$' \
	"the first line"
assert_match "$ev" ' r0 change sync-done: Secondary/Primary UpToDate/UpToDate Connected Established' \
	"the end of the sync"
# leaving a Primary on purpose, beta knows it falls behind: Outdated
assert_match "$ev" ' r0 change disconnect: Secondary/Unknown Outdated/DUnknown Disconnecting Off' \
	"the disconnect"
assert_match "$ev" ' r0 change connect: Secondary/Unknown Outdated/DUnknown Connecting Off' \
	"the connect"
assert_match "$ev" ' r0 change connected: Secondary/Primary UpToDate/UpToDate Connected Established' \
	"the handshake"
bg_stop evB

step "status --json: the documented fields"
run A status r0 --json
jq -e '
	(.resource == "r0") and (.node == "alpha") and (.up == true) and
	(.node_id | type == "number") and (.pid | type == "number") and
	(.state == "Primary/Secondary UpToDate/UpToDate Connected Established") and
	(.role == "Primary") and (.peer_role == "Secondary") and
	(.disk == "UpToDate") and (.peer_disk == "UpToDate") and
	(.connection == "Connected") and (.replication == "Established") and
	(.protocol == "C") and (.current_uuid | test("^[0-9a-f]{16}$")) and
	(.data_bytes | type == "number") and
	(.bitmap.dirty_bytes == 0) and (.resync == null) and
	(.discard_my_data == false) and
	(.after_sb_0pri == "disconnect") and (.after_sb_1pri == "disconnect") and
	(.handshake.split_brain == false) and
	(.handshake.verdict | type == "string") and
	(.handshake.rule | type == "number") and
	(.replication_stats.link == "Connected") and
	(.replication_stats.connects | type == "number") and
	(has("uuids") | not)' <<<"$OUT" >/dev/null ||
	fail "status --json lacks a documented field"
run A status r0 --json --verbose
jq -e '
	(.uuids.current == .current_uuid) and
	(.uuids.history | length == 4) and
	(.uuids.bitmap | test("^[0-9a-f]{16}$")) and
	(.uuids.promoted > 0) and
	(.peer_uuids.current == .current_uuid) and
	(.peer_uuids.dirty_bits == 0)' <<<"$OUT" >/dev/null ||
	fail "status --json --verbose lacks the UUIDs"
run A status r0 --verbose
assert_match "$OUT" '^  uuids: current=[0-9a-f]{16} bitmap=' "human --verbose"
pass
