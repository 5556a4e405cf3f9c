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
#
# Each step says (`say`, lib.sh) the commands it runs as a user would type
# them (`$ ...` in dom0, `guest1# ...` in a guest) and what they showed:
# `cargo xtask demo` prints these lines under each step.
G1=guest1
G2=guest2
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
    say "\$ xl create /etc/xen/$1.cfg"
    say "$1 is domain $(xl domid "$1"), its console: $(grep -a "$1: ready" "$(dom_log "$1")" | tail -n 1 | tr -d '\r' | sed 's/@@/@ @/g')"
}

# What a Debian dom0 has out of the box and the rig's busybox dom0 lacks:
# blkback (blkback-uk's own disks are vbds) and the block hotplug script.
dom0_block_backend() {
    modprobe xen-blkback || return 1
    modprobe loop || return 1
    install_block_script || return 1
    say '$ modprobe xen-blkback; modprobe loop'
    say "dom0: xen-blkback $([ -d /sys/module/xen_blkback ] && echo loaded), loop $([ -d /sys/module/loop ] && echo loaded), /etc/xen/scripts/block in place"
}

start_daemon() {
    setsid vdevice --timeout 60 daemon > /tmp/vdevice-daemon.log 2>&1 < /dev/null &
    _i=0
    until [ -s /tmp/vdevice-daemon.log ]; do
        _i=$((_i + 1)); [ $_i -gt 300 ] && { echo "the daemon printed nothing"; return 1; }
        sleep 0.2
    done
    cat /tmp/vdevice-daemon.log
    say '$ vdevice daemon &   (as vdevice.service runs it)'
    say "$(head -n 1 /tmp/vdevice-daemon.log)"
}

start_guest() {
    dom_create /rig/domu/linux-pv.cfg "$1" || return 1
    dom_wait "$1" @@READY
    say "\$ xl create linux-pv.cfg name=$1"
    say "$1 is domain $(xl domid "$1"): Linux $(dom_run "$1" 'uname -r') booted"
}

# xenshare publishes the domain's vdevice page (what a distribution would
# load at boot); the device modules come later, when there are devices.
load_xenshare() {
    if [ "$1" = dom0 ]; then
        modprobe xenshare || return 1
        dmesg | grep "xenshare:" | tail -n 2 > /tmp/xenshare-dom0
        say '$ modprobe xenshare'
    else
        dom_expect "$1" "vdevice page published" 'modprobe xenshare || exit 1
dmesg | grep "xenshare:" | tail -n 2' > "/tmp/xenshare-$1" || { cat "/tmp/xenshare-$1"; return 1; }
        say "$1# modprobe xenshare"
    fi
    cat "/tmp/xenshare-$1"
    _l=$(grep "vdevice page published" "/tmp/xenshare-$1" | tail -n 1 | sed 's/^\[[^]]*\] *//')
    [ -n "$_l" ] || { echo "$1: no 'vdevice page published' line"; return 1; }
    say "$1: $_l"
}

# ---- 2. a LAN ----------------------------------------------------------

create_lan() {
    vdevice --timeout 60 --create net 0 $G1 $G2 > /tmp/created || { cat /tmp/created; return 1; }
    cat /tmp/created
    say "\$ vdevice --create net 0 $G1 $G2 -> $(cat /tmp/created)"
    [ "$(cat /tmp/created)" = net0 ]
}

# lan_up WHO: xsn0 up in dom0 or a guest, with a lease from netback-uk.
lan_up() {
    if [ "$1" = dom0 ]; then
        lan_dom0 || return 1
        say '$ modprobe xensnet; ip link set xsn0 up; udhcpc -i xsn0'
    else
        lan_guest "$1" || return 1
        say "$1# modprobe xensnet; ip link set xsn0 up; udhcpc -i xsn0"
    fi
    say_lease "$1"
}

# say_lease WHO: the lease udhcpc's hook logged in /tmp/link-WHO.
say_lease() {
    _l=$(sed -n 's|.*lease: xsn0 \(10\.77\.0\.[0-9]*\)/[0-9]* from server \([0-9.?]*\).*|\1 from \2|p' "/tmp/link-$1" | tail -n 1)
    [ -n "$_l" ] || { echo "$1: no lease line in /tmp/link-$1"; return 1; }
    say "$1: lease $_l"
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
    _n=0 _ok=0
    for _a in dom0 $G1 $G2; do
        for _b in dom0 $G1 $G2 netback; do
            [ "$_a" = "$_b" ] && continue
            if [ "$_b" = netback ]; then _to=$MGMT; else _to=$(addr "$_b"); fi
            echo "== $_a -> $_b ($_to)"
            _n=$((_n + 1))
            if from "$_a" "$_to"; then
                _ok=$((_ok + 1))
            else
                echo "== $_a -> $_b ($_to): NO ANSWER"
                say "$_a -> $_b ($_to): no answer"
            fi
        done
    done
    say '$ ping -c 3 ADDRESS   (dom0, guest1 and guest2 each to the others and to netback-uk)'
    say "$_ok/$_n ping directions answered"
    [ "$_ok" -eq "$_n" ]
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
    say "$G2# nc -l -p 5001 > /tmp/recv"
    say "$G1# nc $(addr $G2) 5001 < /tmp/send   (8 MiB from /dev/urandom)"
    if [ -n "$_a" ] && [ "$_a" = "$_b" ]; then
        say "8 MiB $G1 -> $G2 over TCP: sha256 equal on both sides ($(echo "$_a" | cut -c1-16)...)"
    else
        say "8 MiB $G1 -> $G2 over TCP: sha256 differ (sent ${_a:-none}, received ${_b:-none})"
        return 1
    fi
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
    say "$G1# ping -i 0.2 -c 75 $(addr dom0) &   (while:)"
    say "\$ vdevice --remove net0 $G2"
    say "$G2: xsn0 gone"
    dom_run $G1 'while pidof ping > /dev/null; do sleep 0.5; done; tail -n 3 /tmp/steady.log' > /tmp/steady ||
        { cat /tmp/steady; return 1; }
    cat /tmp/steady
    say "$G1 -> dom0 meanwhile: $(grep "packets transmitted" /tmp/steady)"
    grep -q " 0% packet loss" /tmp/steady
}

add_back() {
    vdevice --timeout 60 --add net0 $G2 || return 1
    say "\$ vdevice --add net0 $G2"
    lan_guest $G2 || return 1
    say "$G2# udhcpc -i xsn0"
    say_lease $G2 || return 1
    from $G2 "$(addr $G1)" > /tmp/ping-back || { cat /tmp/ping-back; return 1; }
    cat /tmp/ping-back
    say "$G2# ping -c 3 $(addr $G1) -> $(grep "packets transmitted" /tmp/ping-back)"
}

# ---- 4. a disk that survives its server --------------------------------

create_disk() {
    dd if=/dev/zero of=$DISK bs=1M count=64 2>&1 || return 1
    vdevice --timeout 60 --create block $DISK $G1 > /tmp/created || { cat /tmp/created; return 1; }
    cat /tmp/created
    say "\$ dd if=/dev/zero of=$DISK bs=1M count=64"
    say "\$ vdevice --create block $DISK $G1 -> $(cat /tmp/created)"
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
df -h /mnt/d" > /tmp/mkfs || { cat /tmp/mkfs; return 1; }
    cat /tmp/mkfs
    say "$G1# modprobe xensblk; mkfs.ext4 /dev/xsba; mount /dev/xsba /mnt/d"
    say "$G1: $(tail -n 1 /tmp/mkfs | awk '{ print $1 ", " $2 ", ext4, mounted on " $6 }')"
}

# A pause after each file keeps the writer going while blkback-uk is
# destroyed in the next step (without one it was done before).
start_writes() {
    start_writer $G1 f 24 1 > /tmp/writes || { cat /tmp/writes; return 1; }
    cat /tmp/writes
    say "$G1# for i in 1 ... 24: 1 MiB from /dev/urandom to /mnt/d/f\$i, sync, note its sha256, sleep 1   (in the background)"
    say "$G1: $(tail -n 1 /tmp/writes) of 24 files written so far"
}

restart_blkback() {
    # How far the writer got when its server goes (its count is in guest1's
    # RAM, not on the disk).
    _done=$(dom_run $G1 'wc -l < /tmp/written.sums; if [ -f /tmp/writer.end ]; then echo ended; fi') || return 1
    xl destroy blkback-uk || return 1
    echo "blkback-uk destroyed"
    say "\$ xl destroy blkback-uk   ($G1's writer: $(echo "$_done" | sed -n 1p) of 24 files written$(echo "$_done" | grep -q ended && echo ', writer already done'))"
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
    say "the daemon gave blk0 to the new blkback-uk; \$ vdevice --list ->"
    grep -E "backend|member" /tmp/blk0 | sed 's/ \[.*//' | while read -r _l; do say "  $_l"; done
    dom_run $G1 'dmesg | grep "xsba: reconnected" | tail -n 1' > /tmp/reconnected
    cat /tmp/reconnected
    say "$G1: $(sed 's/^\[[^]]*\] *//' /tmp/reconnected)"
}

# Each count is of sha256sum -c's ": OK" lines against the files written.
writes_complete() {
    dom_run $G1 "$(writer_wait_cmds 900)"'
n=$(wc -l < /tmp/written.sums)
cd /mnt/d || exit 1
sha256sum -c /tmp/written.sums > /tmp/check1 2>&1
grep -v ": OK$" /tmp/check1
echo "checksums equal: $(grep -c ": OK$" /tmp/check1)/$n"
cd / && umount /mnt/d || exit 1
e2fsck -f -n /dev/xsba; rc=$?; echo "e2fsck exit status $rc"
mount /dev/xsba /mnt/d && cd /mnt/d || exit 1
sha256sum -c /tmp/written.sums > /tmp/check2 2>&1
grep -v ": OK$" /tmp/check2
echo "after remount: $(grep -c ": OK$" /tmp/check2)/$n"' > /tmp/complete || { cat /tmp/complete; return 1; }
    cat /tmp/complete
    _c1=$(sed -n 's|^checksums equal: ||p' /tmp/complete)
    _c2=$(sed -n 's|^after remount: ||p' /tmp/complete)
    _fsck=$(sed -n 's|^e2fsck exit status ||p' /tmp/complete)
    say "$G1# sha256sum -c; umount /mnt/d; e2fsck -f -n /dev/xsba; mount /dev/xsba /mnt/d; sha256sum -c"
    say "${_c1:-?} checksums equal after blkback-uk was destroyed and created again"
    if [ "$_fsck" = 0 ]; then
        say "e2fsck -f -n /dev/xsba: clean"
    else
        say "e2fsck -f -n /dev/xsba: exit status ${_fsck:-?} (not clean)"
    fi
    say "${_c2:-?} checksums equal after umount and mount"
    # All 24 files of start_writes, each read back equal, twice.
    [ "$_c1" = 24/24 ] && [ "$_fsck" = 0 ] && [ "$_c2" = 24/24 ]
}

# ---- 5. a read-only disk for both --------------------------------------

shared_ro_disk() {
    dd if=/dev/urandom of=$RODISK bs=1M count=8 2>/dev/null || return 1
    _want=$(sha256sum < $RODISK | cut -d' ' -f1)
    vdevice --timeout 60 --ro --create block $RODISK $G1 $G2 > /tmp/created || { cat /tmp/created; return 1; }
    cat /tmp/created
    say "\$ dd if=/dev/urandom of=$RODISK bs=1M count=8"
    say "\$ vdevice --ro --create block $RODISK $G1 $G2 -> $(cat /tmp/created)"
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
        say "$_g: $(sed -n 's/ is read-only: 1$//p' /tmp/ro-$_g) read-only, its 8 MiB have the file's sha256 ($(echo "$_want" | cut -c1-16)...)"
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
    say "$G1# xenshare-xfer owner --domid $_o --peer $_m --mib 8 &"
    say "$G2# xenshare-xfer member --domid $_m --owner $_o --ref $_ref --mib 8"
    for _k in lane bulk; do
        _os=$(sed -n "s/^$_k sent //p" /tmp/owner.out)
        _mr=$(sed -n "s/^$_k received //p" /tmp/member.out)
        _ms=$(sed -n "s/^$_k sent //p" /tmp/member.out)
        _or=$(sed -n "s/^$_k received //p" /tmp/owner.out)
        echo "$_k: guest1 -> guest2 $_os / $_mr; guest2 -> guest1 $_ms / $_or"
        [ -n "$_os" ] && [ "$_os" = "$_mr" ] && [ -n "$_ms" ] && [ "$_ms" = "$_or" ] || return 1
        say "$_k: $G1 -> $G2 sent $_os, received the same; $G2 -> $G1 sent $_ms, received the same"
    done
}

# ---- 7. what it costs --------------------------------------------------

summary() {
    _xen=$(xl info | sed -n 's/^xen_version *: *//p')
    say "ran on: Xen $_xen (xl info), dom0 and guest kernel $(uname -r)"
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
step lan-dom0 120 lan_up dom0
step lan-guest1 120 lan_up $G1
step lan-guest2 120 lan_up $G2
step lan-pings 300 every_pair_pings
step lan-tcp-file 300 tcp_file
step lan-remove-while-talking 180 remove_while_talking
step lan-add-back 180 add_back
step disk-create 120 create_disk
step disk-mkfs-mount 240 mkfs_mount
# A writer in guest1 (lib.sh): 24 files of 1 MiB, each synced, 1 s apart.
step disk-start-writes 60 start_writes
step disk-restart-blkback 240 restart_blkback
step disk-writes-complete 600 writes_complete
step ro-disk-shared 240 shared_ro_disk
step xenshare-transfer 300 xenshare_xfer
step summary 60 summary
