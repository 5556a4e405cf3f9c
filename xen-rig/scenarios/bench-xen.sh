# bench-xen: xen-share's drivers next to Linux's own split drivers, in one
# boot (`cargo xtask bench xen`; a measurement, not in the test tier).
#
# Two Linux PV domUs, bx-a and bx-b, each with two network paths:
#   - xsn0: xensnet.ko on netback-uk's LAN 0 (a lease from netback-uk);
#   - eth0: xen-netfront on a vif of dom0's xen-netback, both vifs on the
#     dom0 bridge xenbr1 (static 192.168.77.11 and .12).
# bx-a has two disks on the same backing file (/tmp/bench.img in dom0):
#   - /dev/xsba: xensblk.ko, served by blkback-uk, whose own vbd is that
#     file (through dom0's xen-blkback and a loop device);
#   - /dev/xvda: xen-blkfront, served by dom0's xen-blkback straight.
# Every case runs the same program (rig-bench, in the domU image) or
# busybox ping over one path: a ping series, a TCP stream, 64-byte UDP
# datagrams from bx-a to bx-b; random 4 KiB reads and writes (8 in
# flight), 1 MiB sequential reads and writes (4 in flight) on bx-a's disk.
# Around each case dom0 reads `xl list` (each domain's CPU seconds); an
# idle case (a sleep in bx-a) gives the background rate.
#
# Everything goes to /tmp/bench.txt, handed over as bench.txt:
#   case ID                   a case begins
#   wall_ms MS                its duration seen by dom0
#   cpu0 DOMAIN SECONDS       xl list's Time(s) before it, one per domain
#   cpu1 DOMAIN SECONDS       the same after it
#   out LINE                  what the case's command printed
#   end ID STATUS             its exit status
#   extra ID LINE             what the receiving side printed (after the case)
# xtask/src/xen/bench.rs parses it into target/bench/xen.json.
A=bx-a
B=bx-b
BR=xenbr1
A_ETH=192.168.77.11
B_ETH=192.168.77.12
IMG=/tmp/bench.img
SECTORS=131072
DISK="disk=[\"format=raw, vdev=xvda, access=rw, target=$IMG\"]"
BENCH=/tmp/bench.txt
# Seconds of each timed case.
SECS=5

trap 'rig_send_file bench.txt $BENCH; collect_dmesg $A $B' EXIT
: > $BENCH

bridge() {
    modprobe bridge || return 1
    modprobe xen-netback || return 1
    install_vif_script $BR
    brctl addbr $BR || return 1
    ip link set $BR up
}

# guest NAME [SETTING...]: a Linux PV domU with a vif on the bridge.
# The console shows warnings too (loglevel 5, where `quiet` stops at
# errors): two boots' domUs died in xen-blkfront already tainted W by a
# warning the console did not show, and a dead domU's dmesg is lost.
guest() {
    _n=$1
    shift
    : > "$(dom_log "$_n")"
    xl create /rig/domu/linux-pv.cfg "name=\"$_n\"" "vif=[\"bridge=$BR\"]" \
        'extra="console=hvc0 quiet loglevel=5"' "$@"
}

# eth_up NAME ADDR: xen-netfront's eth0 up with ADDR/24.
eth_up() {
    dom_run "$1" "modprobe xen-netfront || exit 1
i=0
until [ -e /sys/class/net/eth0 ]; do
    i=\$((i + 1)); [ \$i -gt 150 ] && { echo 'no eth0'; ip link; exit 1; }
    sleep 0.2
done
ip addr add $2/24 dev eth0 || exit 1
ip link set eth0 up || exit 1
i=0
until [ \"\$(cat /sys/class/net/eth0/carrier 2>/dev/null)\" = 1 ]; do
    i=\$((i + 1)); [ \$i -gt 150 ] && { echo 'eth0 has no carrier'; exit 1; }
    sleep 0.2
done
ip -4 addr show eth0"
}

connect_net() {
    vdevice --timeout 60 create net --backend "$(nb)" \
        "$(xl domid $A)" "$(xl domid $B)" || return 1
    vdevice show "$(nb)"
}

connect_disk() {
    vdevice --timeout 60 create disk --backend "$(xl domid blkback-uk)" --disk 0 \
        --features 15 "$(xl domid $A)" || return 1
    dom_run $A "$(xsba_cmds)"
}

blkfront() {
    dom_run $A "modprobe xen-blkfront || exit 1
i=0
until [ -b /dev/xvda ]; do
    i=\$((i + 1)); [ \$i -gt 300 ] && { echo 'no /dev/xvda'; dmesg | tail -n 20; exit 1; }
    sleep 0.2
done
for d in xsba xvda; do
    echo \"\$d: \$(cat /sys/block/\$d/size) sectors, max \$(cat /sys/block/\$d/queue/max_hw_sectors_kb) KiB, \
\$(cat /sys/block/\$d/queue/max_segments) segments, depth \$(cat /sys/block/\$d/queue/nr_requests)\"
done
[ \$(cat /sys/block/xvda/size) = $SECTORS ] && [ \$(cat /sys/block/xsba/size) = $SECTORS ]"
}

# vbd_features: what each blkif frontend negotiated with dom0's blkback
# (bx-a's blkfront, blkback-uk's vbd store): persistent grants, indirect
# segments, ring size.
vbd_features() {
    for _d in $A blkback-uk; do
        _fe=/local/domain/$(xl domid $_d)/device/vbd/51712
        _be=$(xenstore-read "$_fe/backend") || return 1
        _f="$_d: frontend persistent=$(xenstore-read "$_fe/feature-persistent" 2>/dev/null || echo -)"
        _f="$_f ring-page-order=$(xenstore-read "$_fe/ring-page-order" 2>/dev/null || echo -)"
        _f="$_f; backend persistent=$(xenstore-read "$_be/feature-persistent" 2>/dev/null || echo -)"
        _f="$_f max-indirect-segments=$(xenstore-read "$_be/feature-max-indirect-segments" 2>/dev/null || echo -)"
        echo "$_f"
        say "$_f"
    done
}

# Both paths answer before anything is timed (ARP resolved, links up).
reach() {
    dom_run $A "$(ping_cmd "$(addr $B)" 2)" || return 1
    dom_run $A "$(ping_cmd $B_ETH 2)"
}

# cpu FILE: xl list's Time(s) of each domain.
cpu() {
    xl list | awk -v t="$1" 'NR > 1 { print t, $1, $6 }'
}

# measure ID DOM CMD: CMD in domU DOM, with every domain's CPU seconds
# and the wall time around it, into $BENCH. dom0 stays quiet meanwhile:
# CMD runs detached in the domU (one agent round trip starts it), dom0
# sleeps $SECS, then looks for CMD's end marker on the domU's console
# every 0.5 s (dom_run's own polling, 5 times a second, would be counted
# as dom0's CPU); its output is fetched after the second CPU reading.
# (The variables are its own: dom_run sets _id, _dom and _rc of its own.)
measure() {
    _bcase=$1 _bdom=$2
    shift 2
    _btag="$_bcase-$(now_ms)"
    cpu cpu0 > /tmp/cpu0
    _bt0=$(now_ms)
    dom_run "$_bdom" "rm -f /tmp/bench.out /tmp/bench.rc
cat > /tmp/bench.sh <<'EOF'
$*
EOF
setsid sh -c 'sh /tmp/bench.sh > /tmp/bench.out 2>&1; echo \$? > /tmp/bench.rc; printf \"\nBENCH-DONE $_btag\n\" > /dev/console' < /dev/null > /dev/null 2>&1 &" || return 1
    sleep "$SECS"
    _bi=0
    until grep -q "BENCH-DONE $_btag" "$(dom_log "$_bdom")"; do
        sleep 0.5
        _bi=$((_bi + 1))
        # No marker 10 s on: a console event may have gone missing (nested
        # TCG; see dom_run). An agent round trip wakes the console and
        # says whether the command ended.
        if [ $((_bi % 20)) -eq 0 ] && dom_run "$_bdom" '[ -e /tmp/bench.rc ]' > /dev/null; then
            echo "measure: $_bcase ended, its marker did not arrive ($((_bi / 2)) s)"
            break
        fi
    done
    _bt1=$(now_ms)
    cpu cpu1 > /tmp/cpu1
    dom_run "$_bdom" 'cat /tmp/bench.out; exit $(cat /tmp/bench.rc)' > /tmp/out
    _brc=$?
    {
        echo "case $_bcase"
        echo "wall_ms $((_bt1 - _bt0))"
        cat /tmp/cpu0 /tmp/cpu1
        sed 's/^/out /' /tmp/out
        echo "end $_bcase $_brc"
    } >> $BENCH
    cat /tmp/out
    say "$_bcase: $(grep -v '^rig-bench:' /tmp/out | tail -n 1)"
    return $_brc
}

# extra ID DOM CMD: what the receiving side says, after the case.
extra() {
    _bcase=$1 _bdom=$2
    shift 2
    dom_run "$_bdom" "$*" > /tmp/extra
    _brc=$?
    sed "s/^/extra $_bcase /" /tmp/extra >> $BENCH
    cat /tmp/extra
    say "$_bcase (receiver): $(tail -n 1 /tmp/extra)"
    return $_brc
}

# start_sink DOM KIND PORT: rig-bench KIND-sink in the background, listening.
start_sink() {
    dom_run "$1" "rm -f /tmp/$2-sink.out
setsid rig-bench $2-sink $3 > /tmp/$2-sink.out 2>&1 < /dev/null &
i=0
until netstat -ln$(test "$2" = udp && echo u || echo t) | grep -q \":$3 \"; do
    i=\$((i + 1)); [ \$i -gt 50 ] && { echo 'the sink does not listen'; cat /tmp/$2-sink.out; exit 1; }
    sleep 0.2
done"
}

# sink_result DOM KIND: the sink's line, once it has finished.
sink_result() {
    echo "i=0
while pidof rig-bench > /dev/null; do
    i=\$((i + 1)); [ \$i -gt 300 ] && { echo 'the sink is still running'; exit 1; }
    sleep 0.2
done
cat /tmp/$1-sink.out
grep -q '^$1-sink ' /tmp/$1-sink.out"
}

# net_cases PATH ADDR: ping, TCP, UDP from bx-a to bx-b's ADDR.
ping_case() {
    measure "$1-ping" $A "ping -c 20 -i 0.2 -W 10 $2"
}

tcp_case() {
    start_sink $B tcp 5001 || return 1
    measure "$1-tcp" $A "rig-bench tcp-send $2:5001 $SECS" || return 1
    extra "$1-tcp" $B "$(sink_result tcp)"
}

# ifstat IFACE NAME: the domU commands that print IFACE's packet and drop
# counters and the UDP counters of domU NAME on one line (where a
# small-packet run lost datagrams: the driver, or the socket).
ifstat() {
    echo "cd /sys/class/net/$1/statistics || exit 1
u=\$(awk '/^Udp:/ { if (h) { print \"udp_in=\" \$2, \"udp_rcvbuf_errors=\" \$6; exit } h = 1 }' /proc/net/snmp)
echo \"ifstat $1 $2 rx_packets=\$(cat rx_packets) rx_dropped=\$(cat rx_dropped) \\
tx_packets=\$(cat tx_packets) tx_dropped=\$(cat tx_dropped) \$u\""
}

udp_case() {
    start_sink $B udp 5002 || return 1
    measure "$1-udp" $A "rig-bench udp-send $2:5002 64 $SECS" || return 1
    extra "$1-udp" $B "$(sink_result udp)" || return 1
    extra "$1-udp" $A "$(ifstat "$3" $A)" || return 1
    extra "$1-udp" $B "$(ifstat "$3" $B)"
}

# disk_case PATH DEV NAME rand|seq read|write BS JOBS
disk_case() {
    measure "$1-$3" $A "rig-bench disk $2 $4 $5 $6 $7 $SECS"
}

idle_case() {
    measure idle $A "sleep $SECS"
}

# guests_clean: a bench whose guests' kernels hit an Oops, BUG or WARNING
# measured a broken system: it fails (the cases before it are still kept).
# The taint flags say more (512 W, 128 D; 4096 O and 8192 E are our
# out-of-tree, unsigned modules).
guests_clean() {
    for _d in $A $B; do
        echo "$_d: kernel tainted $(dom_run "$_d" 'cat /proc/sys/kernel/tainted')"
    done
    clean_logs $A $B
}

step bridge 60 bridge
step disk-file 60 make_disk
step netback-create 120 dom_create /xl-configs/netback-uk.cfg netback-uk
step blkback-create 120 blk_create
step create-a 120 guest $A "$DISK"
step create-b 120 guest $B
step netback-ready 120 dom_wait netback-uk "netback-uk: ready"
step blkback-ready 180 dom_wait blkback-uk "blkback-uk: ready"
step disk-connected 30 disk_line
step boot-a 180 dom_wait $A @@READY
step boot-b 180 dom_wait $B @@READY
step load-a 60 load_xensnet $A
step load-b 60 load_xensnet $B
step connect-net 180 connect_net
step lease-a 90 port_lease $A
step lease-b 90 port_lease $B
step eth-a 90 eth_up $A $A_ETH
step eth-b 90 eth_up $B $B_ETH
step blk-modules 90 load_xensblk $A
step published 60 published $A
step connect-disk 120 connect_disk
step blkfront 120 blkfront
step vbd-features 30 vbd_features
step reach 120 reach
step idle 120 idle_case
step xensnet-ping 120 ping_case xensnet "$(addr $B)"
step netfront-ping 120 ping_case netfront $B_ETH
step xensnet-tcp 300 tcp_case xensnet "$(addr $B)"
step netfront-tcp 300 tcp_case netfront $B_ETH
step xensnet-udp 300 udp_case xensnet "$(addr $B)" xsn0
step netfront-udp 300 udp_case netfront $B_ETH eth0
step xensblk-rand-read 300 disk_case xensblk /dev/xsba rand-read rand read 4096 8
step blkfront-rand-read 300 disk_case blkfront /dev/xvda rand-read rand read 4096 8
step xensblk-rand-write 300 disk_case xensblk /dev/xsba rand-write rand write 4096 8
step blkfront-rand-write 300 disk_case blkfront /dev/xvda rand-write rand write 4096 8
step xensblk-seq-read 300 disk_case xensblk /dev/xsba seq-read seq read 1048576 4
step blkfront-seq-read 300 disk_case blkfront /dev/xvda seq-read seq read 1048576 4
step xensblk-seq-write 300 disk_case xensblk /dev/xsba seq-write seq write 1048576 4
step blkfront-seq-write 300 disk_case blkfront /dev/xvda seq-write seq write 1048576 4
step guests-clean 60 guests_clean
