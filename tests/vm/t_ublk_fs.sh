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

step "a daemon started while the filesystem is mounted does not pin it"
# (a private mount namespace in duetd once kept a copy of every mount alive
# after the admin's umount: unflushed, and the device could not stop)
mk_sparse "$T/beta.img" 64M
write_resource r1 nodes=alpha alpha_disk="$T/beta.img" extra='queues = 1;'
expect_rc 0 "$DUETCTL" create-md r1
expect_rc 0 "$DUETCTL" up r1
on_exit "'$DUETCTL' down r1 >/dev/null 2>&1"
pid1=$("$DUETCTL" status r1 --json | jq -r .pid)
assert_eq "$(readlink "/proc/$pid1/ns/mnt")" "$(readlink /proc/self/ns/mnt)" \
	"duetd's mount namespace"
expect_rc 0 umount "$MNT"
grep -q " $MNT " "/proc/$pid1/mountinfo" &&
	fail "r1's duetd still sees r0's filesystem mounted"
expect_rc 0 timeout 30 "$DUETCTL" down r0
expect_rc 0 "$DUETCTL" down r1
pass
