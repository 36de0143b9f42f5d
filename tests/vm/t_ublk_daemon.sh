#!/bin/bash
# duetd as a daemon, and what it keeps in the metadata:
#  - without --foreground it returns only once the device is ready (the
#    socket answers), exit 0, and SIGTERM stops it cleanly;
#  - with a peer configured (never connected yet), every write marks its
#    range in the bitmap, which a clean stop persists;
#  - after kill -9 the restarted daemon marks the activity log's extents
#    out of sync too (they may differ from the peer).
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
require_cmd jq dd
export DUET_NODE=alpha
cd "$T"

json() { jq -r "$1" <<<"$OUT"; }
MiB=$((1 << 20))
gone() { ! kill -0 "$1" 2>/dev/null; }
dirty_on_disk() {
	expect_rc 0 "$DUETCTL" dump-md r0 --json
	json '.bitmap.dirty_bytes // .dirty_bytes'
}

step "standalone: duetd daemonizes once the device is ready"
mk_sparse "$T/alpha.img" 128M
write_resource r0 nodes=alpha
expect_rc 0 "$DUETCTL" create-md r0
expect_rc 0 "$DUETD" --resource r0
# no waiting: the socket answers as soon as the parent has exited
expect_rc 0 "$DUETCTL" status r0 --json
pid=$(json .pid)
dev=$(json .device)
[ -b "$dev" ] || fail "$dev missing right after duetd returned"
assert_eq "$(cat "$RUN_DIR/r0.pid")" "$pid" "pid file"
assert_contains "$(cat "$RUN_DIR/r0.state")" "dev_id=$(json .dev_id)" \
	"state file"
assert_eq "$(json .peer)" null "peer of a standalone resource"

step "SIGTERM stops it cleanly"
kill -TERM "$pid"
wait_until 30 gone "$pid" || fail "duetd ignored SIGTERM"
[ ! -e "$dev" ] || fail "$dev left after SIGTERM"
[ ! -e "$RUN_DIR/r0.sock" ] || fail "socket left after SIGTERM"
expect_rc 0 "$DUETCTL" dump-md r0 --json
assert_eq "$(json '.superblock.flag_names | index("primary")')" null \
	"primary flag after SIGTERM"

step "with a peer: writes are marked in the bitmap"
mk_sparse "$T/alpha.img" 128M
write_resource r0
expect_rc 0 "$DUETCTL" create-md r0 --force
assert_eq "$(dirty_on_disk)" 0 "dirty bytes after create-md"
expect_rc 0 "$DUETCTL" up r0
expect_rc 0 "$DUETCTL" status r0 --json
dev=$(json .device)
assert_eq "$(json .peer)" beta "peer"
assert_eq "$(json .bitmap.dirty_bytes)" 0 "dirty bytes before writing"
dd if=/dev/urandom of="$dev" bs=1M count=1 seek=8 oflag=direct status=none
dd if=/dev/urandom of="$dev" bs=4k count=1 seek=$((40 * 256 + 3)) \
	oflag=direct status=none
expect_rc 0 "$DUETCTL" status r0 --json
assert_eq "$(json .bitmap.dirty_bytes)" $((MiB + 4096)) \
	"dirty bytes after 1 MiB + 4 KiB of writes"
expect_rc 0 "$DUETCTL" down r0
assert_eq "$(dirty_on_disk)" $((MiB + 4096)) \
	"dirty bytes persisted by the clean stop"

step "kill -9: the activity log's extents join the bitmap"
expect_rc 0 "$DUETCTL" up r0
expect_rc 0 "$DUETCTL" status r0 --json
pid=$(json .pid)
dev=$(json .device)
# a write into a fresh 4 MiB extent (the 6th): hot in the AL now
dd if=/dev/urandom of="$dev" bs=4k count=1 seek=$((20 << 8)) \
	oflag=direct status=none
expect_rc 0 "$DUETCTL" status r0 --json
[ "$(json .al.active)" -ge 3 ] || fail "expected at least 3 hot extents"
kill -9 "$pid"
wait_until 10 gone "$pid" || fail "duetd $pid did not die"
expect_rc 0 "$DUETCTL" up r0
expect_rc 0 "$DUETCTL" status r0 --json
assert_eq "$(json .crashed_primary)" true "crash noticed"
# every hot extent (4 MiB each) is now dirty, not just the bytes written
[ "$(json .bitmap.dirty_bytes)" -ge $((3 * 4 * MiB)) ] ||
	fail "dirty bytes $(json .bitmap.dirty_bytes): AL extents not marked"
expect_rc 0 "$DUETCTL" down r0
[ "$(dirty_on_disk)" -ge $((3 * 4 * MiB)) ] ||
	fail "AL extents not persisted in the bitmap"
pass
