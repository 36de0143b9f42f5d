#!/bin/bash
# Peers that must be refused, on the host (two nodes on loopback, NBD
# front ends): a wrong shared secret, a wrong resource name and garbage
# bytes on the replication port are refused with the reason logged, while
# the primary keeps serving I/O; the right peer then connects and the
# writes made meanwhile are resynced, ending with identical data areas.
# timeout: 120
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

require_bin duetctl duetd
require_cmd qemu-io jq
[ -e /dev/ublk-control ] &&
	skip "this host has ublk: duetd would serve ublk, not NBD-only"
cd "$T"

P1=$(free_port)
P2=$(free_port)
mkdir -p "$T/ra" "$T/rb" "$T/etcb"
A() { "$DUETCTL" --node alpha --run-dir "$T/ra" "$@"; }
B() { "$DUETCTL" --node beta --run-dir "$T/rb" --config-dir "$T/etcb" "$@"; }
NA="nbd+unix:///r0?socket=$T/a.nbd"
on_exit 'A down r0 >/dev/null 2>&1; B down r0 >/dev/null 2>&1; B down r1 >/dev/null 2>&1'

status() {	# status NODE JQ [RES]
	"$1" status "${3:-r0}" --json | jq -r "$2"
}
field_is() { [ "$(status "$1" "$2" 2>/dev/null)" = "$3" ]; }
log_has() { grep -q "$1" "$T/ra/r0.log"; }

# alpha writes and reads back through its NBD export: it is serving
serving() {	# serving OFFSET PATTERN
	qemu-io --image-opts "driver=nbd,server.type=unix,server.path=$T/a.nbd,export=r0" \
		-c "write -P $2 $1 64k" -c "read -P $2 $1 64k" >"$T/qio.log" 2>&1 ||
		{ cat "$T/qio.log"; fail "alpha does not serve I/O ($3)"; }
}

mk_sparse "$T/alpha.img" 64M
mk_sparse "$T/beta.img" 64M
write_resource r0 alpha_addr="127.0.0.1:$P1" beta_addr="127.0.0.1:$P2" \
	alpha_extra="nbd-listen = \"unix:$T/a.nbd\";" \
	beta_extra="nbd-listen = \"unix:$T/b.nbd\";" \
	extra="reconnect-min = 100; reconnect-max = 500;"
good_secret=$(sed -n 's/^secret = "\(.*\)";/\1/p' "$CONF_DIR/r0.conf")
[ -n "$good_secret" ] || fail "no secret in the generated config"
expect_rc 0 A create-md r0 --force
expect_rc 0 "$DUETCTL" --node beta --config-dir "$CONF_DIR" create-md r0 --force

step "wrong secret: refused on both sides, the primary keeps serving"
sed "s/^secret = .*/secret = \"not-the-shared-secret\";/" \
	"$CONF_DIR/r0.conf" >"$T/etcb/r0.conf"
expect_rc 0 A up r0
expect_rc 0 B up r0
expect_rc 0 A primary r0 --force
serving 0 0x11 "wrong-secret peer around"
sleep 2
assert_eq "$(status A .connection)" Connecting "alpha's connection"
wait_until 10 log_has "wrong shared secret" ||
	fail "alpha's log does not name the secret: $(tail -5 "$T/ra/r0.log")"
grep -q "wrong shared secret" "$T/rb/r0.log" || fail "beta's log does not name the secret"
serving 1048576 0x12 "after the refusals"
expect_rc 0 B down r0

step "garbage on the replication port: dropped, the primary keeps serving"
for i in 1 2 3; do
	exec 3<>"/dev/tcp/127.0.0.1/$P1" || fail "cannot reach alpha's port"
	head -c 65536 /dev/urandom >&3 2>/dev/null || true
	exec 3>&-
done
wait_until 10 log_has "bad magic" ||
	fail "alpha's log does not report the garbage: $(tail -5 "$T/ra/r0.log")"
serving 2097152 0x13 "after garbage"
assert_eq "$(status A .role)" Primary "alpha's role after garbage"

step "wrong resource name: refused, the primary keeps serving"
sed -e "s/^resource = .*/resource = \"r1\";/" \
	-e "s/^secret = .*/secret = \"$good_secret\";/" \
	"$CONF_DIR/r0.conf" >"$T/etcb/r1.conf"
rm -f "$T/etcb/r0.conf"
expect_rc 0 B up r1
sleep 2
assert_eq "$(status A .connection)" Connecting "alpha's connection (r1 peer)"
wait_until 10 log_has "wrong resource name" ||
	fail "alpha's log does not name the resource: $(tail -5 "$T/ra/r0.log")"
serving 3145728 0x14 "wrong-resource peer around"
expect_rc 0 B down r1

step "the right peer connects and gets what was written meanwhile"
cp "$CONF_DIR/r0.conf" "$T/etcb/r0.conf"
expect_rc 0 B up r0
wait_until 60 field_is A .state \
	"Primary/Secondary UpToDate/UpToDate Connected Established" ||
	fail "no sync with the right peer: $(status A .state)"
d=$(status A .data_bytes)
expect_rc 0 A down r0
expect_rc 0 B down r0
cmp -n "$d" "$T/alpha.img" "$T/beta.img" || fail "the data areas differ"
exit 0
