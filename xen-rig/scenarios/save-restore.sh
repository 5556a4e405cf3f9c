# save-restore: a Linux guest keeps its xenshare devices across `xl save
# -c` (a checkpoint: the suspend is cancelled) and across `xl save` then
# `xl restore` (a new domain id), with the vdevice daemon running.
#
# netback-uk and blkback-uk from /etc/xen, the daemon, dom0, a PV guest
# (sr-a) with xenshare.ko, xensnet.ko, xensblk.ko and a PVH guest (sr-h)
# with xenshare.ko and xensnet.ko. net0 joins dom0 and both guests; blk0
# gives sr-a a file of dom0, ext4 on it, mounted, files written with their
# checksums kept in the guest. sr-h is saved and restored too (net only).
#
# - Checkpoint: the guest leaves its shares for the suspend and joins the
#   same ones again; same domain id; pings and the disk work at once.
# - Save: the daemon frees what the backends held for the old id. Restore:
#   the guest publishes its page again under the new id (same devices,
#   detached); the daemon rewrites both entries in place with shares for
#   the new id; xsn0 keeps its address (no new lease), the file system
#   stays mounted, a writer running through the save and the restore
#   completes, the checksums match, more files are written, then
#   unmount, `e2fsck -f` clean, checksums again after remount.
# - No Oops, WARNING, BUG or hung task in the guest's kernel log.
G=sr-a
H=sr-h
DISK=/tmp/sr-disk.img

collect_logs() {
    [ -f /tmp/vdevice-daemon.log ] && rig_send_file vdevice-daemon.log /tmp/vdevice-daemon.log
    for _d in $G $H; do
        xl domid "$_d" >/dev/null 2>&1 || continue
        bounded 30 dom_run "$_d" 'dmesg' > "/tmp/dmesg-$_d.log" 2>/dev/null
        rig_send_file "dmesg-$_d.log" "/tmp/dmesg-$_d.log"
    done
}
trap collect_logs EXIT

setup_dom0() {
    modprobe xen-blkback || return 1
    modprobe loop || return 1
    install_block_script
}

start_backend() {
    : > "$(dom_log "$1")"
    xl create "/etc/xen/$1.cfg" || return 1
    dom_wait "$1" "$1: ready"
}

start_daemon() {
    setsid vdevice --timeout 60 daemon > /tmp/vdevice-daemon.log 2>&1 < /dev/null &
    _i=0
    until [ -s /tmp/vdevice-daemon.log ]; do
        _i=$((_i + 1)); [ $_i -gt 300 ] && { echo "the daemon printed nothing"; return 1; }
        sleep 0.2
    done
}

# start_guest NAME pv|pvh
start_guest() {
    : > "$(dom_log $1)"
    # Less memory than the rig's default: the save image is written to
    # dom0's RAM.
    xl create "/rig/domu/linux-$2.cfg" "name=\"$1\"" "memory=160" || return 1
    dom_wait $1 @@READY
}

# guest_modules NAME MODULES...
guest_modules() {
    _g=$1
    shift
    dom_expect $_g "vdevice page published" "for m in $*; do
    modprobe \$m || exit 1
done
dmesg | grep 'xenshare:'"
}

create_devices() {
    modprobe xenshare || return 1
    vdevice --timeout 60 --create net 0 $G $H > /tmp/created || { cat /tmp/created; return 1; }
    [ "$(cat /tmp/created)" = net0 ] || return 1
    dd if=/dev/zero of=$DISK bs=1M count=32 2>&1 || return 1
    vdevice --timeout 60 --create block $DISK $G > /tmp/created || { cat /tmp/created; return 1; }
    [ "$(cat /tmp/created)" = blk0 ] || return 1
    vdevice --list
}

mkfs_mount() {
    dom_run $G 'i=0
until [ -b /dev/xsba ]; do
    i=$((i + 1)); [ $i -gt 150 ] && { echo "no /dev/xsba"; dmesg | tail; exit 1; }
    sleep 0.2
done
mkfs.ext4 -q -F /dev/xsba || exit 1
mkdir -p /mnt/d && mount /dev/xsba /mnt/d || exit 1
df -h /mnt/d'
}

# write_files TAG: four files of 256 KiB on the disk, synced, their
# checksums kept in the guest's RAM.
write_files() {
    dom_run $G "for i in 1 2 3 4; do
    dd if=/dev/urandom of=/tmp/f bs=1k count=256 2>/dev/null
    cp /tmp/f /mnt/d/$1-\$i || exit 1
    sha256sum /tmp/f | sed \"s|/tmp/f|$1-\$i|\" >> /tmp/written.sums
done
sync || exit 1
wc -l < /tmp/written.sums"
}

# The writer (start_writer, lib.sh) runs through the save and the restore.
writer_done() {
    dom_run $G "$(writer_wait_cmds 600)"'
cat /tmp/writer.log; ls /mnt/d | grep -c "^w"'
}

check_files() {
    dom_run $G 'cd /mnt/d && sha256sum -c /tmp/written.sums | tail -n 2'
}

# pings NAME: one ping dom0 -> NAME, NAME -> dom0, NAME -> netback-uk.
pings() {
    sh -c "$(ping_cmd "$(addr $1)" 1)" || return 1
    dom_run $1 "$(ping_cmd "$(addr dom0)" 1)" || return 1
    dom_run $1 "$(ping_cmd $MGMT 1)"
}

# connected NAME COUNT: `vdevice --list` shows NAME connected to COUNT
# devices under its current domain id (the daemon reconnects it).
connected() {
    _i=0
    until _id=$(xl domid $1) && vdevice --list > /tmp/list 2>&1 &&
        [ "$(grep -c "member $1 (domain $_id): connected" /tmp/list)" = "$2" ]; do
        _i=$((_i + 1))
        if [ $_i -gt 240 ]; then
            cat /tmp/list
            tail -n 20 /tmp/vdevice-daemon.log
            return 1
        fi
        sleep 0.5
    done
    cat /tmp/list
}

# checkpoint NAME COUNT: `xl save -c`; its COUNT devices join their
# shares again by themselves, under the same domain id.
checkpoint() {
    _id=$(xl domid $1) || return 1
    _t0=$(now_ms)
    xl save -c $1 /tmp/sr.ckpt || return 1
    echo "checkpointed in $(( $(now_ms) - _t0 )) ms; still domain $(xl domid $1)"
    rm -f /tmp/sr.ckpt
    [ "$(xl domid $1)" = "$_id" ] || return 1
    dom_run $1 'i=0
until [ "$(dmesg | grep -c "reconnected to domain [0-9]*.s share after the suspend")" = '$2' ]; do
    i=$((i + 1)); [ $i -gt 150 ] && { dmesg | grep -E "xens|suspend" | tail -n 20; exit 1; }
    sleep 0.2
done
dmesg | grep -E "for the suspend|after the suspend"'
}

# save NAME KIND...: `xl save`; the daemon frees the share of each KIND
# (Network, Disk) the backends held for its id, `--list` shows it away.
save() {
    _g=$1
    shift
    _old=$(xl domid $_g) || return 1
    echo "$_old" > /tmp/old-id-$_g
    _t0=$(now_ms)
    xl save $_g /tmp/sr.save || return 1
    echo "saved in $(( $(now_ms) - _t0 )) ms ($(( $(wc -c < /tmp/sr.save) / 1048576 )) MiB)"
    _i=0
    for _k in "$@"; do
        until grep -q "removed the $_k share of domain $_old" /tmp/vdevice-daemon.log; do
            _i=$((_i + 1)); [ $_i -gt 120 ] && { tail -n 20 /tmp/vdevice-daemon.log; return 1; }
            sleep 0.5
        done
    done
    vdevice --list | tee /tmp/list
    [ "$(grep -c "member $_g (domain -): away" /tmp/list)" = $# ]
}

# restore NAME COUNT
restore() {
    _t0=$(now_ms)
    xl restore /tmp/sr.save || return 1
    echo "restored in $(( $(now_ms) - _t0 )) ms as domain $(xl domid $1) (was $(cat /tmp/old-id-$1))"
    rm -f /tmp/sr.save
    connected $1 $2 || return 1
    grep -E "rewritten in place|connected again" /tmp/vdevice-daemon.log | tail -n $(($2 * 2))
}

# after_restore NAME: the guest says it was restored; xsn0 has its carrier
# back and the address it had before (no new lease).
after_restore() {
    dom_run $1 "dmesg | grep -E 'restored as domain|after the suspend|wait for dom0' | tail -n 6
dmesg | grep -q 'restored as domain $(xl domid $1) (was $(cat /tmp/old-id-$1))' || exit 1
i=0
until [ \"\$(cat /sys/class/net/xsn0/carrier 2>/dev/null)\" = 1 ]; do
    i=\$((i + 1)); [ \$i -gt 150 ] && { echo 'xsn0 has no carrier'; exit 1; }
    sleep 0.2
done
ip -4 addr show xsn0 | grep -q 'inet $(addr $1)/' || { ip -4 addr show xsn0; exit 1; }"
}

still_mounted() {
    dom_run $G 'grep /dev/xsba /proc/mounts'
}

fsck_clean() {
    dom_run $G 'cd / && umount /mnt/d || exit 1
e2fsck -f -n /dev/xsba; rc=$?; echo "e2fsck exit status $rc"; [ $rc = 0 ] || exit 1
mount /dev/xsba /mnt/d && cd /mnt/d && sha256sum -c /tmp/written.sums > /dev/null || exit 1
echo "$(wc -l < /tmp/written.sums) checksums match after remount"'
}

clean_log() {
    dom_run $1 'if dmesg | grep -E "Oops|WARNING|BUG|blocked for more than|Call Trace"; then exit 1; fi
echo "no Oops, WARNING, BUG or hung task"'
}

step setup-dom0 60 setup_dom0
step start-netback 120 start_backend netback-uk
step start-blkback 120 start_backend blkback-uk
step start-daemon 60 start_daemon
step start-pv 240 start_guest $G pv
step start-pvh 240 start_guest $H pvh
step modules-pv 60 guest_modules $G xenshare xensnet crc32c_generic ext4 xensblk
step modules-pvh 60 guest_modules $H xenshare xensnet
step create-devices 180 create_devices
step lan-dom0 120 lan_dom0
step lan-pv 120 lan_guest $G
step lan-pvh 120 lan_guest $H
step pings-pv 120 pings $G
step pings-pvh 120 pings $H
step mkfs-mount 180 mkfs_mount
step write-before 120 write_files before
step checkpoint-pv 240 checkpoint $G 2
step pings-after-checkpoint 120 pings $G
step write-after-checkpoint 120 write_files ckpt
step checkpoint-pvh 240 checkpoint $H 1
step pings-pvh-after-checkpoint 120 pings $H
step start-writer 60 start_writer $G w 12
step save-pv 300 save $G Network Disk
step restore-pv 300 restore $G 2
step after-restore-pv 120 after_restore $G
step still-mounted 60 still_mounted
step pings-after-restore 120 pings $G
step writer-done 180 writer_done
step files-after-restore 120 check_files
step write-after-restore 120 write_files restored
step fsck-clean 180 fsck_clean
step save-pvh 300 save $H Network
step restore-pvh 300 restore $H 1
step after-restore-pvh 120 after_restore $H
step pings-pvh-after-restore 120 pings $H
step clean-log-pv 60 clean_log $G
step clean-log-pvh 60 clean_log $H
