# blk-modules: blkback-uk serves a disk to a Linux domU whose kernel is the
# member: xenshare.ko owns the domU's vdevice page and xensblk.ko makes the
# disk entry /dev/xsba (blk-mq; each request's pages granted to the server
# for its lifetime). As blk-domu, with the kernel modules in place of
# share-member: mkfs.ext4, mount, files written and read back, unmount,
# `e2fsck -f` clean; then a writer streams 64 MiB in 1 MiB chunks, each
# with fsync, `xl destroy blkback-uk` hits it mid-stream, the writer
# blocks; `xl create` again and `vdevice reconnect disk` rewrite the entry
# in place, xensblk re-issues what was unanswered to the new server, the
# writer completes; checksums, `e2fsck -f` clean; dom0 removes the entry
# and gives the disk again read-only (mounts read-only, a write is
# refused); `rmmod xensblk xenshare`
# leaves no grant behind and no Oops or WARNING in dmesg. Finally dom0
# checks the image file itself with e2fsck.
U=blk-m
IMG=/tmp/blkmod.img
SECTORS=262144
DISK='disk=["format=raw, vdev=xvda, access=rw, target=/tmp/blkmod.img"]'
CHUNKS=64
DEV=/dev/xsba

trap 'collect_dmesg $U' EXIT

device_up() {
    dom_run $U "$(xsba_cmds)
n=\$(cat /sys/block/xsba/size)
echo \"$DEV: \$n sectors (want $SECTORS), read-only \$(cat /sys/block/xsba/ro), \
max \$(cat /sys/block/xsba/queue/max_hw_sectors_kb) KiB, \$(cat /sys/block/xsba/queue/max_segments) segments, \
depth \$(cat /sys/block/xsba/queue/nr_requests), write cache \$(cat /sys/block/xsba/queue/write_cache), \
fua \$(cat /sys/block/xsba/queue/fua), discard max \$(cat /sys/block/xsba/queue/discard_max_bytes)\"
[ \"\$n\" = $SECTORS ] && [ \$(cat /sys/block/xsba/ro) = 0 ]"
}

make_fs() {
    dom_run $U "
mkfs.ext4 -q -F $DEV || exit 1
mkdir -p /mnt && mount -t ext4 $DEV /mnt || exit 1
df -k /mnt"
}

# Files of 256 KiB to 1.5 MiB, synced, read back after dropping the page
# cache; unmount, e2fsck -f, mount again.
write_files() {
    dom_run $U "
for i in 1 2 3 4 5 6; do
    dd if=/dev/urandom of=/mnt/f\$i bs=64k count=\$((i * 4)) 2>/dev/null || exit 1
done
sync || exit 1
md5sum /mnt/f* > /tmp/sums || exit 1
echo 3 > /proc/sys/vm/drop_caches
md5sum -c /tmp/sums || exit 1
umount /mnt || exit 1
e2fsck -f -n $DEV; rc=\$?
echo \"e2fsck -f exit status \$rc\"
[ \$rc = 0 ] || exit 1
mount -t ext4 $DEV /mnt && md5sum -c /tmp/sums"
}

# Discard follows the server's offer: with DISCARD, fstrim reaches the
# server and succeeds; without (a vbd store whose disk has none), the queue
# has no discard limit and fstrim is refused in the domU.
trim() {
    dom_run $U '
max=$(cat /sys/block/xsba/queue/discard_max_bytes)
echo "discard_max_bytes $max"
if [ "$max" = 0 ]; then
    dmesg | grep -q "xsba: .* features \\(0\\|0x[014589cd]\\)," || { echo "discard offered but not set up"; exit 1; }
    fstrim -v /mnt && { echo "fstrim worked without discard"; exit 1; }
    echo "no discard offered: fstrim refused, as it must be"
else
    fstrim -v /mnt
fi'
}

# The writer completes through the new blkback-uk; xensblk re-issued what
# the destroyed one left unanswered (at least one request: the writer was
# blocked on it).
writes_complete() {
    dom_run $U "
i=0
until [ -e /tmp/writer.rc ]; do
    i=\$((i + 1)); [ \$i -gt 2000 ] && { echo \"writer stuck at chunk \$(cat /tmp/writer.progress)\"; exit 1; }
    sleep 0.2
done
echo \"writer: \$(cat /tmp/writer.rc), chunks \$(cat /tmp/writer.progress) of $CHUNKS\"
dmesg | grep 'xsba: reconnected\|broke the protocol'
[ \"\$(cat /tmp/writer.rc)\" = ok ] || exit 1
dmesg | grep 'xsba: reconnected' | grep -qv 're-issued 0 '"
}

verify() {
    dom_run $U "
echo 3 > /proc/sys/vm/drop_caches
md5sum -c /tmp/sums || exit 1
umount /mnt || exit 1
e2fsck -f -n $DEV; rc=\$?
echo \"e2fsck -f exit status \$rc\"
[ \$rc = 0 ] || exit 1
mount -t ext4 $DEV /mnt || exit 1
echo 'after the remount:'
md5sum -c /tmp/sums || exit 1
echo 'checksums written:'
cat /tmp/sums
echo 'checksums read back:'
md5sum /mnt/f* /mnt/during
umount /mnt"
}

# dom0 removes the entry: the disk goes (no grant left live) while the
# module stays.
remove_entry() {
    vdevice --timeout 60 remove disk --backend "$(xl domid blkback-uk)" "$(xl domid $U)" || return 1
    dom_run $U "
i=0
while [ -e /sys/block/xsba ]; do
    i=\$((i + 1)); [ \$i -gt 150 ] && { echo 'xsba still there'; exit 1; }
    sleep 0.2
done
dmesg | grep 'xsba removed'
dmesg | grep -q 'xsba removed: 0 grant(s) live, 0 left pinned'"
}

# The same disk again, read-only: the disk says so, the file system mounts
# read-only with every checksum, and a write to the device is refused.
read_only() {
    vdevice --timeout 60 create disk --backend "$(xl domid blkback-uk)" --disk 0 \
        --read-only "$(xl domid $U)" || return 1
    dom_run $U "$(xsba_cmds)
dmesg | grep 'xsba: .* (read-only)' || exit 1
echo \"read-only \$(cat /sys/block/xsba/ro)\"
[ \$(cat /sys/block/xsba/ro) = 1 ] || exit 1
mount -t ext4 -o ro $DEV /mnt || exit 1
md5sum -c /tmp/sums || exit 1
umount /mnt || exit 1
if dd if=/dev/zero of=$DEV bs=4k count=1 2>/tmp/dd.err; then echo 'a write went through'; exit 1; fi
echo \"write refused: \$(cat /tmp/dd.err)\""
}

# rmmod: the disk goes with no grant left live, and the kernel logged no
# Oops, WARNING or BUG at any point.
unload() {
    dom_run $U "
rmmod xensblk xenshare || exit 1
lsmod | grep '^xens' && exit 1
[ ! -e $DEV ] || exit 1
dmesg | grep 'xsba removed'
dmesg | grep -q 'xsba removed: 0 grant(s) live, 0 left pinned' || exit 1
if dmesg | grep -E 'Oops|WARNING|BUG:|Call Trace|general protection'; then exit 1; fi
echo 'dmesg: no Oops, WARNING or BUG'"
}

step disk-file 60 make_disk
step create 120 blk_create
step ready 180 dom_wait blkback-uk "blkback-uk: ready"
step disk-connected 30 disk_line
step domu-create 120 dom_create /rig/domu/linux-pv.cfg $U
step domu-boot 180 dom_wait $U @@READY
step modules 90 load_xensblk $U ext4 crc32c_generic
step published 60 published $U
step connect 120 connect_disk "$U"
step device 90 device_up
step mkfs 300 make_fs
step write 300 write_files
step trim 120 trim
step writer 300 chunk_writer $U $CHUNKS
step destroy 60 destroy_blkback
step writer-stuck 60 chunk_writer_stuck $U $CHUNKS
step recreate 120 blk_create
step ready-again 180 dom_wait blkback-uk "blkback-uk: ready"
step disk-again 30 disk_line
step reconnect 120 reconnect_disk $U
step writes-complete 500 writes_complete
step verify 600 verify
step remove-entry 90 remove_entry
step read-only 120 read_only
step unload 120 unload
step image-fsck 120 image_fsck "$IMG"
