# uplink: a LAN of netback-uk bridged to dom0's network (issue 21).
# dom0 makes the bridge xenbr0 (192.168.99.1/24) and runs busybox udhcpd
# on it; netback-uk starts from xl-configs/netback-uk-uplink.cfg (`vif = [
# 'bridge=xenbr0' ]`), so it is the netif frontend of a vif on that bridge
# (its console says so). Two Linux PV domUs with xensnet.ko are the LAN
# `vdevice --create net A B --uplink 0`, a third the island LAN
# `vdevice --create net C`:
#   - A and B get leases from dom0's udhcpd (their udhcpc and dom0's lease
#     file show it), ping dom0's bridge address and each other;
#   - 8 MiB of random data over TCP from A to dom0: SHA-256 equal;
#   - C gets its lease from netback-uk (10.77.1.x) and cannot reach
#     dom0's network, even with a route to it;
#   - `vdevice --list` shows the uplink attached with its counters;
#   - netback-uk destroyed and created again: `vdevice daemon` makes the
#     LAN again with its uplink, A gets a lease from dom0 again and pings
#     dom0.
# No Oops, WARNING or BUG in any kernel log.

A=upl-a
B=upl-b
C=upl-c
BR=xenbr0
DOM0_ADDR=192.168.99.1
CFG=/xl-configs/netback-uk-uplink.cfg

collect_logs() {
    [ -f /tmp/udhcpd.log ] && rig_send_file udhcpd.log /tmp/udhcpd.log
    [ -f /tmp/vdevice-daemon.log ] && rig_send_file vdevice-daemon.log /tmp/vdevice-daemon.log
    [ -f /tmp/share-member-dom0.log ] && rig_send_file share-member-dom0.log /tmp/share-member-dom0.log
}
trap collect_logs EXIT

# dom0's network: the bridge with an address, a DHCP server on it.
bridge() {
    modprobe bridge || return 1
    modprobe xen-netback || return 1
    install_vif_script $BR
    brctl addbr $BR || return 1
    ip addr add $DOM0_ADDR/24 dev $BR || return 1
    ip link set $BR up || return 1
    cat > /tmp/udhcpd.conf <<EOF
start 192.168.99.50
end 192.168.99.60
interface $BR
lease_file /tmp/udhcpd.leases
pidfile /tmp/udhcpd.pid
option subnet 255.255.255.0
option lease 600
EOF
    : > /tmp/udhcpd.leases
    setsid udhcpd -f /tmp/udhcpd.conf > /tmp/udhcpd.log 2>&1 < /dev/null &
    say "dom0# brctl addbr $BR; ip addr add $DOM0_ADDR/24 dev $BR; udhcpd (pool 192.168.99.50-60)"
    ip -4 addr show $BR
}

start_daemon() {
    setsid vdevice --timeout 60 daemon --retry 1 > /tmp/vdevice-daemon.log 2>&1 < /dev/null &
    until grep -q "watching @introduceDomain" /tmp/vdevice-daemon.log; do
        sleep 0.2
    done
    cat /tmp/vdevice-daemon.log
}

# The vif netback-uk is the frontend of: on the bridge, connected.
vif_on_bridge() {
    _nb=$(xl domid netback-uk) || return 1
    grep -a "uplink device 0" "$(dom_log netback-uk)" || return 1
    say "$(grep -a "uplink device 0" "$(dom_log netback-uk)" | tail -n 1)"
    _i=0
    # (busybox's brctl has no `show`: the bridge's ports are in sysfs.)
    until [ -e "/sys/class/net/$BR/brif/vif$_nb.0" ]; do
        _i=$((_i + 1)); [ $_i -gt 100 ] && { ls "/sys/class/net/$BR/brif"; return 1; }
        sleep 0.2
    done
    echo "$BR ports: $(ls "/sys/class/net/$BR/brif" | tr '\n' ' ')"
    xenstore-read "/local/domain/0/backend/vif/$_nb/0/state"
}

load() {
    dom_expect "$1" "vdevice page published" 'modprobe xensnet || exit 1
dmesg | grep -E "xenshare|xensnet"'
}

make_lans() {
    vdevice --timeout 60 --create net $A $B --uplink 0 > /tmp/net0 || return 1
    say "\$ vdevice --create net $A $B --uplink 0 -> $(cat /tmp/net0)"
    vdevice --timeout 60 --create net $C > /tmp/net1 || return 1
    say "\$ vdevice --create net $C -> $(cat /tmp/net1)"
    vdevice --list
}

# lease NAME PREFIX: xsn0 up with a lease in PREFIX; its address kept.
lease() {
    dom_run "$1" "$(up_cmds /etc/rig/udhcpc)" > "/tmp/link-$1" || { cat "/tmp/link-$1"; return 1; }
    cat "/tmp/link-$1"
    sed -n "s|.*inet \($2\.[0-9]*\)/24.*|\1|p" "/tmp/link-$1" | head -n 1 > "/tmp/addr-$1"
    [ -s "/tmp/addr-$1" ] || return 1
    say "$1: $(grep 'lease:' "/tmp/link-$1" | tail -n 1)"
}

dom0_leases() {
    # udhcpd writes its lease file on SIGUSR1 (and at exit).
    kill -USR1 "$(cat /tmp/udhcpd.pid)" 2>/dev/null
    sleep 1
    dumpleases -f /tmp/udhcpd.leases | tee /tmp/dumpleases
    for _d in $A $B; do
        grep -q "$(addr $_d)" /tmp/dumpleases || { echo "no lease of $_d in dom0's udhcpd"; return 1; }
    done
    say "dom0# dumpleases: $(tail -n +2 /tmp/dumpleases | awk '{print $1, $2}' | tr '\n' ';')"
}

ping_ok() {
    dom_run "$1" "$(ping_cmd "$2")"
}

ping_fails() {
    ! dom_run "$1" "$(ping_cmd "$2" 2)"
}

dom0_ping() {
    ping -c 3 -W 10 "$1" > /tmp/ping0.out
    _r=$?
    grep -E 'bytes from|loss' /tmp/ping0.out
    return $_r
}

# tcp NAME: 8 MiB of random data from NAME to dom0 over TCP; SHA-256 of
# what was sent and what arrived, equal.
tcp() {
    rm -f /tmp/got
    # busybox's nc ends a connection at EOF on its stdin: a sleep feeds it
    # (killed by its pid at the end: a killall would take the step's own
    # watchdog with it).
    (sleep 600 | nc -l -p 5001 > /tmp/got) > /dev/null 2>&1 < /dev/null &
    _lp=$!
    _i=0
    until netstat -ltn | grep -q ":5001 "; do
        _i=$((_i + 1)); [ $_i -gt 50 ] && { echo "nc does not listen"; return 1; }
        sleep 0.2
    done
    _t0=$(now_ms)
    dom_run "$1" "dd if=/dev/urandom of=/tmp/data bs=1024 count=8192 2>/dev/null || exit 1
sha256sum /tmp/data > /tmp/sent.sha || exit 1
nc $DOM0_ADDR 5001 < /tmp/data || exit 1
cat /tmp/sent.sha" > /tmp/sent || { cat /tmp/sent; return 1; }
    _i=0
    while [ "$(stat -c %s /tmp/got 2>/dev/null)" != 8388608 ]; do
        _i=$((_i + 1)); [ $_i -gt 300 ] && { ls -l /tmp/got; return 1; }
        sleep 0.2
    done
    _ms=$(( $(now_ms) - _t0 ))
    kill_tree "$_lp" 2>/dev/null
    _sent=$(awk '{print $1}' /tmp/sent | tail -n 1)
    _got=$(sha256sum /tmp/got | awk '{print $1}')
    say "8 MiB from $1 to dom0 over TCP in $_ms ms: sha256 sent $_sent, received $_got"
    [ -n "$_sent" ] && [ "$_sent" = "$_got" ]
}

# island: C's route to dom0's network goes out of its xsn0; nothing
# answers there.
island() {
    dom_run $C "ip route add 192.168.99.0/24 dev xsn0" || return 1
    ping_fails $C $DOM0_ADDR && say "$C (island LAN) cannot reach dom0's $DOM0_ADDR"
}

listed() {
    vdevice --list > /tmp/list || { cat /tmp/list; return 1; }
    cat /tmp/list
    grep -q "uplink: the backend's network device 0: attached" /tmp/list || return 1
    say "$(grep -A1 'uplink:' /tmp/list | tail -n 1)"
}

# Memory: five more ports (dom0, through share-member, on LANs 2-6) for
# eight beside the uplink; netback-uk's heap line after its next report.
start_dom0_member() {
    modprobe tun || return 1
    setsid share-member --domid 0 > /tmp/share-member-dom0.log 2>&1 < /dev/null &
    _i=0
    while ! grep -q published /tmp/share-member-dom0.log; do
        _i=$((_i + 1))
        [ $_i -gt 300 ] && { cat /tmp/share-member-dom0.log; return 1; }
        sleep 0.2
    done
}

eight_ports() {
    _nb=$(xl domid netback-uk) || return 1
    for _l in 2 3 4 5 6; do
        vdevice --timeout 60 create net --backend "$_nb" --lan $_l 0 || return 1
    done
    _log=$(dom_log netback-uk)
    say "netback-uk at boot: $(grep -a 'netback-uk: heap' "$_log" | head -n 1)"
    _n=$(grep -ac 'netback-uk: heap' "$_log")
    _i=0
    until [ "$(grep -ac 'netback-uk: heap' "$_log")" -gt "$_n" ]; do
        _i=$((_i + 1)); [ $_i -gt 30 ] && return 1
        sleep 1
    done
    sleep 1
    grep -a "netback-uk: port\|netback-uk: uplink" "$_log" | tail -n 9
    say "netback-uk with an uplink and 8 ports: $(grep -a 'netback-uk: heap' "$_log" | tail -n 1)"
    # dom0 lets go of its five ports' pages before netback-uk is destroyed.
    kill $(pidof share-member) 2>/dev/null
    sleep 1
}

restart_netback() {
    _old=$(xl domid netback-uk) || return 1
    xl destroy netback-uk || return 1
    echo "$_old" > /tmp/old-nb
    until grep -q "backend netback-uk is gone" /tmp/vdevice-daemon.log; do
        sleep 0.5
    done
    dom_create $CFG netback-uk
}

netback_back() {
    _new=$(xl domid netback-uk) || return 1
    echo "netback-uk: domain $(cat /tmp/old-nb) -> $_new"
    until grep -q "backend netback-uk is back as domain $_new" /tmp/vdevice-daemon.log; do
        sleep 0.5
    done
    until vdevice --list | grep -q "uplink: the backend's network device 0: attached"; do
        sleep 1
    done
    grep "vdevice daemon\|uplink" /tmp/vdevice-daemon.log | tail -n 12
    say "$(grep 'uplinked to its network device' /tmp/vdevice-daemon.log | tail -n 1)"
    listed
}

step bridge 60 bridge
step daemon 60 start_daemon
step netback-create 120 dom_create $CFG netback-uk
step create-a 120 dom_create /rig/domu/linux-pv.cfg $A
step create-b 120 dom_create /rig/domu/linux-pv.cfg $B
step create-c 120 dom_create /rig/domu/linux-pv.cfg $C
step netback-ready 120 dom_wait netback-uk "netback-uk: ready"
step vif-on-bridge 60 vif_on_bridge
step boot-a 180 dom_wait $A @@READY
step boot-b 180 dom_wait $B @@READY
step boot-c 180 dom_wait $C @@READY
step load-a 60 load $A
step load-b 60 load $B
step load-c 60 load $C
step lans 180 make_lans
step lease-a 120 lease $A 192.168.99
step lease-b 120 lease $B 192.168.99
step lease-c 120 lease $C 10.77.1
step dom0-leases 30 dom0_leases
step ping-a-dom0 90 ping_ok $A $DOM0_ADDR
step ping-b-dom0 90 ping_ok $B $DOM0_ADDR
step ping-a-b 90 ping_ok $A "$(addr $B)"
step ping-dom0-a 90 dom0_ping "$(addr $A)"
step tcp-a 300 tcp $A
step island 90 island
step listed 60 listed
step dom0-member 60 start_dom0_member
step eight-ports 120 eight_ports
step restart-netback 120 restart_netback
step netback-ready-again 120 dom_wait netback-uk "netback-uk: ready"
step netback-back 240 netback_back
step lease-a-again 120 lease $A 192.168.99
step ping-a-dom0-again 90 ping_ok $A $DOM0_ADDR
step clean-logs 60 clean_logs $A $B $C
