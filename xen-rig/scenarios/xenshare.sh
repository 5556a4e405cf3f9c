# xenshare: the guest kernel transport (guest-drivers/xenshare, xenshare.ko)
# on real Xen, in dom0 (load, `vdevice show 0`, unload) and in a PV and a
# PVH Linux domU.
#
# While share-member owns the PV domU's vdevice page, `modprobe xenshare`
# is refused with the message naming the key. Then the module loads in
# both domUs and publishes its page (dom0's `vdevice show` reads it, which
# checks magic, version, entry count and the domain id); `vdevice create
# net` against netback-uk is acknowledged by both, each domU joins the
# share (its dmesg says so, and that no driver is bound unless xensnet is
# loaded), and Xen's grant dump shows netback-uk's pages mapped by both;
# `vdevice remove net` is acknowledged and the devices go. The PV domU
# joins again and unloads with the share still joined; both unload, the
# key is gone, and the grant dump shows nothing mapped by either domU any
# more, nor any grant of theirs in use. No Oops, WARNING or BUG anywhere.
# Between the two, a disk share of blkback-uk joined by the PV domU
# survives its owner's destruction and moves to the re-created owner with
# `vdevice reconnect disk` (the entry rewritten in place).
PV=xs-pv
PVH=xs-pvh

# Hands over each domU's kernel log, pass or fail.
trap 'collect_dmesg $PV $PVH' EXIT

# member_owns_page: share-member publishes the PV domU's vdevice page; the
# module must refuse to load, saying which key and why.
member_owns_page() {
    dom_run $PV '
modprobe tun || exit 1
'"$START_SHARE_MEMBER"'
if modprobe xenshare; then echo "xenshare loaded beside share-member"; exit 1; fi
dmesg | grep "xenshare:"
dmesg | grep -q "data/vdevice is already \"gref=[0-9]* port=[0-9]*\": the userspace share-member or another owner already owns this domain.s vdevice page; stop it" || exit 1
[ ! -e /sys/module/xenshare ] || { echo "xenshare is loaded"; exit 1; }
kill -TERM $(pidof share-member)
i=0
while pidof share-member > /dev/null; do
    i=$((i + 1)); [ $i -gt 100 ] && { echo "share-member still runs"; exit 1; }
    sleep 0.2
done
tail -n 3 /tmp/share-member.log'
}

# load NAME: the module publishes the page; dom0 reads it.
load() {
    dom_expect "$1" "vdevice page published" 'modprobe xenshare && dmesg | grep "xenshare:"' || return 1
    _id=$(xl domid "$1") || return 1
    xenstore-read "/local/domain/$_id/data/vdevice" || return 1
    vdevice show "$_id" | tee "/tmp/show-$1" || return 1
    grep -q "domain $_id: 0 device(s)" "/tmp/show-$1"
}

# Shares of 18 pages (4 slots a lane): the grant dump of two of them fits
# Xen's console ring, which 258-page shares would overrun.
PAGES=18

connect() {
    vdevice --timeout 60 create net --backend "$(nb)" --pages $PAGES "$(xl domid $PV)" "$(xl domid $PVH)" || return 1
    vdevice show "$(nb)"
    for _d in $PV $PVH; do
        vdevice show "$(xl domid $_d)" | tee "/tmp/show-$_d" || return 1
        grep -q "\[0\] Network Member peer=$(nb) .* status=ok" "/tmp/show-$_d" || return 1
    done
}

# joined NAME: the domU joined the share; a driver is bound (xensnet
# loaded) or the entry says it has none.
joined() {
    dom_run "$1" '
dmesg | grep "xenshare:"
dmesg | grep -q "xenshare: entry 0: joined net share [0-9]* of domain '"$(nb)"' ('"$PAGES"' pages)" || exit 1
ls /sys/bus/xenshare/devices/
[ -e /sys/bus/xenshare/devices/xenshare-0 ] || exit 1
if [ -e /sys/bus/xenshare/devices/xenshare-0/driver ]; then
    echo "bound to $(basename $(readlink /sys/bus/xenshare/devices/xenshare-0/driver))"
else
    dmesg | grep -q "xenshare: entry 0 (net share from domain '"$(nb)"') has no driver (modprobe xensnet)" || exit 1
fi
cat /sys/bus/xenshare/devices/xenshare-0/modalias'
}

# mapped_by NAME: how many of netback-uk's grants NAME maps.
mapped_by() {
    awk -v o="$(nb)" -v m="$(xl domid "$1")" '$1 == o && $2 == m' /tmp/grants | wc -l
}

# in_use_of NAME: how many of NAME's own grants are mapped by anyone,
# leaving out the toolstack's reserved refs 0..7 (dom0 maps 0 and 1, the
# console and xenstore rings, for the domain's whole life).
in_use_of() {
    awk -v o="$(xl domid "$1")" '$1 == o && $3 !~ /^\[0x0*[0-7]\]$/' /tmp/grants | wc -l
}

grants_while_joined() {
    grants || return 1
    for _d in $PV $PVH; do
        _n=$(mapped_by $_d)
        echo "netback-uk grants mapped by $_d: $_n"
        # The descriptor is unmapped after the copy: the share's pages.
        [ "$_n" -eq $PAGES ] || { grep -A3 "remote d$(nb) " /tmp/gdump | head; return 1; }
    done
}

disconnect() {
    vdevice --timeout 60 remove net --backend "$(nb)" "$(xl domid $PV)" "$(xl domid $PVH)" || return 1
    for _d in $PV $PVH; do
        vdevice show "$(xl domid $_d)" | tee "/tmp/show-$_d" || return 1
        grep -q "0 device(s)" "/tmp/show-$_d" || return 1
    done
}

removed() {
    dom_run "$1" '
dmesg | grep "xenshare: entry 0: net share from domain [0-9]* removed" || exit 1
[ ! -e /sys/bus/xenshare/devices/xenshare-0 ] || { echo "xenshare-0 is still there"; exit 1; }'
}

# The disk part: blkback-uk serves a disk (a file in dom0, as in blk-domu)
# to the PV domU, which joins the share with no driver for it; blkback-uk
# is destroyed while the domU maps its pages, and re-created; `vdevice
# reconnect disk` rewrites the entry in place: the domU joins the new
# share and leaves the dead owner's, which lets Xen finish destroying it.
IMG=/tmp/xsdisk.img
SECTORS=16384
DISK='disk=["format=raw, vdev=xvda, access=rw, target=/tmp/xsdisk.img"]'

make_disk() {
    modprobe xen-blkback || return 1
    modprobe loop || return 1
    install_block_script
    dd if=/dev/zero of="$IMG" bs=1M count=$((SECTORS / 2048)) 2>&1 || return 1
}

blk_create() {
    : > "$(dom_log blkback-uk)"
    xl create /xl-configs/blkback-uk.cfg "$DISK" || return 1
    dom_wait blkback-uk "blkback-uk: ready"
    grep -a "blkback-uk: disk 0:" "$(dom_log blkback-uk)" | sed 's/@@/@ @/g'
    grep -aq "blkback-uk: disk 0: vbd 51712 (backend domain 0): $SECTORS sectors" "$(dom_log blkback-uk)"
}

disk_join() {
    vdevice --timeout 60 create disk --backend "$(xl domid blkback-uk)" --disk 0 \
        --features 15 "$(xl domid $PV)" || return 1
    xl domid blkback-uk > /tmp/old-blk
    vdevice show "$(xl domid $PV)"
    dom_run $PV '
dmesg | grep "xenshare: entry 0"
dmesg | grep -q "xenshare: entry 0: joined disk share [0-9]* of domain '"$(cat /tmp/old-blk)"' (34 pages)" || exit 1
[ -e /sys/bus/xenshare/devices/xenshare-0 ] || exit 1
[ -e /sys/bus/xenshare/devices/xenshare-0/driver ] ||
    dmesg | grep -q "xenshare: entry 0 (disk share from domain '"$(cat /tmp/old-blk)"') has no driver (modprobe xensblk)"'
}

# blk_destroy: the owner goes while the domU maps its pages: Xen keeps the
# dying domain until they are unmapped (xl list shows it, nameless).
blk_destroy() {
    xl destroy blkback-uk || return 1
    xl list
    grants || return 1
    _n=$(awk -v o="$(cat /tmp/old-blk)" -v m="$(xl domid $PV)" '$1 == o && $2 == m' /tmp/grants | wc -l)
    echo "pages of destroyed domain $(cat /tmp/old-blk) still mapped by $PV: $_n"
    [ "$_n" -eq 34 ]
}

blk_reconnect() {
    _new=$(xl domid blkback-uk) || return 1
    echo "blkback-uk was domain $(cat /tmp/old-blk), is now domain $_new"
    vdevice --timeout 60 reconnect disk --backend "$_new" --disk 0 "$(xl domid $PV)" || return 1
    vdevice show "$(xl domid $PV)" | tee /tmp/show-disk || return 1
    grep -q "\[0\] Disk Member peer=$_new .* status=ok" /tmp/show-disk || return 1
    dom_run $PV '
dmesg | grep "xenshare: entry 0"
dmesg | grep -q "xenshare: entry 0: rejoining: disk share [0-9]* of domain '"$_new"' replaces share [0-9]* of domain '"$(cat /tmp/old-blk)"'" || exit 1
[ -e /sys/bus/xenshare/devices/xenshare-0 ] || exit 1'
}

# The dead owner's pages were unmapped: Xen can finish destroying it.
old_blk_gone() {
    until ! xl list | awk -v o="$(cat /tmp/old-blk)" '$2 == o { found = 1 } END { exit !found }'; do
        sleep 0.5
    done
    xl list
}

rejoin_pv() {
    vdevice --timeout 60 create net --backend "$(nb)" --pages $PAGES "$(xl domid $PV)" || return 1
    # Entry 0 holds the disk: the network share takes entry 1.
    dom_run $PV 'ls /sys/bus/xenshare/devices/; [ -e /sys/bus/xenshare/devices/xenshare-1 ]'
}

unload() {
    _id=$(xl domid "$1") || return 1
    dom_expect "$1" "vdevice page withdrawn" 'rmmod xenshare && dmesg | tail -n 5' || return 1
    if xenstore-read "/local/domain/$_id/data/vdevice" 2>/dev/null; then
        echo "the key is still there"
        return 1
    fi
}

grants_after_unload() {
    grants || return 1
    for _d in $PV $PVH; do
        _m=$(mapped_by $_d)
        _u=$(in_use_of $_d)
        echo "$_d: maps $_m of netback-uk's grants; $_u of its own grants in use"
        [ "$_m" -eq 0 ] && [ "$_u" -eq 0 ] || return 1
    done
    # Nothing at all mapped by either domU, from any domain.
    _any=$(awk -v a="$(xl domid $PV)" -v b="$(xl domid $PVH)" '$2 == a || $2 == b' /tmp/grants | wc -l)
    echo "grants mapped by either domU: $_any"
    [ "$_any" -eq 0 ]
}

reload() {
    dom_expect $PV "vdevice page withdrawn" 'modprobe xenshare && rmmod xenshare && dmesg | tail -n 3'
}

# modprobe_deps: the image's modules.dep names xenshare as xensnet's
# dependency (from modinfo), so loading xensnet loads xenshare first.
modprobe_deps() {
    dom_run $PV '
ls /lib/modules/*/extra/
grep xensnet /lib/modules/*/modules.dep || exit 1
modprobe xensnet || exit 1
lsmod | grep "^xens"
lsmod | grep -q "^xenshare " || { echo "xenshare was not loaded with xensnet"; exit 1; }
rmmod xensnet && rmmod xenshare || exit 1
dmesg | tail -n 2'
}

# dom0_load: the module in dom0 itself (a PV dom0): page published and
# read back by `vdevice show 0`, withdrawn on unload.
dom0_load() {
    modprobe xenshare || return 1
    dmesg | grep "xenshare:"
    xenstore-read /local/domain/0/data/vdevice || return 1
    vdevice show 0 | tee /tmp/show-dom0 || return 1
    grep -q "domain 0: 0 device(s)" /tmp/show-dom0 || return 1
    rmmod xenshare || return 1
    if xenstore-read /local/domain/0/data/vdevice 2>/dev/null; then
        echo "the key is still there"
        return 1
    fi
    dmesg | grep "xenshare: domain 0: vdevice page withdrawn"
}

step dom0-load 60 dom0_load
step netback-create 120 dom_create /xl-configs/netback-uk.cfg netback-uk
step create-pv 120 dom_create /rig/domu/linux-pv.cfg $PV
step create-pvh 120 dom_create /rig/domu/linux-pvh.cfg $PVH
step netback-ready 120 dom_wait netback-uk "netback-uk: ready"
step boot-pv 180 dom_wait $PV @@READY
step boot-pvh 180 dom_wait $PVH @@READY
step refused-beside-member 90 member_owns_page
step load-pv 60 load $PV
step load-pvh 60 load $PVH
step connect 180 connect
step joined-pv 60 joined $PV
step joined-pvh 60 joined $PVH
step grants-joined 60 grants_while_joined
step disconnect 120 disconnect
step removed-pv 60 removed $PV
step removed-pvh 60 removed $PVH
step disk-file 60 make_disk
step blk-create 180 blk_create
step disk-join 120 disk_join
step blk-destroy 60 blk_destroy
step blk-recreate 180 blk_create
step blk-reconnect 120 blk_reconnect
step old-blk-gone 60 old_blk_gone
step rejoin-pv 120 rejoin_pv
step unload-pv 60 unload $PV
step unload-pvh 60 unload $PVH
step grants-after 60 grants_after_unload
step reload-pv 60 reload
step modprobe-deps 60 modprobe_deps
step clean-logs 60 clean_logs $PV $PVH
