# net-policy: port policy on real Xen (issue 22). netback-uk switches two
# Linux PV domUs with xensnet.ko on a LAN made with
# `vdevice --create net A B --bind-addresses --rate 4M`:
#   - both get leases through their bound ports and ping each other;
#   - B takes A's address (ip addr add, gratuitous ARP, ARP replies, pings
#     from it): nothing of it reaches A, and netback-uk counts B's frames
#     as policy drops on its console; B's own address still works;
#   - 2 MiB from A to B over TCP (nc), timed where they arrive, move at
#     no more than the limit (+10 %) (printed, with the rate);
# then the LAN is destroyed and made again with `--private`: each member
# still gets its lease and pings netback-uk, but not the other. No Oops,
# WARNING or BUG in any kernel log.

A=pol-a
B=pol-b
RATE_KBIT=4000

# The last console report of netback-uk for the port of domain $1.
port_report() {
    grep -a "dom $1 " "$(dom_log netback-uk)" | tail -n 1
}

make_lan() {
    vdevice --timeout 60 --create net "$A" "$B" "$@" || return 1
    vdevice --list
}

leases() {
    lan_guest $A && lan_guest $B
}

# ping_any FROM ADDR: of 3 echo requests from domU FROM, one answered.
ping_any() {
    dom_run "$1" "$(ping_cmd "$2")"
}

ping_fails() {
    ! dom_run "$1" "$(ping_cmd "$2" 2)"
}

# spoof: B claims A's address every way busybox knows; A hears none of it.
spoof() {
    _a=$(addr $A)
    dom_run $A 'cat /sys/class/net/xsn0/statistics/rx_packets > /tmp/rx-before' || return 1
    dom_run $B "ip addr add $_a/32 dev xsn0 || exit 1
arping -U -c 3 -I xsn0 -s $_a $_a
arping -A -c 3 -I xsn0 -s $_a $_a
ping -c 3 -W 2 -I $_a $(addr $A)
ip addr del $_a/32 dev xsn0
exit 0"
    # A's own traffic meanwhile is none: what it received came from B.
    dom_run $A 'echo "A received $(( $(cat /sys/class/net/xsn0/statistics/rx_packets) - $(cat /tmp/rx-before) )) frames during the spoofing"
arp -n 2>/dev/null || ip neigh'
}

# spoof_counted: netback-uk's next report counts B's frames as policy drops.
spoof_counted() {
    _b=$(xl domid $B)
    _i=0
    while :; do
        _line=$(port_report "$_b")
        _n=$(echo "$_line" | sed -n 's/.* policy \([0-9]*\),.*/\1/p')
        echo "netback-uk: $_line"
        [ -n "$_n" ] && [ "$_n" -ge 3 ] && { echo "@@SAY B's spoofed frames dropped by its port's policy: $_n"; return 0; }
        _i=$((_i + 1)); [ $_i -gt 30 ] && return 1
        sleep 1
    done
}

# rate: 2 MiB from A to B over TCP, timed where they arrive (from the
# first byte to the end), at most the limit (+10 %).
rate() {
    dom_run $B 'rm -f /tmp/rate-b
(sleep 200 | nc -l -p 5002 | { dd bs=1 count=1 of=/dev/null 2>/dev/null
    read t0 _ < /proc/uptime; n=$(wc -c); read t1 _ < /proc/uptime
    echo "got $((n + 1)) bytes from $t0 to $t1" > /tmp/rate-b; }) > /dev/null 2>&1 < /dev/null &
i=0
until netstat -ltn | grep -q ":5002 "; do
    i=$((i + 1)); [ $i -gt 50 ] && { echo "nc does not listen"; exit 1; }
    sleep 0.2
done' || return 1
    dom_run $A "dd if=/dev/zero bs=1024 count=2048 2>/dev/null | nc $(addr $B) 5002" || return 1
    dom_run $B 'i=0
until [ -s /tmp/rate-b ]; do
    i=$((i + 1)); [ $i -gt 300 ] && { echo "B got no end"; exit 1; }
    sleep 0.2
done
killall sleep 2>/dev/null
cat /tmp/rate-b' > /tmp/rate-out || { cat /tmp/rate-out; return 1; }
    cat /tmp/rate-out
    awk -v limit=$RATE_KBIT '/^got/ {
        s = $7 - $5; kbit = $2 * 8 / 1000 / s;
        printf "@@SAY %d bytes over TCP in %.2f s: %.0f kbit/s (limit %d)\n", $2, s, kbit, limit;
        exit !($2 == 2097152 && kbit <= 1.1 * limit) }' /tmp/rate-out
}

destroy_lan() {
    vdevice --timeout 60 --destroy net0 || return 1
    vdevice --list
}

netback_and_guests $A $B
step load-a 60 load_xensnet $A
step load-b 60 load_xensnet $B
step bound-lan 180 make_lan --bind-addresses --rate ${RATE_KBIT}K
step leases 180 leases
step ping-a-b 90 ping_any $A "$(addr $B)"
step ping-b-a 90 ping_any $B "$(addr $A)"
step spoof 120 spoof
step spoof-counted 60 spoof_counted
step b-still-works 90 ping_any $B "$(addr $A)"
step rate 180 rate
step destroy 120 destroy_lan
step private-lan 180 make_lan --private
step private-leases 180 leases
step a-netback 90 ping_any $A $MGMT
step b-netback 90 ping_any $B $MGMT
step a-not-b 90 ping_fails $A "$(addr $B)"
step b-not-a 90 ping_fails $B "$(addr $A)"
step clean-logs 60 clean_logs $A $B
