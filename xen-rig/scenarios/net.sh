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

netback_and_guests $A $B
step member-a 60 start_member $A
step member-b 60 start_member $B
step connect 180 connect
step lease-a 90 port_lease $A
step lease-b 90 port_lease $B
step ping-a-b 90 ping_peer $A $B
step ping-b-a 90 ping_peer $B $A
step ping-a-netback 90 ping_ok $A $MGMT
step ping-b-netback 90 ping_ok $B $MGMT
step tcp 240 timed tcp_move $A $B 2048
step counters-a 60 counters $A
step counters-b 60 counters $B
step stats 60 stats
step remove-b 120 disconnect_b
step gone-b 60 b_device_gone
step netback-removed 60 netback_removed_b
step stays-a 60 a_stays_up
step ping-a-netback-after 90 ping_ok $A $MGMT
step stop-a 60 stop_member $A
