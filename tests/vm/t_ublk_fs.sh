#!/bin/bash
# A filesystem on the ublk device: mkfs.ext4 (which discards the whole
# device), mount, write files, sync, umount, fsck -n reports it clean; the
# journal's flushes and FUA writes reach the daemon; after duetctl down/up
# the files are still there with the same checksums.
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
require_cmd jq mkfs.ext4 fsck.ext4 sha256sum mount umount
export DUET_NODE=alpha
cd "$T"

json() { jq -r "$1" <<<"$OUT"; }
MNT=$T/mnt
mkdir -p "$MNT"
on_exit "umount '$MNT' 2>/dev/null; '$DUETCTL' down r0 >/dev/null 2>&1"

step "device up on a 256 MiB file"
mk_sparse "$T/alpha.img" 256M
write_resource r0 nodes=alpha extra='queues = 2;'
expect_rc 0 "$DUETCTL" create-md r0
expect_rc 0 "$DUETCTL" up r0
expect_rc 0 "$DUETCTL" status r0 --json
dev=$(json .device)

step "mkfs.ext4, mount, write files"
expect_rc 0 mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$dev"
expect_rc 0 "$DUETCTL" status r0 --json
[ "$(json .io.discards)" -gt 0 ] || fail "mkfs discarded nothing through duetd"
expect_rc 0 mount -t ext4 -o data=ordered "$dev" "$MNT"
head -c $((12 << 20)) /dev/urandom >"$MNT/big"
mkdir "$MNT/small"
for i in $(seq 1 200); do
	head -c $((RANDOM % 9000 + 1)) /dev/urandom >"$MNT/small/f$i"
done
cp "$MNT/big" "$MNT/big.copy"
sync
(cd "$MNT" && find . -type f -print0 | sort -z | xargs -0 sha256sum) \
	>"$T/sums"
[ "$(wc -l <"$T/sums")" -eq 202 ] || fail "expected 202 files"
expect_rc 0 umount "$MNT"

step "fsck -n: clean"
expect_rc 0 fsck.ext4 -n -f "$dev"

step "the journal's FLUSH and FUA reached the daemon"
expect_rc 0 "$DUETCTL" status r0 --json
[ "$(json .io.flushes)" -gt 0 ] || fail "no FLUSH reached duetd"
[ "$(json .io.fua_writes)" -gt 0 ] || fail "no FUA write reached duetd"
assert_eq "$(json .io.errors)" 0 "I/O errors"

step "down, up again: the files are intact"
expect_rc 0 "$DUETCTL" down r0
expect_rc 0 "$DUETCTL" up r0
expect_rc 0 "$DUETCTL" status r0 --json
dev=$(json .device)
expect_rc 0 fsck.ext4 -n -f "$dev"
expect_rc 0 mount -t ext4 -o ro "$dev" "$MNT"
(cd "$MNT" && sha256sum --quiet -c "$T/sums") ||
	fail "file contents changed across down/up"
expect_rc 0 umount "$MNT"
expect_rc 0 "$DUETCTL" down r0
pass
