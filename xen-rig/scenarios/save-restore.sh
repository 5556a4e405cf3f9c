# save-restore: a Linux guest keeps its xenshare devices across `xl save
# -c` (a checkpoint: the suspend is cancelled) and across `xl save` then
# `xl restore` (a new domain id), with the vdevice daemon running.
#
# netback-uk and blkback-uk from /etc/xen, the daemon, dom0 and one PV
# guest with xenshare.ko, xensnet.ko, xensblk.ko. net0 joins dom0 and the
# guest; blk0 gives the guest a file of dom0, ext4 on it, mounted, files
# written with their checksums kept in the guest.
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
DISK=/tmp/sr-disk.img
MGMT=10.77.0.1

collect_logs() {
    [ -f /tmp/vdevice-daemon.log ] && rig_send_file vdevice-daemon.log /tmp/vdevice-daemon.log
    if xl domid "$G" >/dev/null 2>&1; then
        bounded 30 dom_run "$G" 'dmesg' > "/tmp/dmesg-$G.log" 2>/dev/null
        rig_send_file "dmesg-$G.log" "/tmp/dmesg-$G.log"
    fi
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

start_guest() {
    : > "$(dom_log $G)"
    # Less memory than the rig's default: the save image is written to
    # dom0's RAM.
    xl create /rig/domu/linux-pv.cfg "name=\"$G\"" "memory=160" || return 1
    dom_wait $G @@READY
}

guest_modules() {
    dom_expect $G "vdevice page published" 'for m in xenshare xensnet crc32c_generic ext4 xensblk; do
    modprobe $m || exit 1
done
dmesg | grep "xenshare:"'
}

create_devices() {
    modprobe xenshare || return 1
    vdevice --timeout 60 --create net 0 $G > /tmp/created || { cat /tmp/created; return 1; }
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

# A writer in the guest through the save and restore: files of 1 MiB,
# each synced, their checksums kept in the guest.
start_writer() {
    dom_run $G '(for i in $(seq 1 12); do
    dd if=/dev/urandom of=/tmp/w bs=1M count=1 2>/dev/null
    cp /tmp/w /mnt/d/w$i && sync && sha256sum /tmp/w | sed "s|/tmp/w|w$i|" >> /tmp/written.sums
done; echo done > /tmp/writer.end) > /tmp/writer.log 2>&1 &
sleep 1'
}

writer_done() {
    dom_run $G 'i=0
until [ -f /tmp/writer.end ]; do
    i=$((i + 1)); [ $i -gt 600 ] && { echo "the writer is stuck"; cat /tmp/writer.log; exit 1; }
    sleep 0.2
done
cat /tmp/writer.log; ls /mnt/d | grep -c "^w"'
}

check_files() {
    dom_run $G 'cd /mnt/d && sha256sum -c /tmp/written.sums | tail -n 2'
}

pings() {
    sh -c "$(ping_cmd "$(addr $G)")" || return 1
    dom_run $G "$(ping_cmd "$(addr dom0)")" || return 1
    dom_run $G "$(ping_cmd $MGMT)"
}

# connected DOMID: `vdevice --list` shows the guest connected to both
# devices under DOMID (the daemon reconnects it).
connected() {
    _i=0
    until vdevice --list > /tmp/list 2>&1 &&
        [ "$(grep -c "member $G (domain $1): connected" /tmp/list)" = 2 ]; do
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

checkpoint() {
    _id=$(xl domid $G) || return 1
    _t0=$(now_ms)
    xl save -c $G /tmp/sr.ckpt || return 1
    echo "checkpointed in $(( $(now_ms) - _t0 )) ms; still domain $(xl domid $G)"
    rm -f /tmp/sr.ckpt
    [ "$(xl domid $G)" = "$_id" ] || return 1
    # Both devices joined their shares again by themselves.
    dom_run $G 'i=0
until [ "$(dmesg | grep -c "reconnected to domain [0-9]*.s share after the suspend")" = 2 ]; do
    i=$((i + 1)); [ $i -gt 150 ] && { dmesg | grep -E "xens|suspend" | tail -n 20; exit 1; }
    sleep 0.2
done
dmesg | grep -E "for the suspend|after the suspend"'
}

save() {
    _old=$(xl domid $G) || return 1
    echo "$_old" > /tmp/old-id
    _t0=$(now_ms)
    xl save $G /tmp/sr.save || return 1
    echo "saved in $(( $(now_ms) - _t0 )) ms ($(( $(wc -c < /tmp/sr.save) / 1048576 )) MiB)"
    _i=0
    until grep -q "removed the Network share of domain $_old" /tmp/vdevice-daemon.log &&
        grep -q "removed the Disk share of domain $_old" /tmp/vdevice-daemon.log; do
        _i=$((_i + 1)); [ $_i -gt 120 ] && { tail -n 20 /tmp/vdevice-daemon.log; return 1; }
        sleep 0.5
    done
    vdevice --list | tee /tmp/list
    [ "$(grep -c "member $G (domain -): away" /tmp/list)" = 2 ]
}

restore() {
    _t0=$(now_ms)
    xl restore /tmp/sr.save || return 1
    echo "restored in $(( $(now_ms) - _t0 )) ms as domain $(xl domid $G) (was $(cat /tmp/old-id))"
    rm -f /tmp/sr.save
    connected "$(xl domid $G)" || return 1
    grep -E "rewritten in place|connected again" /tmp/vdevice-daemon.log | tail -n 4
}

after_restore() {
    dom_run $G "dmesg | grep -E 'restored as domain|after the suspend|wait for dom0' | tail -n 6
dmesg | grep -q 'restored as domain $(xl domid $G) (was $(cat /tmp/old-id))' || exit 1
i=0
until [ \"\$(cat /sys/class/net/xsn0/carrier 2>/dev/null)\" = 1 ]; do
    i=\$((i + 1)); [ \$i -gt 150 ] && { echo 'xsn0 has no carrier'; exit 1; }
    sleep 0.2
done
# The address from before the save, no new lease.
ip -4 addr show xsn0 | grep -q 'inet $(addr $G)/' || { ip -4 addr show xsn0; exit 1; }
grep /dev/xsba /proc/mounts || exit 1"
}

fsck_clean() {
    dom_run $G 'cd / && umount /mnt/d || exit 1
e2fsck -f -n /dev/xsba; rc=$?; echo "e2fsck exit status $rc"; [ $rc = 0 ] || exit 1
mount /dev/xsba /mnt/d && cd /mnt/d && sha256sum -c /tmp/written.sums > /dev/null || exit 1
echo "$(wc -l < /tmp/written.sums) checksums match after remount"'
}

clean_log() {
    dom_run $G 'if dmesg | grep -E "Oops|WARNING|BUG|blocked for more than|Call Trace"; then exit 1; fi
echo "no Oops, WARNING, BUG or hung task"'
}

step setup-dom0 60 setup_dom0
step start-netback 120 start_backend netback-uk
step start-blkback 120 start_backend blkback-uk
step start-daemon 60 start_daemon
step start-guest 240 start_guest
step guest-modules 60 guest_modules
step create-devices 180 create_devices
step lan-dom0 120 lan_dom0
step lan-guest 120 lan_guest $G
step pings 120 pings
step mkfs-mount 180 mkfs_mount
step write-before 120 write_files before
step checkpoint 240 checkpoint
step pings-after-checkpoint 120 pings
step write-after-checkpoint 120 write_files ckpt
step start-writer 60 start_writer
step save 300 save
step restore 300 restore
step after-restore 120 after_restore
step pings-after-restore 120 pings
step writer-done 180 writer_done
step files-after-restore 120 check_files
step write-after-restore 120 write_files restored
step fsck-clean 180 fsck_clean
step clean-log 60 clean_log
