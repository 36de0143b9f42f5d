# shellcheck shell=bash
# Two nodes on this host, alpha and beta, on loopback, each serving the
# device of resource r0 over its NBD export on a unix socket in $T (duetd
# runs NBD-only where /dev/ublk-control is absent). Sourced after lib.sh by
# the two-node tests: it checks the tools, skips on a host with ublk, cds to
# $T, and gives:
#   A ARGS / B ARGS       duetctl as alpha / beta (run dirs $T/ra, $T/rb)
#   NA, NB                the NBD URIs of alpha's and beta's exports
#   pair_resource EXTRA [KEY=VALUE...]   r0.conf for the pair (extra keys)
#   status NODE JQ        one field of NODE's status --json
#   field_is / field_ne NODE JQ VALUE, field_ge NODE JQ N   (for wait_until)
#   synced                alpha Primary, both UpToDate, Established
#   same_data [WHY]       the two data areas are byte-identical, else fail
#   log_bytes [LOG [PEER]]  bytes of the last "resync to PEER done" line
#   has_event FILE JQ     some event line of FILE matches the jq filter
# Both daemons are taken down at exit.

require_bin duetctl duetd
require_cmd qemu-io jq
[ -e /dev/ublk-control ] &&
	skip "this host has ublk: duetd would serve ublk, not NBD-only"
cd "$T" || fail "cd $T"

MiB=$((1 << 20))
P1=$(free_port)
P2=$(free_port)
mkdir -p "$T/ra" "$T/rb"
NA="nbd+unix:///r0?socket=$T/a.nbd"
NB="nbd+unix:///r0?socket=$T/b.nbd"
A() { "$DUETCTL" --node alpha --run-dir "$T/ra" "$@"; }
B() { "$DUETCTL" --node beta --run-dir "$T/rb" "$@"; }
on_exit 'A down r0 >/dev/null 2>&1; B down r0 >/dev/null 2>&1'

pair_resource() {
	local extra=$1
	shift
	write_resource r0 alpha_addr="127.0.0.1:$P1" beta_addr="127.0.0.1:$P2" \
		alpha_extra="nbd-listen = \"unix:$T/a.nbd\";" \
		beta_extra="nbd-listen = \"unix:$T/b.nbd\";" \
		extra="$extra" "$@"
}

status() { "$1" status r0 --json | jq -r "$2"; }
field_is() { [ "$(status "$1" "$2" 2>/dev/null)" = "$3" ]; }
field_ne() { [ "$(status "$1" "$2" 2>/dev/null)" != "$3" ]; }
field_ge() {
	local v
	v=$(status "$1" "$2" 2>/dev/null)
	[[ "$v" =~ ^[0-9]+$ ]] && [ "$v" -ge "$3" ]
}
synced() {
	[ "$(status A .state 2>/dev/null)" = \
		"Primary/Secondary UpToDate/UpToDate Connected Established" ]
}
same_data() {
	cmp -n "$(status A .data_bytes)" "$T/alpha.img" "$T/beta.img" ||
		fail "the data areas differ (${1:-})"
}
log_bytes() {
	grep "resync to ${2:-beta} done" "${1:-$T/ra/r0.log}" | tail -1 |
		sed 's/.*done: \([0-9]*\) bytes.*/\1/'
}
has_event() { jq -s -e "map(select($2)) | length > 0" "$1" >/dev/null; }
