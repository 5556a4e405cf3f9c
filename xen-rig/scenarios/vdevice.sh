# vdevice: the administrator's named devices on real Xen, and the daemon
# that gives them back. netback-uk, blkback-uk (no disks of its own), two
# Linux domUs and dom0 itself running share-member (each change
# acknowledged by it);
# `vdevice daemon` runs in dom0 from the start, the record in its default
# place (/var/lib/xen-share/vdevice.json).
#
# - `vdevice --create net 0 ID-A ID-B` prints net0; vd-a and vd-b get
#   xsn0 and a lease from netback-uk and ping each other, dom0 gets xsn0
#   (a fixed address) and pings vd-a and netback-uk; `--list` (text and
#   --json) shows the three connected with netback-uk's counters.
# - `--remove net0 vd-b`: vd-b's device goes; `--add net0 vd-b`: it is back
#   and pings again.
# - A member that never acknowledges (vd-b's share-member stopped): `--create
#   net vd-a vd-b` fails within its timeout naming vd-b's domain id, vd-a's
#   port made meanwhile is undone, `--list` shows no net1.
# - `--create block FILE vd-a`: the file is given to blkback-uk (`xl
#   block-attach`), which picks it up at run time; vd-a gets a block device,
#   writes 1 MiB through it, dom0 reads the same bytes in the file.
#   `--destroy blk0`: vd-a's device goes.
# - vd-b rebooted with `xl reboot` (xl re-creates it under a new domid):
#   the daemon gives it net0 back once its share-member publishes its
#   page; it pings vd-a.
# - netback-uk destroyed and created again: the daemon re-creates net0 on it
#   and reconnects both members; they get leases again and ping.
# - vd-b saved (`xl save`): the daemon frees its port on netback-uk at
#   once and `--list` shows it away. (Its restore is scenario save-restore,
#   with the guest modules: share-member's grants and ports die with a
#   saved domain and it does not publish again.)
# After each, `vdevice --list` and the domains agree (every member
# "connected", the member's page and the backend's page).
A=vd-a
B=vd-b
IMG=/tmp/vdevice-blk.img
REC=/var/lib/xen-share/vdevice.json

collect_logs() {
    [ -f /tmp/vdevice-daemon.log ] && rig_send_file vdevice-daemon.log /tmp/vdevice-daemon.log
    [ -f /tmp/share-member-dom0.log ] && rig_send_file share-member-dom0.log /tmp/share-member-dom0.log
    [ -f "$REC" ] && rig_send_file vdevice.json "$REC"
    for _d in $A $B; do
        xl domid "$_d" >/dev/null 2>&1 || continue
        bounded 30 dom_run "$_d" 'cat /tmp/share-member.log' > "/tmp/share-member-$_d.log" 2>/dev/null
        rig_send_file "share-member-$_d.log" "/tmp/share-member-$_d.log"
    done
}
trap collect_logs EXIT

# start_member NAME: tun, fuse and loop, share-member in the background
# until it has published its page. Each disk grants 32 slots of 33 pages:
# more than gntalloc's default limit for the whole domain.
start_member() {
    dom_run "$1" '
for m in tun fuse loop; do modprobe $m || exit 1; done
echo 4096 > /sys/module/xen_gntalloc/parameters/limit || exit 1
'"$START_SHARE_MEMBER"
}

start_daemon() {
    modprobe xen-blkback || return 1
    modprobe loop || return 1
    install_block_script
    setsid vdevice --timeout 60 daemon --retry 1 > /tmp/vdevice-daemon.log 2>&1 < /dev/null &
    until grep -q "watching @introduceDomain" /tmp/vdevice-daemon.log; do
        sleep 0.2
    done
    cat /tmp/vdevice-daemon.log
}

# listed: `vdevice --list` shows every member of every device connected
# (and each device named in $@ is there).
listed() {
    vdevice --list > /tmp/list || { cat /tmp/list; return 1; }
    cat /tmp/list
    for _n in "$@"; do
        grep -q "^$_n: " /tmp/list || { echo "no $_n"; return 1; }
    done
    ! grep "  member " /tmp/list | grep -v ": connected" | grep .
}

start_dom0_member() {
    modprobe tun || return 1
    setsid share-member --domid 0 > /tmp/share-member-dom0.log 2>&1 < /dev/null &
    _i=0
    while ! grep -q published /tmp/share-member-dom0.log; do
        _i=$((_i + 1))
        [ $_i -gt 300 ] && { cat /tmp/share-member-dom0.log; return 1; }
        sleep 0.2
    done
    cat /tmp/share-member-dom0.log
}

# dom0_link: dom0's xsn0 up with carrier and 10.77.0.50/24 (outside
# netback-uk's DHCP pool).
dom0_link() {
    _i=0
    until [ "$(cat /sys/class/net/xsn0/carrier 2>/dev/null)" = 1 ]; do
        _i=$((_i + 1)); [ $_i -gt 300 ] && { echo "dom0's xsn0 has no carrier"; ip link; return 1; }
        [ -e /sys/class/net/xsn0 ] && ip link set xsn0 up
        sleep 0.2
    done
    ip addr add 10.77.0.50/24 dev xsn0 2>/dev/null
    ip -4 addr show xsn0
}

# dom0_ping ADDR: lib.sh's ping_cmds in dom0.
dom0_ping() {
    sh -c "$(ping_cmds "$1")"
}

create_net() {
    vdevice --timeout 60 --create net 0 "$(xl domid $A)" "$(xl domid $B)" > /tmp/created || return 1
    cat /tmp/created
    [ "$(cat /tmp/created)" = net0 ]
}

# link_up NAME: xsn0 with carrier and a lease from netback-uk, its address
# in /tmp/addr-NAME (lib.sh's lease_addr). Unlike lib.sh's up_cmds, xsn0
# is set up again on each turn until it has carrier: share-member may make
# the TAP device again meanwhile (a rejoin, a restarted netback-uk).
link_up() {
    dom_run "$1" "
i=0
until [ \"\$(cat /sys/class/net/xsn0/carrier 2>/dev/null)\" = 1 ]; do
    i=\$((i + 1)); [ \$i -gt 300 ] && { echo 'xsn0 has no carrier'; ip link; exit 1; }
    [ -e /sys/class/net/xsn0 ] && ip link set xsn0 up
    sleep 0.2
done
udhcpc -i xsn0 -n -q -t 5 -T 3 -s /etc/rig/udhcpc || exit 1
ip -4 addr show xsn0" > "/tmp/link-$1" || { cat "/tmp/link-$1"; return 1; }
    lease_addr "$1"
}

# The list as JSON: both members of net0 connected, with counters that
# saw frames from each.
list_json() {
    vdevice --list --json > /tmp/list.json || return 1
    cat /tmp/list.json
    [ "$(grep -c '"state": "connected"' /tmp/list.json)" -ge 3 ] || return 1
    [ "$(grep -cE '"from_member_frames": [1-9]' /tmp/list.json)" -ge 3 ]
}

device_gone() {
    dom_run "$1" '
i=0
while [ -e /sys/class/net/xsn0 ]; do
    i=$((i + 1)); [ $i -gt 300 ] && { echo "xsn0 is still there"; exit 1; }
    sleep 0.2
done
echo "xsn0 gone"'
}

remove_b() {
    vdevice --timeout 60 --remove net0 $B || return 1
    vdevice --list | tee /tmp/list
    ! grep -q "member $B" /tmp/list
}

add_b() {
    vdevice --timeout 60 --add net0 $B || return 1
    listed net0
}

# A member that never acknowledges: vd-b's share-member stopped. The
# command fails within its timeout (10 s here), names vd-b's domain, and
# leaves no net1 (vd-a's port on it undone).
no_ack() {
    _b=$(xl domid $B) || return 1
    dom_run $B 'kill -STOP $(pidof share-member)' || return 1
    _t0=$(now_ms)
    vdevice --timeout 10 --create net $A $B > /tmp/noack.out 2>&1
    _vrc=$?
    _ms=$(( $(now_ms) - _t0 ))
    # (dom_run sets _rc: the command's status is kept in _vrc.)
    dom_run $B 'kill -CONT $(pidof share-member)'
    cat /tmp/noack.out
    echo "failed with $_vrc after $_ms ms"
    [ "$_vrc" -ne 0 ] || return 1
    [ "$_ms" -lt 60000 ] || return 1
    grep -q "domain $_b did not acknowledge" /tmp/noack.out || return 1
    vdevice --list | tee /tmp/list
    ! grep -q "^net1" /tmp/list || return 1
    vdevice show "$(xl domid $A)" | tee /tmp/show-a
    [ "$(grep -c ' Network Member ' /tmp/show-a)" = 1 ]
}

# B acknowledged the change it was stopped on (refused: the share was
# gone) and is idle again.
b_idle_again() {
    until vdevice show "$(xl domid $B)" > /tmp/show-b &&
        [ "$(grep -c ' Network Member ' /tmp/show-b)" = 1 ]; do
        sleep 0.5
    done
    cat /tmp/show-b
}

blk_create() {
    : > "$(dom_log blkback-uk)"
    xl create /xl-configs/blkback-uk.cfg || return 1
    dom_wait blkback-uk "blkback-uk: ready"
    grep -a "blkback-uk: ready" "$(dom_log blkback-uk)"
}

create_block() {
    dd if=/dev/zero of=$IMG bs=1M count=16 2>&1 || return 1
    vdevice --timeout 60 --create block $IMG $A > /tmp/created || return 1
    cat /tmp/created
    [ "$(cat /tmp/created)" = blk0 ] || return 1
    grep -a "attached at run time" "$(dom_log blkback-uk)" | sed 's/@@/@ @/g'
    listed net0 blk0
}

# vd-a writes 1 MiB of random bytes through its block device; dom0 finds
# the same bytes at the start of the file.
blk_io() {
    dom_run $A '
i=0
# share-member names the link by its entry: disk<entry>.dev.
until link=$(ls /run/share-member/disk*.dev 2>/dev/null | head -n 1) && [ -n "$link" ]; do
    i=$((i + 1)); [ $i -gt 300 ] && { echo "no block device"; cat /tmp/share-member.log; exit 1; }
    sleep 0.2
done
dev=$(readlink $link)
echo "block device $dev: $(cat /sys/block/${dev#/dev/}/size) sectors"
dd if=/dev/urandom of=/tmp/mib bs=1M count=1 2>/dev/null || exit 1
dd if=/tmp/mib of=$dev bs=1M count=1 conv=fsync 2>/dev/null || exit 1
md5sum < /tmp/mib' > /tmp/blk-a || { cat /tmp/blk-a; return 1; }
    cat /tmp/blk-a
    _want=$(tail -n 1 /tmp/blk-a | cut -d' ' -f1)
    _got=$(dd if=$IMG bs=1M count=1 2>/dev/null | md5sum | cut -d' ' -f1)
    echo "dom0 reads $_got, vd-a wrote $_want"
    [ -n "$_want" ] && [ "$_want" = "$_got" ]
}

destroy_block() {
    vdevice --timeout 60 --destroy blk0 || return 1
    dom_run $A '
i=0
while ls /run/share-member/disk*.dev > /dev/null 2>&1; do
    i=$((i + 1)); [ $i -gt 300 ] && { echo "the disk is still there"; exit 1; }
    sleep 0.2
done
echo "disk gone"' || return 1
    vdevice --list | tee /tmp/list
    ! grep -q "^blk0" /tmp/list
}

# restart_b: vd-b destroyed and created again under a new domid; the
# daemon frees its port, then connects the new domain once its
# share-member has published.
# `xl reboot`: xl's monitor re-creates the domain (on_reboot="restart")
# under a new id; its console log goes on, so a new @@READY is counted.
reboot_b() {
    _old=$(xl domid $B) || return 1
    echo "$_old" > /tmp/old-b
    grep -c "@@READY" "$(dom_log $B)" > /tmp/ready-b
    xl reboot $B || return 1
    until _new=$(xl domid $B 2>/dev/null) && [ "$_new" != "$_old" ]; do
        sleep 0.5
    done
    echo "vd-b rebooted: domain $_old -> $_new"
}

rebooted_b() {
    until [ "$(grep -c "@@READY" "$(dom_log $B)")" -gt "$(cat /tmp/ready-b)" ]; do
        sleep 0.5
    done
}

b_back() {
    _new=$(xl domid $B) || return 1
    echo "vd-b: domain $(cat /tmp/old-b) -> $_new"
    [ "$_new" != "$(cat /tmp/old-b)" ] || return 1
    until grep -q "domain $B ($_new) is connected again" /tmp/vdevice-daemon.log; do
        sleep 0.5
    done
    grep "vdevice daemon" /tmp/vdevice-daemon.log | tail -n 8
    listed net0
}

restart_netback() {
    _old=$(xl domid netback-uk) || return 1
    xl destroy netback-uk || return 1
    echo "$_old" > /tmp/old-nb
    until grep -q "backend netback-uk is gone" /tmp/vdevice-daemon.log; do
        sleep 0.5
    done
    dom_create /xl-configs/netback-uk.cfg netback-uk
}

netback_back() {
    _new=$(xl domid netback-uk) || return 1
    echo "netback-uk: domain $(cat /tmp/old-nb) -> $_new"
    until grep -q "backend netback-uk is back as domain $_new" /tmp/vdevice-daemon.log; do
        sleep 0.5
    done
    until listed net0 > /dev/null; do
        sleep 1
    done
    grep "vdevice daemon" /tmp/vdevice-daemon.log | tail -n 12
    listed net0
}

save_b() {
    _old=$(xl domid $B) || return 1
    echo "$_old" > /tmp/old-b
    _t0=$(now_ms)
    xl save $B /tmp/vd-b.save || return 1
    echo "saved in $(( $(now_ms) - _t0 )) ms"
    ls -l /tmp/vd-b.save
    until grep -q "removed the Network share of domain $_old" /tmp/vdevice-daemon.log; do
        sleep 0.5
    done
    rm -f /tmp/vd-b.save
    vdevice --list | tee /tmp/list
    grep -q "member $B (domain -): away" /tmp/list || return 1
    # The others are still connected.
    [ "$(grep -c ': connected' /tmp/list)" = 2 ]
}

step netback-create 120 dom_create /xl-configs/netback-uk.cfg netback-uk
step create-a 120 dom_create /rig/domu/linux-pv.cfg $A
step create-b 120 dom_create /rig/domu/linux-pv.cfg $B
step daemon 60 start_daemon
step netback-ready 120 dom_wait netback-uk "netback-uk: ready"
step boot-a 180 dom_wait $A @@READY
step boot-b 180 dom_wait $B @@READY
step member-a 60 start_member $A
step member-b 60 start_member $B
step member-dom0 60 start_dom0_member
step create-net 180 create_net
step listed 60 listed net0
step lease-a 90 link_up $A
step lease-b 90 link_up $B
step ping-a-b 90 ping_peer $A $B
step ping-b-a 90 ping_peer $B $A
step link-dom0 90 dom0_link
step ping-dom0-a 90 dom0_ping "$(cat /tmp/addr-$A)"
step ping-a-dom0 90 ping_ok $A 10.77.0.50
step ping-dom0-netback 90 dom0_ping $MGMT
step list-json 90 list_json
step remove-b 120 remove_b
step gone-b 60 device_gone $B
step add-b 120 add_b
step lease-b-again 90 link_up $B
step ping-b-a-again 90 ping_peer $B $A
step no-ack 120 no_ack
step b-idle 60 b_idle_again
step blkback-create 120 blk_create
step create-block 180 create_block
step block-io 120 blk_io
step destroy-block 120 destroy_block
step reboot-b 240 reboot_b
step rebooted-b 180 rebooted_b
step member-b-again 60 start_member $B
step b-back 180 b_back
step lease-b-restarted 90 link_up $B
step ping-a-restarted-b 90 ping_peer $A $B
step restart-netback 120 restart_netback
step netback-ready-again 120 dom_wait netback-uk "netback-uk: ready"
step netback-back 240 netback_back
step lease-a-new-netback 90 link_up $A
step lease-b-new-netback 90 link_up $B
step ping-a-b-new-netback 90 ping_peer $A $B
step ping-b-netback 90 ping_ok $B $MGMT
step link-dom0-new-netback 90 dom0_link
step ping-dom0-a-new-netback 90 dom0_ping "$(cat /tmp/addr-$A)"
step save-b 240 save_b
