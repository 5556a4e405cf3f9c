# blk-domu: blkback-uk serves a disk to a Linux domU on real Xen, and is
# destroyed and re-created while the domU writes. blkback-uk's own disk is
# a vbd from its xl config (a file in dom0, through dom0's blkback); the
# domU runs the userspace member (share-member), which makes the disk a
# block device (a loop device over a FUSE file); dom0 connects them with
# the vdevice tool. In the domU: mkfs.ext4, mount, files written and read
# back; then a writer streams 64 MiB in 1 MiB chunks, each with fsync, and
# `xl destroy blkback-uk` hits it mid-stream; the writer blocks; `xl
# create` again, `vdevice reconnect disk` rewrites the domU's disk entry in
# place with the new blkback-uk's share (a new domain id), the member
# re-issues what was unanswered, the writer completes; unmount,
# `e2fsck -f` clean, remount, every checksum matches. Finally dom0 checks
# the image file itself with e2fsck. The member's log is handed over as
# share-member-blk-u.log.
U=blk-u
IMG=/tmp/blkdomu.img
SECTORS=262144
DISK='disk=["format=raw, vdev=xvda, access=rw, target=/tmp/blkdomu.img"]'
# 1 MiB chunks the writer streams across the destroy.
CHUNKS=64
DEV=/run/share-member/disk0.dev

collect_member_log() {
    xl domid "$U" >/dev/null 2>&1 || return 0
    bounded 30 dom_run "$U" 'cat /tmp/share-member.log' > /tmp/share-member-$U.log 2>/dev/null
    rig_send_file "share-member-$U.log" "/tmp/share-member-$U.log"
}
trap collect_member_log EXIT

# fuse and loop for the member's disks, ext4 and crc32c (its metadata
# checksums; without it mount says ENOENT) for the file system. Each
# disk grants 32 slots of 33 pages to its server: more than gntalloc's
# default limit of 1024 pages for the whole domain.
start_member() {
    dom_run $U '
for m in fuse loop ext4 crc32c_generic; do modprobe $m || exit 1; done
[ -c /dev/fuse ] && [ -c /dev/loop-control ] || { echo "no /dev/fuse or /dev/loop-control"; exit 1; }
echo 4096 > /sys/module/xen_gntalloc/parameters/limit || exit 1
'"$START_SHARE_MEMBER"
}

device_up() {
    dom_run $U "
i=0
until [ -e $DEV ]; do
    i=\$((i + 1)); [ \$i -gt 300 ] && { echo 'no block device'; cat /tmp/share-member.log; exit 1; }
    sleep 0.2
done
dev=\$(readlink $DEV)
n=\$(cat /sys/block/\${dev#/dev/}/size)
echo \"block device \$dev: \$n sectors (want $SECTORS), direct I/O \$(cat /sys/block/\${dev#/dev/}/loop/dio)\"
grep 'block device' /tmp/share-member.log
[ \"\$n\" = $SECTORS ]"
}

make_fs() {
    dom_run $U "
dev=\$(readlink $DEV)
mkfs.ext4 -q -F \$dev || exit 1
mkdir -p /mnt && mount -t ext4 \$dev /mnt || exit 1
df -k /mnt"
}

# Files of 256 KiB to 1.5 MiB, synced, their checksums kept in the domU's
# tmpfs; read back after dropping the page cache (so from the disk).
write_files() {
    dom_run $U '
for i in 1 2 3 4 5 6; do
    dd if=/dev/urandom of=/mnt/f$i bs=64k count=$((i * 4)) 2>/dev/null || exit 1
done
sync || exit 1
md5sum /mnt/f* > /tmp/sums || exit 1
echo 3 > /proc/sys/vm/drop_caches
md5sum -c /tmp/sums'
}

# The writer completes through the new blkback-uk; the member re-issued
# the requests the destroyed one left unanswered.
writes_complete() {
    dom_run $U "
i=0
until [ -e /tmp/writer.rc ]; do
    i=\$((i + 1)); [ \$i -gt 2000 ] && { echo \"writer stuck at chunk \$(cat /tmp/writer.progress)\"; exit 1; }
    sleep 0.2
done
echo \"writer: \$(cat /tmp/writer.rc), chunks \$(cat /tmp/writer.progress) of $CHUNKS\"
grep 're-issuing\|broke' /tmp/share-member.log
[ \"\$(cat /tmp/writer.rc)\" = ok ] || exit 1
grep 're-issuing' /tmp/share-member.log | grep -qv 're-issuing 0 '"
}

# Checksums (page cache dropped), unmount, e2fsck -f, remount, checksums
# again (fresh from the disk), unmount.
verify() {
    dom_run $U "
dev=\$(readlink $DEV)
echo 3 > /proc/sys/vm/drop_caches
md5sum -c /tmp/sums || exit 1
umount /mnt || exit 1
e2fsck -f -n \$dev; rc=\$?
echo \"e2fsck -f exit status \$rc\"
[ \$rc = 0 ] || exit 1
mount -t ext4 \$dev /mnt || exit 1
echo 'after the remount:'
md5sum -c /tmp/sums || exit 1
echo 'checksums written:'
cat /tmp/sums
echo 'checksums read back:'
md5sum /mnt/f* /mnt/during
umount /mnt"
}

# SIGTERM: the member leaves its share and removes the device; no request
# was answered with an error by either blkback-uk.
stop_member() {
    dom_run $U "
kill -TERM \$(pidof share-member) || exit 1
i=0
while pidof share-member > /dev/null; do
    i=\$((i + 1)); [ \$i -gt 150 ] && { echo 'share-member still runs'; exit 1; }
    sleep 0.2
done
tail -n 5 /tmp/share-member.log
[ ! -e $DEV ] || exit 1
grep -q 'disk closed (.* errors 0, ' /tmp/share-member.log"
}

step disk-file 60 make_disk
step create 120 blk_create
step ready 180 dom_wait blkback-uk "blkback-uk: ready"
step disk-connected 30 disk_line
step domu-create 120 dom_create /rig/domu/linux-pv.cfg $U
step domu-boot 180 dom_wait $U @@READY
step member 90 start_member
step connect 120 connect_disk "$U"
step device 90 device_up
step mkfs 300 make_fs
step write 300 write_files
step writer 300 chunk_writer $U $CHUNKS
step destroy 60 destroy_blkback
step writer-stuck 60 chunk_writer_stuck $U $CHUNKS
step recreate 120 blk_create
step ready-again 180 dom_wait blkback-uk "blkback-uk: ready"
step disk-again 30 disk_line
step reconnect 120 reconnect_disk $U
step writes-complete 500 writes_complete
step verify 300 verify
step stop-member 60 stop_member
step image-fsck 120 image_fsck "$IMG"
