# blk-ram: blkback-uk serves four disks, each to its own Linux domU:
# three vbds (files in dom0, as in blk-domu) and a RAM disk from its boot
# module (xl-configs/blkback-uk-ram.cfg, `ramdisk=`: volatile, disk 3,
# after the vbds). Four members because the vdevice tool gives a member
# one disk per backend. dom0 prepares an ext4 image holding four random
# files with `mkfs.ext4 -d` and keeps their md5 sums; blk-ram-u3 mounts
# the RAM disk through share-member, checks every sum, writes a file and
# reads it back after dropping the page cache, e2fsck -n is clean;
# blk-ram-u0..2 each write 4 MiB to their vbd and read it back. Then
# blkback-uk's heap lines: the one after the fourth connection must say
# 4 shares, and its peak line under that I/O is printed (the memory note
# of docs/performance.md). Each member leaves with no errors, and dom0's
# image file is unchanged: what u3 wrote lived in blkback-uk's memory.
RAM=/tmp/blkram.img
RAM_SECTORS=16384
VBD_SECTORS=32768
MEMBERS="blk-ram-u0 blk-ram-u1 blk-ram-u2 blk-ram-u3"

collect_member_logs() {
    for _u in $MEMBERS; do
        xl domid "$_u" >/dev/null 2>&1 || continue
        bounded 30 dom_run "$_u" 'cat /tmp/share-member.log' > /tmp/share-member-$_u.log 2>/dev/null
        rig_send_file "share-member-$_u.log" "/tmp/share-member-$_u.log"
    done
}
trap collect_member_logs EXIT

make_disks() {
    modprobe xen-blkback || return 1
    modprobe loop || return 1
    install_block_script
    # Loop devices made here, one after the other: libxl runs the block
    # scripts of several disks at once, and two `losetup -f` racing pick
    # the same device.
    : > /tmp/vbd-devs
    for i in 0 1 2; do
        dd if=/dev/zero of=/tmp/vbd$i.img bs=1M count=$((VBD_SECTORS / 2048)) 2>/dev/null || return 1
        _d=$(losetup -f) || return 1
        losetup "$_d" /tmp/vbd$i.img || return 1
        echo "$_d" >> /tmp/vbd-devs
    done
    cat /tmp/vbd-devs
    rm -rf /tmp/ramsrc && mkdir -p /tmp/ramsrc || return 1
    for i in 1 2 3 4; do
        dd if=/dev/urandom of=/tmp/ramsrc/f$i bs=64k count=$((i * 4)) 2>/dev/null || return 1
    done
    (cd /tmp/ramsrc && md5sum f1 f2 f3 f4) > /tmp/ramsums || return 1
    # mkfs.ext4: the host e2fsprogs (busybox mke2fs has no -d).
    mkfs.ext4 -q -F -d /tmp/ramsrc "$RAM" $((RAM_SECTORS / 2))k || return 1
    e2fsck -f -n "$RAM" || return 1
    md5sum "$RAM" > /tmp/ram.md5
    ls -l /tmp/vbd*.img "$RAM"
    cat /tmp/ramsums
}

blk_create() {
    : > "$(dom_log blkback-uk)"
    set -- $(cat /tmp/vbd-devs)
    _disks="disk=[\"format=raw, vdev=xvda, access=rw, target=$1\", \"format=raw, vdev=xvdb, access=rw, target=$2\", \"format=raw, vdev=xvdc, access=rw, target=$3\"]"
    xl create /xl-configs/blkback-uk-ram.cfg "ramdisk=\"$RAM\"" "$_disks" || return 1
    xl domid blkback-uk
}

# The module and the four disks as the image saw them.
disk_lines() {
    dom_wait blkback-uk "blkback-uk: ready"
    grep -a "pvh-rt: \|blkback-uk: disk\|blkback-uk: ready" "$(dom_log blkback-uk)" | sed 's/@@/@ @/g'
    _log=$(dom_log blkback-uk)
    grep -aq "pvh-rt: boot module 0: " "$_log" || return 1
    ! grep -aq "boot module .* refused" "$_log" || return 1
    for i in 0 1 2; do
        grep -aq "blkback-uk: disk $i: vbd .* $VBD_SECTORS sectors" "$_log" || return 1
    done
    grep -aq "blkback-uk: disk 3: ram from boot module 0 at .*: $RAM_SECTORS sectors (.*), read-write, VOLATILE" "$_log" || return 1
    grep -aq "blkback-uk: ready: 4 disk(s)" "$_log"
}

domus_create() {
    for _u in $MEMBERS; do
        dom_create /rig/domu/linux-pv.cfg "$_u" || return 1
    done
}

domus_boot() {
    for _u in $MEMBERS; do
        dom_wait "$_u" @@READY
    done
}

# As blk-domu's: gntalloc's limit raised for a disk of 32 x 33 pages.
start_members() {
    for _u in $MEMBERS; do
        dom_run $_u '
for m in fuse loop ext4 crc32c_generic; do modprobe $m || exit 1; done
echo 4096 > /sys/module/xen_gntalloc/parameters/limit || exit 1
'"$START_SHARE_MEMBER" || return 1
    done
}

# Disk i to member blk-ram-u<i>.
connect() {
    for d in 0 1 2 3; do
        vdevice --timeout 60 create disk --backend "$(xl domid blkback-uk)" --disk $d \
            --features 15 "$(xl domid blk-ram-u$d)" || return 1
    done
    for d in 0 1 2 3; do
        vdevice show "$(xl domid blk-ram-u$d)" || return 1
    done
}

devices_up() {
    for d in 0 1 2 3; do
        _want=$VBD_SECTORS
        [ $d = 3 ] && _want=$RAM_SECTORS
        dom_run blk-ram-u$d "
i=0
until [ -e /run/share-member/disk0.dev ]; do
    i=\$((i + 1)); [ \$i -gt 300 ] && { echo 'no block device'; cat /tmp/share-member.log; exit 1; }
    sleep 0.2
done
dev=\$(readlink /run/share-member/disk0.dev)
n=\$(cat /sys/block/\${dev#/dev/}/size)
echo \"blk-ram-u$d: \$dev, \$n sectors (want $_want)\"
[ \"\$n\" = $_want ]" || return 1
    done
}

# dom0's files, read from the RAM disk; then a write that lives in
# blkback-uk's memory only.
ram_files() {
    dom_run blk-ram-u3 "
dev=\$(readlink /run/share-member/disk0.dev)
mkdir -p /mnt/ram && mount -t ext4 \$dev /mnt/ram || exit 1
cd /mnt/ram || exit 1
echo '$(cat /tmp/ramsums)' > /tmp/ramsums
md5sum -c /tmp/ramsums || exit 1
dd if=/dev/urandom of=/tmp/new bs=64k count=8 2>/dev/null || exit 1
cp /tmp/new /mnt/ram/new && sync || exit 1
echo 3 > /proc/sys/vm/drop_caches
a=\$(md5sum < /tmp/new); b=\$(md5sum < /mnt/ram/new)
echo \"written \$a, read back \$b\"
[ \"\$a\" = \"\$b\" ] || exit 1
cd / && umount /mnt/ram && e2fsck -f -n \$dev"
}

# 4 MiB to each vbd, synced, read back from the disk.
vbd_io() {
    for d in 0 1 2; do
        dom_run blk-ram-u$d "
dd if=/dev/urandom of=/tmp/pat bs=1M count=4 2>/dev/null || exit 1
want=\$(md5sum < /tmp/pat)
dev=\$(readlink /run/share-member/disk0.dev)
dd if=/tmp/pat of=\$dev bs=1M count=4 conv=fsync 2>/dev/null || exit 1
echo 3 > /proc/sys/vm/drop_caches
got=\$(dd if=\$dev bs=1M count=4 2>/dev/null | md5sum)
echo \"blk-ram-u$d: wrote \$want, read \$got\"
[ \"\$got\" = \"\$want\" ]" || return 1
    done
}

# blkback-uk's heap with the four disks served (its lines come after each
# vdevice change, and once a second when the peak grows).
heap_lines() {
    sleep 2
    _log=$(dom_log blkback-uk)
    grep -a "pvh-rt: image\|blkback-uk: ready\|blkback-uk: heap" "$_log" | sed 's/@@/@ @/g'
    grep -aq "blkback-uk: heap .* 4 share(s) served" "$_log"
}

stop_members() {
    for _u in $MEMBERS; do
        dom_run $_u "
kill -TERM \$(pidof share-member) || exit 1
i=0
while pidof share-member > /dev/null; do
    i=\$((i + 1)); [ \$i -gt 150 ] && { echo 'share-member still runs'; exit 1; }
    sleep 0.2
done
tail -n 2 /tmp/share-member.log
grep -q 'disk closed (.* errors 0, ' /tmp/share-member.log" || return 1
    done
}

# Volatile: what the domU wrote lived in blkback-uk's memory; dom0's
# image file is as it was.
file_untouched() {
    xl destroy blkback-uk || return 1
    md5sum -c /tmp/ram.md5
}

step disk-files 120 make_disks
step create 120 blk_create
step ready 180 disk_lines
step domus-create 300 domus_create
step domus-boot 300 domus_boot
step members 300 start_members
step connect 240 connect
step devices 240 devices_up
step ram-files 300 ram_files
step vbd-io 300 vbd_io
step heap 30 heap_lines
step stop-members 240 stop_members
step file-untouched 60 file_untouched
