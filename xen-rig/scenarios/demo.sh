# demo: the seed's walkthrough on real Xen, what `cargo xtask demo` shows.
#
# 1. netback-uk and blkback-uk from the xl configs the dom0 package
#    installs (/etc/xen, images in /usr/lib/xen-share), the vdevice daemon
#    (as its systemd unit would run it), two Linux guests.
#    Each of them loads xenshare.ko, which publishes its vdevice page.
# 2. `vdevice --create net 0 guest1 guest2` makes net0; dom0 and both
#    guests `modprobe xensnet`, get a lease from netback-uk, every pair
#    pings, and a file sent over TCP between the guests keeps its checksum.
# 3. `vdevice --remove net0 guest2` while guest1 and dom0 exchange pings,
#    which keep flowing; `vdevice --add net0 guest2` and guest2 is back.
# 4. `vdevice --create block /test-filesystem guest1`; guest1 `modprobe
#    xensblk`, makes ext4, writes files; blkback-uk is destroyed and
#    created again mid-write (the daemon gives it the disk back and
#    reconnects guest1, whose requests in flight are re-issued); the writes
#    complete, unmount and `fsck -f` are clean, the checksums match.
# 5. A read-only disk shared by both guests: both read the same data.
# 6. Two guests move data through /dev/xenshare with the example program.
# 7. The sizes of the backend images and what every domain uses.
G1=guest1
G2=guest2
MGMT=10.77.0.1
DISK=/test-filesystem
RODISK=/shared-ro.img

collect_logs() {
    [ -f /tmp/vdevice-daemon.log ] && rig_send_file vdevice-daemon.log /tmp/vdevice-daemon.log
    for _d in $G1 $G2; do
        xl domid "$_d" >/dev/null 2>&1 || continue
        bounded 30 dom_run "$_d" 'dmesg; for f in /tmp/*.log; do echo "== $f"; cat "$f"; done' \
            > "/tmp/demo-$_d.log" 2>/dev/null
        rig_send_file "$_d.log" "/tmp/demo-$_d.log"
    done
    dmesg > /tmp/dmesg-dom0.log
    rig_send_file dmesg-dom0.log /tmp/dmesg-dom0.log
}
trap collect_logs EXIT

# ---- 1. the backends and the guests ------------------------------------

start_backend() {
    : > "$(dom_log "$1")"
    # The xl config and image as the dom0 package installs them.
    xl create "/etc/xen/$1.cfg" || return 1
    dom_wait "$1" "$1: ready"
    grep -a "$1: ready" "$(dom_log "$1")" | sed 's/@@/@ @/g'
}

# What a Debian dom0 has out of the box and the rig's busybox dom0 lacks:
# blkback (blkback-uk's own disks are vbds) and the block hotplug script.
dom0_block_backend() {
    modprobe xen-blkback || return 1
    modprobe loop || return 1
    install_block_script
}

start_daemon() {
    setsid vdevice --timeout 60 daemon > /tmp/vdevice-daemon.log 2>&1 < /dev/null &
    _i=0
    until [ -s /tmp/vdevice-daemon.log ]; do
        _i=$((_i + 1)); [ $_i -gt 300 ] && { echo "the daemon printed nothing"; return 1; }
        sleep 0.2
    done
    cat /tmp/vdevice-daemon.log
}

start_guest() {
    dom_create /rig/domu/linux-pv.cfg "$1" || return 1
    dom_wait "$1" @@READY
}

# xenshare publishes the domain's vdevice page (what a distribution would
# load at boot); the device modules come later, when there are devices.
load_xenshare() {
    if [ "$1" = dom0 ]; then
        modprobe xenshare || return 1
        dmesg | grep "xenshare:" | tail -n 2
    else
        dom_expect "$1" "vdevice page published" 'modprobe xenshare || exit 1
dmesg | grep "xenshare:" | tail -n 2'
    fi
}

# ---- 2. a LAN ----------------------------------------------------------

create_lan() {
    vdevice --timeout 60 --create net 0 $G1 $G2 > /tmp/created || { cat /tmp/created; return 1; }
    cat /tmp/created
    [ "$(cat /tmp/created)" = net0 ]
}

# from WHO TO: WHO (a guest or dom0) pings TO (an address).
from() {
    if [ "$1" = dom0 ]; then
        sh -c "$(ping_cmd "$2")"
    else
        dom_run "$1" "$(ping_cmd "$2")"
    fi
}

every_pair_pings() {
    for _a in dom0 $G1 $G2; do
        for _b in dom0 $G1 $G2 netback; do
            [ "$_a" = "$_b" ] && continue
            if [ "$_b" = netback ]; then _to=$MGMT; else _to=$(addr "$_b"); fi
            echo "== $_a -> $_b ($_to)"
            from "$_a" "$_to" || return 1
        done
    done
}

# 8 MiB from guest1 to guest2 over TCP, checksums compared.
tcp_file() {
    dom_run $G2 'rm -f /tmp/recv; (sleep 200 | nc -l -p 5001 > /tmp/recv) > /dev/null 2>&1 < /dev/null &
i=0
until netstat -ltn | grep -q ":5001 "; do
    i=$((i + 1)); [ $i -gt 50 ] && { echo "nc does not listen"; exit 1; }
    sleep 0.2
done' || return 1
    dom_run $G1 "dd if=/dev/urandom of=/tmp/send bs=1024 count=8192 2>/dev/null || exit 1
nc $(addr $G2) 5001 < /tmp/send || exit 1
sha256sum /tmp/send" > /tmp/sum-1 || { cat /tmp/sum-1; return 1; }
    dom_run $G2 'i=0
while pidof nc > /dev/null; do
    i=$((i + 1)); [ $i -gt 500 ] && { echo "nc still receiving"; exit 1; }
    sleep 0.2
done
killall sleep 2>/dev/null
sha256sum /tmp/recv' > /tmp/sum-2 || { cat /tmp/sum-2; return 1; }
    cat /tmp/sum-1 /tmp/sum-2
    _a=$(awk '$2 == "/tmp/send" { print $1 }' /tmp/sum-1)
    _b=$(awk '$2 == "/tmp/recv" { print $1 }' /tmp/sum-2)
    [ -n "$_a" ] && [ "$_a" = "$_b" ]
}

# ---- 3. a member leaves and comes back while the others talk -----------

remove_while_talking() {
    # guest1 pings dom0 five times a second during the removal.
    dom_run $G1 "(ping -i 0.2 -c 75 -W 2 $(addr dom0) > /tmp/steady.log 2>&1 &)" || return 1
    sleep 3
    vdevice --timeout 60 --remove net0 $G2 || return 1
    dom_run $G2 'i=0
while [ -e /sys/class/net/xsn0 ]; do
    i=$((i + 1)); [ $i -gt 150 ] && { echo "xsn0 is still there"; exit 1; }
    sleep 0.2
done
echo "guest2: xsn0 gone"' || return 1
    vdevice --list
    dom_run $G1 'while pidof ping > /dev/null; do sleep 0.5; done; tail -n 3 /tmp/steady.log
grep -q " 0% packet loss" /tmp/steady.log'
}

add_back() {
    vdevice --timeout 60 --add net0 $G2 || return 1
    dom_run $G2 "$(up_cmds /etc/rig/udhcpc)" > /tmp/link-$G2 || { cat /tmp/link-$G2; return 1; }
    keep_addr $G2 /tmp/link-$G2 || return 1
    from $G2 "$(addr $G1)"
}

# ---- 4. a disk that survives its server --------------------------------

create_disk() {
    dd if=/dev/zero of=$DISK bs=1M count=64 2>&1 || return 1
    vdevice --timeout 60 --create block $DISK $G1 > /tmp/created || { cat /tmp/created; return 1; }
    cat /tmp/created
    [ "$(cat /tmp/created)" = blk0 ]
}

XSB='i=0
until [ -b /dev/xsba ]; do
    i=$((i + 1)); [ $i -gt 150 ] && { echo "no /dev/xsba"; dmesg | tail; exit 1; }
    sleep 0.2
done'

mkfs_mount() {
    dom_run $G1 "for m in crc32c_generic ext4 xensblk; do modprobe \$m || exit 1; done
$XSB
mkfs.ext4 -q -F /dev/xsba || exit 1
mkdir -p /mnt/d && mount /dev/xsba /mnt/d || exit 1
df -h /mnt/d"
}

restart_blkback() {
    xl destroy blkback-uk || return 1
    echo "blkback-uk destroyed"
    start_backend blkback-uk || return 1
    # The daemon gives the new blkback-uk the disk and moves guest1 to it.
    _new=$(xl domid blkback-uk) || return 1
    _i=0
    until vdevice --list > /tmp/list 2>&1 &&
        awk '/^blk0:/ { f = 1; next } /^[^ ]/ { f = 0 } f' /tmp/list > /tmp/blk0 &&
        grep -q "backend blkback-uk (domain $_new): running" /tmp/blk0 &&
        grep -q "member $G1 (domain [0-9]*): connected" /tmp/blk0; do
        _i=$((_i + 1))
        if [ $_i -gt 300 ]; then
            cat /tmp/list
            tail -n 20 /tmp/vdevice-daemon.log
            return 1
        fi
        sleep 0.5
    done
    grep "vdevice daemon" /tmp/vdevice-daemon.log | tail -n 6
    cat /tmp/blk0
}

writes_complete() {
    dom_run $G1 "$(writer_wait_cmds 900)"'
wc -l < /tmp/written.sums
cd /mnt/d && sha256sum -c /tmp/written.sums | tail -n 3 || exit 1
cd / && umount /mnt/d || exit 1
e2fsck -f -n /dev/xsba; rc=$?; echo "e2fsck exit status $rc"; [ $rc = 0 ] || exit 1
mount /dev/xsba /mnt/d && cd /mnt/d && sha256sum -c /tmp/written.sums > /dev/null && echo "checksums match after remount"'
}

# ---- 5. a read-only disk for both --------------------------------------

shared_ro_disk() {
    dd if=/dev/urandom of=$RODISK bs=1M count=8 2>/dev/null || return 1
    _want=$(sha256sum < $RODISK | cut -d' ' -f1)
    vdevice --timeout 60 --ro --create block $RODISK $G1 $G2 > /tmp/created || { cat /tmp/created; return 1; }
    cat /tmp/created
    for _g in $G1 $G2; do
        # guest1 already has /dev/xsba (blk0): the shared disk is the next.
        dom_run $_g 'modprobe xensblk || exit 1
i=0
while :; do
    for d in /sys/block/xsb*; do [ "$(cat $d/ro)" = 1 ] && break 2; done
    i=$((i + 1)); [ $i -gt 150 ] && { echo "no read-only disk"; exit 1; }
    sleep 0.2
done
dev=/dev/${d##*/}
echo "$dev is read-only: $(cat $d/ro)"
dd if=$dev bs=1M count=8 2>/dev/null | sha256sum' > /tmp/ro-$_g || { cat /tmp/ro-$_g; return 1; }
        cat /tmp/ro-$_g
        grep -q "$_want" /tmp/ro-$_g || { echo "$_g read other data than $_want"; return 1; }
    done
}

# ---- 6. /dev/xenshare --------------------------------------------------

xenshare_xfer() {
    _o=$(xl domid $G1) _m=$(xl domid $G2)
    dom_run $G1 "rm -f /tmp/xfer-owner.log
setsid xenshare-xfer owner --domid $_o --peer $_m --mib 8 > /tmp/xfer-owner.log 2>&1 < /dev/null &
i=0
until grep -q '^SHARE_REF ' /tmp/xfer-owner.log; do
    i=\$((i + 1)); [ \$i -gt 300 ] && { cat /tmp/xfer-owner.log; exit 1; }
    sleep 0.2
done
cat /tmp/xfer-owner.log" > /tmp/owner.out || { cat /tmp/owner.out; return 1; }
    _ref=$(awk -v o="$_o" '$1 == "SHARE_REF" && $2 == o { print $3 }' /tmp/owner.out)
    [ -n "$_ref" ] || { cat /tmp/owner.out; return 1; }
    dom_run $G2 "xenshare-xfer member --domid $_m --owner $_o --ref $_ref --mib 8 > /tmp/xfer-member.log 2>&1
rc=\$?; cat /tmp/xfer-member.log; exit \$rc" > /tmp/member.out || { cat /tmp/member.out; return 1; }
    dom_run $G1 'while pidof xenshare-xfer > /dev/null; do sleep 0.2; done; cat /tmp/xfer-owner.log' > /tmp/owner.out
    cat /tmp/owner.out /tmp/member.out
    for _k in lane bulk; do
        _os=$(sed -n "s/^$_k sent //p" /tmp/owner.out)
        _mr=$(sed -n "s/^$_k received //p" /tmp/member.out)
        _ms=$(sed -n "s/^$_k sent //p" /tmp/member.out)
        _or=$(sed -n "s/^$_k received //p" /tmp/owner.out)
        echo "$_k: guest1 -> guest2 $_os / $_mr; guest2 -> guest1 $_ms / $_or"
        [ -n "$_os" ] && [ "$_os" = "$_mr" ] && [ -n "$_ms" ] && [ "$_ms" = "$_or" ] || return 1
    done
}

# ---- 7. what it costs --------------------------------------------------

summary() {
    echo "backend images:"
    for _i in netback-uk blkback-uk; do
        echo "  $_i: $(( $(wc -c < /usr/lib/xen-share/$_i) / 1024 )) KiB"
    done
    echo "memory of each domain (xl list, MiB):"
    xl list | awk 'NR > 1 { printf "  %-12s %6s MiB\n", $1, $3 }'
    for _b in netback-uk blkback-uk; do
        grep -a "heap" "$(dom_log $_b)" | tail -n 1 | sed "s/^/  /; s/@@/@ @/g"
    done
    echo "guest modules:"
    lsmod | grep -E "^xens" | sed 's/^/  dom0: /'
    echo "logs: target/xen-logs/demo/ (consoles of every domain, the daemon's log, dmesg of each guest)"
}

step dom0-block-backend 60 dom0_block_backend
step start-netback 120 start_backend netback-uk
step start-blkback 120 start_backend blkback-uk
step start-daemon 60 start_daemon
step start-guest1 240 start_guest $G1
step start-guest2 240 start_guest $G2
step xenshare-dom0 60 load_xenshare dom0
step xenshare-guest1 60 load_xenshare $G1
step xenshare-guest2 60 load_xenshare $G2
step lan-create 120 create_lan
step lan-dom0 120 lan_dom0
step lan-guest1 120 lan_guest $G1
step lan-guest2 120 lan_guest $G2
step lan-pings 300 every_pair_pings
step lan-tcp-file 300 tcp_file
step lan-remove-while-talking 180 remove_while_talking
step lan-add-back 180 add_back
step disk-create 120 create_disk
step disk-mkfs-mount 240 mkfs_mount
# A writer in guest1 (lib.sh): 24 files of 1 MiB, each synced.
step disk-start-writes 60 start_writer $G1 f 24
step disk-restart-blkback 240 restart_blkback
step disk-writes-complete 600 writes_complete
step ro-disk-shared 240 shared_ro_disk
step xenshare-transfer 300 xenshare_xfer
step summary 60 summary
