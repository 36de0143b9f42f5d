#!/bin/bash
# Fencing (suspend-io) and handlers, two nodes on loopback served over their
# NBD exports (as t_repl_nbd.sh). One handler script, written here, records
# its DUET_* environment in $T/h.EVENT.NODE.env; fence-peer waits for $T/go
# and exits with $T/fence.rc, before-resync-target exits with $T/before.rc.
#  - the initial sync: before- and after-resync-target run on beta;
#  - kill -9 of the secondary: alpha suspends I/O; a write in flight when
#    the connection broke, a write and a read issued after stay pending while
#    fence-peer runs; exit 4: they complete, the peer is recorded Outdated,
#    a "handler" event says 4; after a restart alpha still knows it (disk
#    UpToDate, promotion without --force);
#  - fence-peer exits 1: the write stays pending; `resume-io` releases it;
#    again, and restarting the secondary releases it;
#  - before-resync-target exits 1: the resync does not start, beta goes
#    StandAlone with the reason logged; exit 0 and connect: it resyncs;
#  - a split brain runs split-brain on both nodes, unresolved, then
#    resolved by --discard-my-data (victim beta);
#  - `down` while I/O is held: the held write fails (EIO), the daemon stops.
# timeout: 150
set -uo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=tests/integration/pair.sh
. "$(dirname "$0")/pair.sh"

H=$T/handler.sh
sed "s|@T@|$T|g" >"$H" <<'EOF'
#!/bin/sh
# argv[1] is the handler's name; the environment holds DUET_* only (+PATH)
out=@T@/h.$1.$DUET_NODE
env | grep '^DUET_' | sort >"$out.tmp" && mv "$out.tmp" "$out.env"
echo "$1 on $DUET_NODE: role $DUET_ROLE, disk $DUET_DISK_STATE"
case $1 in
fence-peer)
	i=0
	while [ ! -e @T@/go ] && [ $i -lt 300 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	exit "$(cat @T@/fence.rc)"
	;;
before-resync-target)
	exit "$(cat @T@/before.rc)"
	;;
esac
exit 0
EOF
chmod 755 "$H"
echo 4 >"$T/fence.rc"
echo 0 >"$T/before.rc"

# env_is NODE HANDLER VAR VALUE: the handler's last run had VAR=VALUE
env_is() {
	local f=$T/h.$2.$1.env
	[ -e "$f" ] || fail "$2 did not run on $1"
	grep -qx "$3=$4" "$f" ||
		fail "$2 on $1: expected $3=$4, got: $(grep "^$3=" "$f")"
}
# The writes run in the background (qemu-io, line-buffered): "wrote" is
# printed when the write completed to the application. (Its FLUSH at exit
# is held too while suspended, so the process alone would not tell.)
pending() {
	kill -0 "$(bg_pid "$1")" 2>/dev/null &&
		! grep -Eq '^(wrote|read) ' "$T/$1.log"
}
# finished NAME: the write completed, the job ended with exit code 0
finished() {
	wait_until 15 grep -Eq '^(wrote|read) ' "$T/$1.log" ||
		fail "$1 still pending"
	wait_until 15 eval '! kill -0 "$(bg_pid '"$1"')" 2>/dev/null' ||
		fail "$1 did not end"
	bg_stop "$1" || fail "$1 failed: $(cat "$T/$1.log")"
}
B_down_hard() {
	kill -9 "$(status B .pid)"
	wait_until 10 field_is A .suspended true ||
		fail "alpha did not suspend I/O: $(status A .state)"
}

mk_sparse "$T/alpha.img" 32M
mk_sparse "$T/beta.img" 32M
pair_resource "fencing = \"suspend-io\"; resync-rate = \"200M\";
reconnect-min = 100; reconnect-max = 500;
handlers = { fence-peer = \"$H\"; split-brain = \"$H\";
	before-resync-target = \"$H\"; after-resync-target = \"$H\"; };"
expect_rc 0 A create-md r0 --force
expect_rc 0 B create-md r0 --force
expect_rc 0 A up r0
expect_rc 0 B up r0
bg_start evA A events r0 --json
expect_rc 0 A wait-connect r0 --timeout 20
expect_rc 0 A primary r0 --force

step "initial sync: before- and after-resync-target on beta"
wait_until 60 synced || fail "no initial sync: $(status A .state)"
env_is beta before-resync-target DUET_EVENT before-resync-target
env_is beta before-resync-target DUET_ROLE Secondary
env_is beta before-resync-target DUET_RESYNC_FULL 1
env_is beta before-resync-target DUET_PEER alpha
wait_until 10 test -e "$T/h.after-resync-target.beta.env" ||
	fail "after-resync-target did not run"
env_is beta after-resync-target DUET_DISK_STATE UpToDate
env_is beta after-resync-target DUET_RESYNC_BYTES "$(status A .data_bytes)"
[ -e "$T/h.before-resync-target.alpha.env" ] &&
	fail "before-resync-target ran on the source"
assert_eq "$(status A .suspended)" false "suspended while connected"
grep -q "handler before-resync-target: before-resync-target on beta" \
	"$T/rb/r0.log" || fail "the handler's output is not in beta's log"

step "secondary killed: I/O held until fence-peer (exit 4) outdates it"
# stopped first, so that the write is in flight (sent, not acknowledged)
# when the connection breaks: its peer half fails, and it must still wait
bpid=$(status B .pid)
# a stopped daemon cannot answer `down`: never leave it behind
on_exit "kill -9 $bpid 2>/dev/null || true"
kill -STOP "$bpid"
bg_start w1 stdbuf -oL qemu-io -f raw "$NA" -c "write -P 0x5c 1M 64k"
sleep 0.5
pending w1 || fail "the write completed without the peer's ack"
kill -9 "$bpid"
wait_until 10 field_is A .suspended true ||
	fail "alpha did not suspend I/O: $(status A .state)"
assert_contains "$(status A .suspended_why)" "fence-peer handler runs" \
	"why suspended"
bg_start w1b stdbuf -oL qemu-io -f raw "$NA" -c "write -P 0x5d 5M 64k"
# reads are held too (DRBD suspends all I/O)
bg_start r1 stdbuf -oL qemu-io -f raw "$NA" -c "read -P 0 6M 4k"
wait_until 10 test -e "$T/h.fence-peer.alpha.env" ||
	fail "fence-peer did not run"
sleep 1
pending w1 || fail "the write completed while fence-peer runs: $(cat "$T/w1.log")"
env_is alpha fence-peer DUET_RESOURCE r0
env_is alpha fence-peer DUET_EVENT fence-peer
env_is alpha fence-peer DUET_NODE alpha
env_is alpha fence-peer DUET_PEER beta
env_is alpha fence-peer DUET_PEER_ADDRESS "127.0.0.1:$P2"
env_is alpha fence-peer DUET_ROLE Primary
env_is alpha fence-peer DUET_DISK "$T/alpha.img"
env_is alpha fence-peer DUET_FENCING suspend-io
assert_eq "$(status A .fencing.fence_peer_running)" true "fence-peer running"
pending w1b || fail "a new write completed while fence-peer runs"
pending r1 || fail "a read completed while fence-peer runs"
touch "$T/go"
finished w1
finished w1b
finished r1
assert_eq "$(status A .suspended)" false "suspended after fence-peer exit 4"
assert_eq "$(status A .peer_outdated)" true "the peer recorded Outdated"
assert_contains "$(status A .fencing.last_result)" "the peer was outdated" \
	"fence result"
grep -q "beta recorded Outdated in the metadata" "$T/ra/r0.log" ||
	fail "alpha's log does not say the peer is fenced"
wait_until 5 has_event "$T/evA.log" \
	'.event == "handler" and .handler == "fence-peer" and .exit_code == 4' ||
	fail "no handler event with exit code 4"
qemu-io -f raw "$NA" -c "read -P 0x5c 1M 64k" -c "read -P 0x5d 5M 64k" \
	>"$T/r.log" ||
	fail "read back: $(cat "$T/r.log")"
assert_not_contains "$(cat "$T/r.log")" "Pattern verification failed" \
	"the held write's data"

step "the fenced peer stays recorded: restart alpha alone"
bg_stop evA
expect_rc 0 A down r0
expect_rc 0 A up r0
bg_start evA A events r0 --json	# a new stream: counts start again
assert_eq "$(status A .peer_outdated)" true "peer-outdated after a restart"
# without the record the disk would be Consistent, promotion refused
assert_eq "$(status A .disk)" UpToDate "alpha's disk after a restart"
expect_rc 0 A primary r0

step "secondary back: resync, fencing armed again"
expect_rc 0 B up r0
wait_until 30 synced || fail "no resync: $(status A .state)"
assert_eq "$(status A .peer_outdated)" false "peer-outdated once connected"
same_data "after the reconnect"

step "fence-peer fails (exit 1): the write stays held until resume-io"
echo 1 >"$T/fence.rc"
rm -f "$T/h.fence-peer.alpha.env"
B_down_hard
bg_start w2 stdbuf -oL qemu-io -f raw "$NA" -c "write -P 0x6d 2M 64k"
wait_until 10 has_event "$T/evA.log" \
	'.event == "handler" and .handler == "fence-peer" and .exit_code == 1' ||
	fail "no handler event with exit code 1"
for _ in 1 2 3; do
	sleep 1
	pending w2 || fail "the write completed after fence-peer failed"
done
assert_eq "$(status A .suspended)" true "still suspended"
assert_contains "$(status A .suspended_why)" "fence-peer did not fence it" "why"
assert_contains "$(status A .suspended_why)" "resume-io r0" "what to do"
expect_rc 0 A resume-io r0
assert_contains "$OUT" "split brain" "resume-io's warning"
finished w2
assert_eq "$(status A .suspended)" false "suspended after resume-io"
assert_eq "$(status A .peer_outdated)" false "the peer is not outdated"
run A resume-io r0
assert_eq "$RC" 0 "resume-io with nothing suspended"
assert_contains "$OUT" "nothing to do" "resume-io's note"

step "fence-peer fails again: the secondary's return releases the write"
expect_rc 0 B up r0
wait_until 30 synced || fail "no resync: $(status A .state)"
B_down_hard
bg_start w3 stdbuf -oL qemu-io -f raw "$NA" -c "write -P 0x7e 3M 64k"
wait_until 10 eval '[ "$(jq -s "map(select(.event == \"handler\" and .handler == \"fence-peer\")) | length" "$T/evA.log")" -ge 2 ]' ||
	fail "fence-peer did not run again"
sleep 1
pending w3 || fail "the write completed after fence-peer failed"
expect_rc 0 B up r0
finished w3
wait_until 30 synced || fail "no resync: $(status A .state)"
same_data "after the held write"

step "before-resync-target exits 1: the resync does not start"
echo 1 >"$T/before.rc"
kill -9 "$(status B .pid)"
wait_until 10 field_is A .suspended true || fail "not suspended"
expect_rc 0 A resume-io r0
qemu-io -f raw "$NA" -c "write -P 0x8f 4M 1M" >/dev/null || fail "write"
expect_rc 0 B up r0
wait_until 15 field_is B .connection StandAlone ||
	fail "beta not StandAlone: $(status B .state)"
grep -q "before-resync-target handler failed (exit code 1): the resync from alpha does not start" \
	"$T/rb/r0.log" || fail "beta's log does not say why"
assert_eq "$(status B .disk)" Inconsistent "beta's disk"
[ "$(status A .bitmap.dirty_bytes)" -gt 0 ] ||
	fail "alpha's bitmap is clean: did a resync run?"
echo 0 >"$T/before.rc"
expect_rc 0 B connect r0
wait_until 30 synced || fail "no resync after connect: $(status A .state)"
same_data "after before-resync-target succeeded"

step "split brain: split-brain runs on both nodes"
expect_rc 0 A secondary r0
expect_rc 0 A disconnect r0
expect_rc 0 B disconnect r0
expect_rc 0 A primary r0 --force
qemu-io -f raw "$NA" -c "write -P 0xa1 8M 1M" >/dev/null || fail "write on alpha"
expect_rc 0 B primary r0 --force
qemu-io -f raw "$NB" -c "write -P 0xb1 12M 1M" >/dev/null || fail "write on beta"
expect_rc 0 A secondary r0
expect_rc 0 B secondary r0
expect_rc 0 A connect r0
expect_rc 0 B connect r0
wait_until 15 field_is A .handshake.split_brain true || fail "no split brain"
for n in alpha beta; do
	wait_until 10 test -e "$T/h.split-brain.$n.env" ||
		fail "split-brain did not run on $n"
	env_is "$n" split-brain DUET_SB_RESOLVED no
	env_is "$n" split-brain DUET_SB_POLICY disconnect
done
env_is alpha split-brain DUET_PEER beta
env_is beta split-brain DUET_PEER alpha
rm -f "$T"/h.split-brain.*.env
wait_until 10 field_is B .connection StandAlone || fail "beta not StandAlone"
expect_rc 0 B connect r0 --discard-my-data
expect_rc 0 A connect r0
expect_rc 0 B wait-sync r0 --timeout 60
for n in alpha beta; do
	wait_until 10 test -e "$T/h.split-brain.$n.env" ||
		fail "split-brain did not run on $n after the recovery"
	env_is "$n" split-brain DUET_SB_RESOLVED yes
	env_is "$n" split-brain DUET_SB_VICTIM beta
done
env_is beta split-brain DUET_SB_POLICY discard-my-data
same_data "after the split-brain recovery"

step "down while I/O is held: the held write fails, the daemon stops"
expect_rc 0 A primary r0
B_down_hard
bg_start w4 stdbuf -oL qemu-io -f raw "$NA" -c "write -P 0x9a 6M 64k"
sleep 1
pending w4 || fail "the write completed while suspended"
expect_rc 0 A down r0
wait_until 10 eval '! kill -0 "$(bg_pid w4)" 2>/dev/null' ||
	fail "the held write did not end with the daemon"
bg_stop w4 && fail "the held write succeeded: $(cat "$T/w4.log")"
assert_contains "$(cat "$T/w4.log")" "write failed" "the held write's end"
grep -q "stopping with application I/O held by fencing" "$T/ra/r0.log" ||
	fail "alpha's log does not say the held I/O fails"
pass
