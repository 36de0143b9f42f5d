#!/bin/bash
# Restart without losing the device (UBLK_F_USER_RECOVERY): kill -9 duetd
# while fio writes with verification state, start it again with
# `duetctl up`; the new daemon takes the device over, fio finishes without
# an error, and a verify pass over every acknowledged write succeeds. Then
# the same during the verify pass itself, with the other engine. The
# superblock records the crash; a clean down/up clears the crash state.
# timeout: 420
set -uo pipefail
# shellcheck source=tests/vm/lib.sh
. "$(dirname "$0")/lib.sh"
vm_run_self --mem 1024 --cpus 2 --timeout 400 -- "$@"

# ---- in the guest from here on
set -e
# shellcheck source=tests/integration/lib.sh
. "$VM_TOP/tests/integration/lib.sh"
require_bin duetctl duetd
require_cmd fio jq
export DUET_NODE=alpha
cd "$T"

json() { jq -r "$1" <<<"$OUT"; }
writes() {
	"$DUETCTL" status r0 --json 2>/dev/null | jq -r '.io.writes // 0'
}
reads() {
	"$DUETCTL" status r0 --json 2>/dev/null | jq -r '.io.reads // 0'
}
more_than() {	# more_than FUNC N
	[ "$("$1")" -gt "$2" ]
}
daemon_pid() {
	expect_rc 0 "$DUETCTL" status r0 --json
	json .pid
}
fio_wait() { wait "$(bg_pid "$1")"; }
dead() { ! kill -0 "$1" 2>/dev/null || grep -q '^State:.*Z' "/proc/$1/status"; }

# resource: engine $1
config() {
	write_resource r0 nodes=alpha \
		extra="io-engine = \"$1\"; queues = 2; queue-depth = 32;"
}

step "device up (io_uring engine)"
mk_sparse "$T/alpha.img" 256M
config io_uring
expect_rc 0 "$DUETCTL" create-md r0
expect_rc 0 "$DUETCTL" up r0
expect_rc 0 "$DUETCTL" status r0 --json
dev=$(json .device)
dev_id=$(json .dev_id)
assert_eq "$(json .recovered)" false "recovered on a fresh start"

FIO=(fio --name=rec --filename="$dev" --ioengine=io_uring --direct=1
	--rw=randwrite --bs=4k --iodepth=16 --numjobs=2 --size=96M
	--offset_increment=96M --io_size=40M --verify=crc32c
	--verify_state_save=1 --group_reporting
	# paced, so neither phase can finish before the test has killed the
	# daemon under it (~10 s per phase; the kill comes after ~1 s of I/O)
	--rate_iops=1000)

step "kill -9 duetd in the middle of the write phase"
bg_start fio_write "${FIO[@]}" --do_verify=0
wait_until 60 more_than writes 1500 || fail "fio made no progress"
pid=$(daemon_pid)
kill -9 "$pid"
wait_until 10 dead "$pid" || fail "duetd $pid did not die"
[ -b "$dev" ] || fail "$dev vanished with its daemon"
sleep 1
kill -0 "$(bg_pid fio_write)" 2>/dev/null || {
	cat "$T/fio_write.log"
	fail "fio ended while the device had no server"
}

step "duetctl up takes the device over"
expect_rc 0 "$DUETCTL" up r0
expect_rc 0 "$DUETCTL" status r0 --json
assert_eq "$(json .recovered)" true "recovered"
assert_eq "$(json .dev_id)" "$dev_id" "same ublk device"
assert_eq "$(json .crashed_primary)" true "crash noticed"
assert_contains "$(json .md_flags)" crashed-primary "superblock flags"
[ "$(json .pid)" != "$pid" ] || fail "same pid after a restart?"
fio_wait fio_write && rc=0 || rc=$?
cat "$T/fio_write.log"
assert_eq "$rc" 0 "fio write phase exit status"
assert_contains "$(cat "$T/fio_write.log")" "err= 0" "fio write errors"

step "verify every acknowledged write; kill -9 again mid-verify (libaio engine next)"
bg_start fio_verify "${FIO[@]}" --verify_only --verify_state_load=1 \
	--ioengine=libaio
reads0=$(reads)
wait_until 60 more_than reads $((reads0 + 1500)) ||
	fail "verify made no progress"
pid=$(daemon_pid)
kill -9 "$pid"
wait_until 10 dead "$pid" || fail "duetd $pid did not die"
config libaio
expect_rc 0 "$DUETCTL" up r0
expect_rc 0 "$DUETCTL" status r0 --json
assert_eq "$(json .engine)" libaio "engine after the second restart"
assert_eq "$(json .recovered)" true "recovered again"
fio_wait fio_verify && rc=0 || rc=$?
cat "$T/fio_verify.log"
assert_eq "$rc" 0 "fio verify exit status"
assert_contains "$(cat "$T/fio_verify.log")" "err= 0" "fio verify errors"
expect_rc 0 "$DUETCTL" status r0 --json
assert_eq "$(json .io.errors)" 0 "I/O errors"

step "a clean stop ends the crash state"
expect_rc 0 "$DUETCTL" down r0
expect_rc 0 "$DUETCTL" up r0
expect_rc 0 "$DUETCTL" status r0 --json
assert_eq "$(json .crashed_primary)" false "crash state after a clean restart"
assert_eq "$(json .recovered)" false "fresh device after a clean stop"
expect_rc 0 "$DUETCTL" down r0
pass
