#!/bin/bash
# The NBD export of a standalone resource, driven by NBD clients we did not
# write (duetd runs NBD-only here: the host has no ublk):
#  - nbdinfo sees the export as configured (size, flags, block sizes);
#  - qemu-img convert + compare, and the bytes are in the disk's data area;
#  - nbdcopy over four connections (CAN_MULTI_CONN);
#  - fio --verify while bad clients (garbage handshake, bad request magic,
#    oversized write, a handshake that never ends) are cut off: fio does
#    not notice, the status counts the dropped clients;
#  - a TCP export on the loopback address, bound there and nowhere else;
#  - `down` removes the unix socket.
# timeout: 240
set -uo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
require_bin duetctl duetd
require_cmd nbdinfo qemu-img nbdcopy fio jq python3 ss
[ -e /dev/ublk-control ] &&
	skip "this host has ublk: duetd would serve ublk, not NBD-only"
fio --enghelp=nbd >/dev/null 2>&1 || skip "fio has no nbd engine"
cd "$T" || exit 1

A() { "$DUETCTL" --node alpha "$@"; }
status() { A status r0 --json | jq -r "$1"; }
SOCK=$T/r0.nbd
URI="nbd+unix:///r0?socket=$SOCK"
on_exit 'A down r0 >/dev/null 2>&1'

# bad_client KIND: one misbehaving connection; exits 0 once the server
# has closed it (within 10 s).
bad_client() {
	python3 - "$SOCK" "$1" <<'EOF'
import socket, struct, sys
path, kind = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(path)
g = s.recv(18)
assert g[:8] == b'NBDMAGIC', g
def go():
    name = b'r0'
    s.sendall(struct.pack('>I', 3) +
              struct.pack('>QII', 0x49484156454F5054, 7, 4 + len(name) + 2) +
              struct.pack('>I', len(name)) + name + struct.pack('>H', 0))
    while True:
        h = b''
        while len(h) < 20:
            h += s.recv(20 - len(h))
        _, opt, typ, ln = struct.unpack('>QIII', h)
        d = b''
        while len(d) < ln:
            d += s.recv(ln - len(d))
        if typ == 1:
            return
if kind == 'garbage':
    s.sendall(b'\0\0\0\3' + b'not an option header at all')
elif kind == 'magic':
    go()
    s.sendall(b'\x5a' * 28)
elif kind == 'oversized':
    go()
    s.sendall(struct.pack('>IHHQQI', 0x25609513, 0, 1, 1, 0, 64 << 20))
elif kind == 'stall':
    s.sendall(b'\0\0\0\3')	# and nothing more
    s.settimeout(40)
while True:		# the server must close: recv returns b''
    if not s.recv(65536):
        break
EOF
}

step "a standalone resource exported on a unix socket"
mk_sparse "$T/alpha.img" 64M
write_resource r0 nodes=alpha alpha_extra="nbd-listen = \"unix:$SOCK\";"
expect_rc 0 A create-md r0
expect_rc 0 A up r0
wait_until 10 test -S "$SOCK" || fail "no socket at $SOCK"
assert_eq "$(stat -c %a "$SOCK")" 600 "socket mode"
assert_eq "$(status .nbd.address)" "unix:$SOCK" "status: nbd.address"
DATA=$(status .data_bytes)

step "nbdinfo"
expect_rc 0 timeout 30 nbdinfo --json "$URI"
info=$OUT
assert_eq "$(jq -r '.exports[0]["export-size"]' <<<"$info")" "$DATA" \
	"export size = data size"
assert_eq "$(jq -r '.exports[0].can_multi_conn' <<<"$info")" true \
	"can_multi_conn"
assert_eq "$(jq -r '.exports[0].can_flush' <<<"$info")" true "can_flush"
assert_eq "$(jq -r '.exports[0].can_fua' <<<"$info")" true "can_fua"
assert_eq "$(jq -r '.exports[0].block_size_minimum' <<<"$info")" 512 \
	"minimum block size"
run timeout 30 nbdinfo "nbd+unix:///other?socket=$SOCK"
assert_ne "$RC" 0 "nbdinfo of an export that does not exist"

step "qemu-img convert and compare; the bytes reach the disk"
head -c "$DATA" /dev/urandom >"$T/src.img"
expect_rc 0 timeout 120 qemu-img convert -n -f raw -O raw "$T/src.img" "$URI"
expect_rc 0 timeout 120 qemu-img compare -q -f raw -F raw "$T/src.img" "$URI"
cmp -n "$DATA" "$T/src.img" "$T/alpha.img" ||
	fail "the data area differs from what qemu-img wrote"

step "nbdcopy over four connections"
expect_rc 0 timeout 120 nbdcopy --connections=4 "$URI" "$T/copy.img"
cmp "$T/src.img" "$T/copy.img" || fail "nbdcopy read back other bytes"

step "fio --verify while bad clients come and go"
bg_start fio fio --name=v --ioengine=nbd --uri="$URI" --rw=randrw \
	--bs=4k-128k --size=32M --iodepth=8 --time_based --runtime=8 \
	--verify=crc32c --verify_fatal=1
dropped0=$(status .nbd.dropped)
sleep 1
bad_client stall &
stall=$!
for k in garbage magic oversized garbage magic oversized; do
	bad_client "$k" || fail "bad client '$k' was not disconnected"
done
wait "$(bg_pid fio)"
fio_rc=$?
[ "$fio_rc" -eq 0 ] || {
	cat "$T/fio.log"
	fail "fio failed ($fio_rc) while bad clients were cut off"
}
grep -q 'err= 0' "$T/fio.log" || fail "fio reported errors"
# the stalled handshake is cut after 30 s
wait "$stall" || fail "the stalled handshake was not cut off"
assert_eq "$(status .nbd.dropped)" $((dropped0 + 7)) "dropped clients"
# shellcheck disable=SC2317 # called through wait_until
no_clients() { [ "$(status .nbd.clients)" = 0 ]; }
wait_until 5 no_clients || fail "clients left: $(status .nbd.clients)"
expect_rc 0 timeout 120 nbdcopy "$URI" "$T/after.img"
expect_rc 0 A down r0
[ -e "$SOCK" ] && fail "the socket outlived the daemon"

step "a TCP export on the loopback address only"
PORT=$(free_port)
write_resource r0 nodes=alpha \
	alpha_extra="nbd-listen = \"127.0.0.1:$PORT\";"
expect_rc 0 A up r0
assert_eq "$(status .nbd.address)" "127.0.0.1:$PORT" "status: nbd.address"
# the local address of every listener on the port: exactly one, loopback
assert_eq "$(ss -Htln "sport = :$PORT" | awk '{print $4}')" \
	"127.0.0.1:$PORT" "listening sockets on port $PORT"
expect_rc 0 timeout 120 qemu-img compare -q -f raw -F raw "$T/after.img" \
	"nbd://127.0.0.1:$PORT/r0"
expect_rc 0 A down r0

pass
