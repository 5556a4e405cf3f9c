# net: netback-uk switches two Linux domUs on real Xen. Each domU runs the
# userspace member (share-member) as a service; dom0 connects both to
# netback-uk with the vdevice tool; each gets a TAP device xsn0 with the
# port's MAC and an address by DHCP from netback-uk's management endpoint
# (10.77.0.1 on LAN 0), they ping each other and netback-uk, and move a
# file over TCP. Then dom0 removes net-b's port: its device goes away,
# net-a's stays and still reaches netback-uk. netback-uk's per-port
# counters (every 10 s on its console, and on its counter page for
# `vdevice stats`) must show the traffic. Each member's log is handed over
# as share-member-<domU>.log.
A=net-a
B=net-b
# netback-uk's management address on LAN 0 (docs/protocol.md).
MGMT=10.77.0.1

# Hands over each member's log, pass or fail (the scenario's exit trap).
collect_member_logs() {
    for _d in $A $B; do
        xl domid "$_d" >/dev/null 2>&1 || continue
        bounded 30 dom_run "$_d" 'cat /tmp/share-member.log' > "/tmp/share-member-$_d.log" 2>/dev/null
        rig_send_file "share-member-$_d.log" "/tmp/share-member-$_d.log"
    done
}
trap collect_member_logs EXIT

# start_member NAME: tun loaded, share-member started in the background
# (its own session, its log in /tmp), until it has published its page.
start_member() {
    dom_run "$1" '
modprobe tun || exit 1
[ -c /dev/net/tun ] || { echo "no /dev/net/tun"; exit 1; }
'"$START_SHARE_MEMBER"
}

connect() {
    timed vdevice --timeout 60 create net --backend "$(xl domid netback-uk)" \
        "$(xl domid $A)" "$(xl domid $B)" || return 1
    timed vdevice show "$(xl domid netback-uk)"
}

# link_up NAME: xsn0 exists with the port's MAC, is up with carrier (the
# switch's link_state) and gets a lease from netback-uk; the address goes
# to /tmp/addr-NAME in dom0 for the later steps.
link_up() {
    _mac=$(mac_of "$1") || return 1
    dom_run "$1" "
i=0
until [ -e /sys/class/net/xsn0 ]; do
    i=\$((i + 1)); [ \$i -gt 150 ] && { echo 'no xsn0'; ip link; exit 1; }
    sleep 0.2
done
ip link set xsn0 up || exit 1
mac=\$(cat /sys/class/net/xsn0/address)
echo \"xsn0 MAC \$mac (want $_mac)\"
[ \"\$mac\" = $_mac ] || exit 1
i=0
until [ \"\$(cat /sys/class/net/xsn0/carrier 2>/dev/null)\" = 1 ]; do
    i=\$((i + 1)); [ \$i -gt 150 ] && { echo 'xsn0 has no carrier'; exit 1; }
    sleep 0.2
done
udhcpc -i xsn0 -n -q -t 5 -T 3 -s /etc/rig/udhcpc || exit 1
ip -4 addr show xsn0" > "/tmp/link-$1" || { cat "/tmp/link-$1"; return 1; }
    cat "/tmp/link-$1"
    grep -q "lease: xsn0 10.77.0.[0-9]*/24 from server $MGMT" "/tmp/link-$1" || return 1
    sed -n 's|.*inet \(10\.77\.0\.[0-9]*\)/24.*|\1|p' "/tmp/link-$1" | head -n 1 > "/tmp/addr-$1"
    echo "address of $1: $(cat "/tmp/addr-$1")"
    [ -s "/tmp/addr-$1" ]
}

addr() {
    cat "/tmp/addr-$1"
}

# ping_peer FROM TO: FROM pings TO's leased address.
ping_peer() {
    ping_ok "$1" "$(addr "$2")"
}

# ping_ok FROM ADDR: five echo requests, one at a time, each answered
# within 10 s. (One `ping -c 5` waits only about twice the slowest round
# trip, at least 1 s, for its last reply, and TCG has pauses of that size.)
ping_ok() {
    dom_run "$1" "for i in 1 2 3 4 5; do
    ping -c 1 -W 10 $2 > /tmp/ping.out
    grep -q 'bytes from' /tmp/ping.out || { cat /tmp/ping.out; exit 1; }
    grep 'bytes from' /tmp/ping.out
done"
}

# tcp_move: 2 MiB of random bytes from net-a to net-b over TCP (busybox
# nc), checksums compared. The listener's stdin is a pipe that stays open:
# busybox nc ends at its stdin's EOF, which would cut the stream short.
tcp_move() {
    dom_run $B 'rm -f /tmp/recv; (sleep 120 | nc -l -p 5001 > /tmp/recv) > /dev/null 2>&1 < /dev/null &
i=0
until netstat -ltn | grep -q ":5001 "; do
    i=$((i + 1)); [ $i -gt 50 ] && { echo "nc does not listen"; exit 1; }
    sleep 0.2
done' || return 1
    dom_run $A "dd if=/dev/urandom of=/tmp/send bs=1024 count=2048 2>/dev/null || exit 1
read t0 _ < /proc/uptime
nc $(addr $B) 5001 < /tmp/send || exit 1
read t1 _ < /proc/uptime
echo \"sent 2 MiB in \$t0 .. \$t1 s (uptime)\"
sha256sum /tmp/send" > /tmp/sum-a || { cat /tmp/sum-a; return 1; }
    dom_run $B 'i=0
while pidof nc > /dev/null; do
    i=$((i + 1)); [ $i -gt 300 ] && { echo "nc still receiving"; ls -l /tmp/recv; exit 1; }
    sleep 0.2
done
killall sleep 2>/dev/null
ls -l /tmp/recv; sha256sum /tmp/recv' > /tmp/sum-b || { cat /tmp/sum-b; return 1; }
    cat /tmp/sum-a /tmp/sum-b
    _a=$(awk '$2 == "/tmp/send" { print $1 }' /tmp/sum-a)
    _b=$(awk '$2 == "/tmp/recv" { print $1 }' /tmp/sum-b)
    [ -n "$_a" ] && [ "$_a" = "$_b" ]
}

# counters NAME: netback-uk's periodic report shows frames from NAME's port
# and frames to it.
counters() {
    _id=$(xl domid "$1") || return 1
    _log=$(dom_log netback-uk)
    until grep -aE "dom $_id .* up: from-member [1-9][0-9]* frames [0-9]+ B, to-member [1-9]" "$_log" >/dev/null; do
        sleep 1
    done
    grep -aE "dom $_id .* up: from-member" "$_log" | tail -n 1 | sed 's/@@/@ @/g'
}

# stats: dom0 reads netback-uk's per-port counters from its counter page
# (no xenstore): both ports up, frames both ways.
stats() {
    vdevice stats "$(xl domid netback-uk)" > /tmp/stats || { cat /tmp/stats; return 1; }
    cat /tmp/stats
    [ "$(grep -cE 'from_member_frames=[1-9][0-9]* .*to_member_frames=[1-9][0-9]* .*link=1' /tmp/stats)" -ge 2 ]
}

disconnect_b() {
    echo "$(xl domid $B)" > /tmp/id-b
    vdevice --timeout 60 remove net --backend "$(xl domid netback-uk)" "$(xl domid $B)" || return 1
    vdevice show "$(xl domid netback-uk)"
}

b_device_gone() {
    dom_run $B '
i=0
while [ -e /sys/class/net/xsn0 ]; do
    i=$((i + 1)); [ $i -gt 150 ] && { echo "xsn0 is still there"; exit 1; }
    sleep 0.2
done
ip link
pidof share-member > /dev/null || { echo "share-member exited"; exit 1; }
grep "removed" /tmp/share-member.log'
}

a_stays_up() {
    dom_expect $A "carrier 1" 'pidof share-member > /dev/null || { echo "share-member exited"; exit 1; }
ip addr show xsn0 || exit 1
echo "carrier $(cat /sys/class/net/xsn0/carrier)"'
}

netback_removed_b() {
    dom_wait netback-uk "port of domain $(cat /tmp/id-b) removed"
}

# stop_member NAME: SIGTERM; it leaves its shares, closes xsn0 with a
# counter line and removes its key.
stop_member() {
    dom_expect "$1" "closed (tx" 'kill -TERM $(pidof share-member) || exit 1
i=0
while pidof share-member > /dev/null; do
    i=$((i + 1)); [ $i -gt 100 ] && { echo "share-member still runs"; exit 1; }
    sleep 0.2
done
cat /tmp/share-member.log'
}

step netback-create 120 dom_create /xl-configs/netback-uk.cfg netback-uk
step create-a 120 dom_create /rig/domu/linux-pv.cfg $A
step create-b 120 dom_create /rig/domu/linux-pv.cfg $B
step netback-ready 120 dom_wait netback-uk "netback-uk: ready"
step boot-a 180 dom_wait $A @@READY
step boot-b 180 dom_wait $B @@READY
step member-a 60 start_member $A
step member-b 60 start_member $B
step connect 180 connect
step lease-a 90 link_up $A
step lease-b 90 link_up $B
step ping-a-b 90 ping_peer $A $B
step ping-b-a 90 ping_peer $B $A
step ping-a-netback 90 ping_ok $A $MGMT
step ping-b-netback 90 ping_ok $B $MGMT
step tcp 240 timed tcp_move
step counters-a 60 counters $A
step counters-b 60 counters $B
step stats 60 stats
step remove-b 120 disconnect_b
step gone-b 60 b_device_gone
step netback-removed 60 netback_removed_b
step stays-a 60 a_stays_up
step ping-a-netback-after 90 ping_ok $A $MGMT
step stop-a 60 stop_member $A
