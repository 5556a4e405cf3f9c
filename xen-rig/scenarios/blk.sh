# blk: blkback-uk serves its own Xen disk on real Xen. dom0 makes a disk
# image file, starts blkback-uk with it as a vbd (dom0's blkback over a
# loop device), and plays the member itself (blk-dom0-check over
# share-hal's Linux platform, connected with the vdevice tool): writes a
# pattern, flushes, reads it back. Then `xl destroy blkback-uk`: the
# flushed data must be in the file (md5 of the file's range against the
# pattern); `xl create` again and the member reads the same data back
# through a new blkback-uk.

IMG=/tmp/blk0.img
SECTOR=2048
KIB=4096
DISK='disk=["format=raw, vdev=xvda, access=rw, target=/tmp/blk0.img"]'

make_disk() {
    modprobe xen-blkback || return 1
    modprobe loop || return 1
    install_block_script
    dd if=/dev/zero of="$IMG" bs=1M count=64 2>&1 || return 1
    ls -l "$IMG"
}

blk_create() {
    : > "$(dom_log blkback-uk)"
    xl create /xl-configs/blkback-uk.cfg "$DISK"
}

# The image's line for disk 0 (sectors, features), defused for the console.
disk_line() {
    dom_wait blkback-uk "blkback-uk: disk 0:"
    grep -a "blkback-uk: disk 0:\|blkback-uk: ready" "$(dom_log blkback-uk)" | sed 's/@@/@ @/g'
    grep -aq "blkback-uk: disk 0: vbd 51712 (backend domain 0): 131072 sectors" "$(dom_log blkback-uk)"
}

# member MODE SAVE: blk-dom0-check owns dom0's vdevice page; the vdevice
# tool connects it to blkback-uk's disk 0.
member() {
    blk-dom0-check "$1" --sector $SECTOR --kib $KIB --seed 7 --save "$2" > /tmp/member.log 2>&1 &
    _m=$!
    while ! grep -q "published" /tmp/member.log; do
        kill -0 $_m 2>/dev/null || break
        sleep 0.2
    done
    # Features 15: flush, discard, FUA, indirect (what the disk has of it).
    if ! vdevice --timeout 60 create disk --backend "$(xl domid blkback-uk)" --disk 0 --features 15 0; then
        kill $_m
        cat /tmp/member.log
        return 1
    fi
    wait $_m
    _rc=$?
    cat /tmp/member.log
    return $_rc
}

destroy() {
    xl destroy blkback-uk || return 1
    while xl domid blkback-uk >/dev/null 2>&1; do sleep 0.2; done
}

# md5 of the disk file's range against the pattern the member wrote.
file_has_pattern() {
    _a=$(dd if="$IMG" bs=512 skip=$SECTOR count=$((KIB * 2)) 2>/dev/null | md5sum | cut -d' ' -f1)
    _b=$(md5sum < /tmp/expected.bin | cut -d' ' -f1)
    echo "disk file sectors $SECTOR+$((KIB * 2)): md5 $_a; pattern written: md5 $_b"
    [ -n "$_a" ] && [ "$_a" = "$_b" ]
}

readback_matches() {
    _a=$(md5sum < /tmp/readback.bin | cut -d' ' -f1)
    _b=$(md5sum < /tmp/expected.bin | cut -d' ' -f1)
    echo "read back through the re-created blkback-uk: md5 $_a; pattern written: md5 $_b"
    [ "$_a" = "$_b" ]
}

step disk-file 60 make_disk
step create 120 blk_create
step ready 180 dom_wait blkback-uk "blkback-uk: ready"
step disk-connected 30 disk_line
step write 300 member write /tmp/expected.bin
step destroy 60 destroy
step file-after-destroy 60 file_has_pattern
step recreate 120 blk_create
step ready-again 180 dom_wait blkback-uk "blkback-uk: ready"
step disk-again 30 disk_line
step verify 300 member verify /tmp/readback.bin
step readback 30 readback_matches
step destroy-again 60 destroy
