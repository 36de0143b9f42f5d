#!/bin/bash
# duetd refuses bad input with a clear message and its documented exit
# code, and leaves nothing half-made behind (no /dev/ublk* device, no
# socket, pid or state file, superblock flags as they were): bad command
# line, missing configuration, no metadata, missing backing file, backing
# file smaller than its metadata says, a ublk id in use by another
# resource, the same resource twice, and a kernel without the ublk driver.
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
require_cmd jq modprobe rmmod
export DUET_NODE=alpha
cd "$T"

json() { jq -r "$1" <<<"$OUT"; }
devices() { ls /dev/ublkb* /dev/ublkc* 2>/dev/null | sort | tr '\n' ' '; }

# nothing_left RES [EXPECTED_DEVICES]: the failed start left no trace
nothing_left() {
	assert_eq "$(devices)" "${2:-}" "ublk devices after a failed start of $1"
	for f in sock pid state; do
		[ ! -e "$RUN_DIR/$1.$f" ] || fail "$RUN_DIR/$1.$f left behind"
	done
}

duetd() {	# duetd RES [more args]: in the foreground, as duetctl runs it
	local res=$1
	shift
	run "$DUETD" --foreground --resource "$res" "$@"
}

step "bad command line"
run "$DUETD" --foreground
assert_eq "$RC" 2 "exit code without --resource"
assert_contains "$ERR" "--resource is required"
run "$DUETD" --resource r0 --log-level loud
assert_eq "$RC" 2 "exit code for a bad log level"

step "no configuration"
duetd nosuch
assert_eq "$RC" 3 "exit code"
assert_contains "$ERR" "no configuration for resource 'nosuch'"
nothing_left nosuch

step "no metadata"
mk_sparse "$T/blank.img" 64M
write_resource blank nodes=alpha alpha_disk="$T/blank.img"
duetd blank
assert_eq "$RC" 5 "exit code"
assert_contains "$ERR" "duetctl create-md blank"
nothing_left blank
# the same through duetctl up: it fails and shows why
run "$DUETCTL" up blank
[ "$RC" -ne 0 ] || fail "duetctl up succeeded without metadata"
assert_contains "$ERR" "create-md"
nothing_left blank

step "backing file missing"
write_resource gone nodes=alpha alpha_disk="$T/does-not-exist.img"
duetd gone
assert_eq "$RC" 1 "exit code"
assert_contains "$ERR" "$T/does-not-exist.img"
nothing_left gone

step "backing file smaller than its metadata says"
mk_sparse "$T/small.img" 64M
mk_sparse "$T/small.md" 8M
write_resource small nodes=alpha alpha_disk="$T/small.img" \
	alpha_meta="$T/small.md"
expect_rc 0 "$DUETCTL" create-md small
truncate -s 32M "$T/small.img"
duetd small
[ "$RC" -eq 5 ] || [ "$RC" -eq 6 ] || fail "exit code $RC, expected 5 or 6"
assert_contains "$ERR" "exceeds the backing device"
nothing_left small

step "a ublk id in use by another resource"
mk_sparse "$T/a.img" 64M
mk_sparse "$T/b.img" 64M
write_resource ra nodes=alpha alpha_disk="$T/a.img" alpha_extra='ublk-id = 7;'
write_resource rb nodes=alpha alpha_disk="$T/b.img" alpha_extra='ublk-id = 7;'
expect_rc 0 "$DUETCTL" create-md ra
expect_rc 0 "$DUETCTL" create-md rb
expect_rc 0 "$DUETCTL" up ra
expect_rc 0 "$DUETCTL" status ra --json
assert_eq "$(json .device)" /dev/ublkb7 "configured ublk id"
duetd rb
assert_eq "$RC" 10 "exit code"
assert_contains "$ERR" "ublk device id 7 is already in use"
nothing_left rb "/dev/ublkb7 /dev/ublkc7 "
# rb's superblock was not left marked as running
expect_rc 0 "$DUETCTL" dump-md rb --json
assert_eq "$(json '.superblock.flag_names | index("primary")')" null \
	"rb's primary flag after its failed start"
# ra is unharmed
dd if=/dev/ublkb7 of=/dev/null bs=4k count=16 iflag=direct status=none ||
	fail "ra's device stopped working"

step "the same resource twice"
duetd ra
assert_eq "$RC" 10 "exit code"
assert_contains "$ERR" "already served by duetd"
[ -S "$RUN_DIR/ra.sock" ] || fail "the running daemon's socket was removed"
expect_rc 0 "$DUETCTL" status ra --json
assert_eq "$(json .state)" running "first daemon still running"
expect_rc 0 "$DUETCTL" down ra
nothing_left ra

step "no ublk driver in the kernel"
expect_rc 0 rmmod ublk_drv
on_exit "modprobe ublk_drv"
duetd ra
assert_eq "$RC" 11 "exit code"
assert_contains "$ERR" "modprobe ublk_drv"
nothing_left ra
expect_rc 0 "$DUETCTL" dump-md ra --json
assert_eq "$(json '.superblock.flag_names | index("primary")')" null \
	"primary flag after a start without ublk"
expect_rc 0 modprobe ublk_drv
pass
