# hostile-blk: xensblk against a disk server that lies (issue 18). The
# server is the test-only build of blkback-uk (feature `hostile`, image
# /images/blkback-uk-hostile, never shipped: `cargo xtask images` and
# `dist` refuse it), serving a RAM disk from a boot module; its command
# line picks the lie. A PV domU runs xenshare.ko and xensblk.ko. First an
# honest server: /dev/xsba reads back the RAM disk's bytes. Then, each on
# a fresh server the entry is reconnected to (`vdevice reconnect disk`):
#   flood    honest answers and 64 extra triggers per round (one per
#            trigger of ours, one a second): reads still right;
#   ids      responses naming requests not in flight,
#   status   statuses no protocol defines,
#   dup      every response of a batch naming its first request,
#   scribble garbage in every response slot,
#   index    the response lane's prod out of bounds (from its first
#            answer on: earlier, the disk would refuse to attach),
#   pin      honest answers, but the server maps a request's data page
#            before answering and keeps it mapped (until it is destroyed),
#            each read fails, the disk says "broke the protocol" (pin:
#            "grant still in use after the response");
#   silent   nothing answered: a reader blocks, then an honest server
#            and a reconnect re-issue its requests and it completes.
# Last, an honest server serves the same disk again; `rmmod xensblk
# xenshare` says no grant is live and how many pages the pin server kept
# (gnttab_end_foreign_access freed them once it was destroyed), and Xen's
# dump holds none of the domU's grants; no Oops, WARNING, BUG or hung task
# in any kernel log.
U=hb-u
RAM=/tmp/hostile-ram.img
DEV=/dev/xsba

trap 'collect_dmesg $U' EXIT

make_ram() {
    dd if=/dev/urandom of="$RAM" bs=1M count=4 2>/dev/null || return 1
    md5sum < "$RAM" | cut -d' ' -f1 > /tmp/ram.md5
    cat /tmp/ram.md5
}

# server MODE: a fresh blkback-uk on the RAM disk (lib.sh's
# fresh_backend): the shipped image for "honest", the hostile build with
# hostile=MODE otherwise.
server() {
    fresh_backend blkback-uk /xl-configs/blkback-uk-ram.cfg "$1" "ramdisk=\"$RAM\""
}

connect() {
    vdevice --timeout 60 create disk --backend "$(xl domid blkback-uk)" --disk 0 \
        --features 15 "$(xl domid $U)" || return 1
    dom_run $U "$(xsba_cmds)"
}

reconnect() {
    vdevice --timeout 60 reconnect disk --backend "$(xl domid blkback-uk)" --disk 0 \
        "$(xl domid $U)" || return 1
}

# read_ok: the whole disk read with O_DIRECT (64 KiB requests, indirect)
# is the RAM disk's bytes.
read_ok() {
    dom_run $U "
sum=\$(dd if=$DEV bs=64k iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
echo \"read \$sum, want $(cat /tmp/ram.md5)\"
[ \"\$sum\" = $(cat /tmp/ram.md5) ]"
}

# lie MODE [WHY]: a server lying as MODE; the next read fails and the
# disk reports the protocol error (one more "broke the protocol" line,
# naming WHY if given).
lie() {
    server "$1" || return 1
    _before=$(dom_run $U 'dmesg | grep -c "broke the protocol"')
    reconnect || return 1
    dom_run $U "
if dd if=$DEV of=/dev/null bs=64k count=16 iflag=direct 2>/tmp/dd.err; then
    echo 'a read went through a lying server'; exit 1
fi
echo \"read refused: \$(tail -n 1 /tmp/dd.err)\"
dmesg | grep 'broke the protocol' | tail -n 1
[ \$(dmesg | grep -c 'broke the protocol') -gt $_before ] || exit 1
dmesg | grep 'broke the protocol' | tail -n 1 | grep -q '${2:-broke the protocol}'"
}

flood() {
    server flood || return 1
    reconnect || return 1
    read_ok || return 1
    dom_run $U 'grep -i "xsba\|xenshare" /proc/interrupts | head -n 4'
}

# silent: the reader blocks on a server that answers nothing; an honest
# server and a reconnect re-issue what it waits for.
silent() {
    server silent || return 1
    reconnect || return 1
    dom_run $U "
rm -f /tmp/silent.sum
cat > /tmp/reader.sh <<'EOF2'
dd if=$DEV bs=64k iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1 > /tmp/silent.sum.tmp
mv /tmp/silent.sum.tmp /tmp/silent.sum
EOF2
setsid sh /tmp/reader.sh > /dev/null 2>&1 < /dev/null &
sleep 8
[ ! -e /tmp/silent.sum ] || { echo 'the read finished on a silent server'; exit 1; }
echo 'reader blocked on the silent server'" || return 1
    server honest || return 1
    reconnect || return 1
    dom_run $U "
i=0
until [ -e /tmp/silent.sum ]; do
    i=\$((i + 1)); [ \$i -gt 300 ] && { echo 'the reader is still blocked'; exit 1; }
    sleep 0.2
done
echo \"read \$(cat /tmp/silent.sum), want $(cat /tmp/ram.md5)\"
dmesg | grep 'xsba: reconnected' | tail -n 2
[ \"\$(cat /tmp/silent.sum)\" = $(cat /tmp/ram.md5) ]"
}

# The same disk through an honest server again: read back, written,
# read back.
served_again() {
    server honest || return 1
    reconnect || return 1
    read_ok || return 1
    dom_run $U "
dd if=/dev/urandom of=/tmp/w bs=64k count=8 2>/dev/null || exit 1
dd if=/tmp/w of=$DEV bs=64k oflag=direct conv=fsync 2>/dev/null || exit 1
a=\$(md5sum < /tmp/w | cut -d' ' -f1)
b=\$(dd if=$DEV bs=64k count=8 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
echo \"wrote \$a, read \$b\"
[ \"\$a\" = \"\$b\" ]"
}

unload() {
    dom_run $U "
rmmod xensblk xenshare || exit 1
[ ! -e $DEV ] || exit 1
dmesg | grep 'xsba removed'
dmesg | grep -q 'xsba removed: 0 grant(s) live, [1-9][0-9]* left pinned'"
}

step ram 60 make_ram
step domu-create 120 dom_create /rig/domu/linux-pv.cfg $U
step server-honest 180 server honest
step domu-boot 180 dom_wait $U @@READY
step modules 90 load_xensblk $U
step published 60 published $U
step connect 120 connect
step read-honest 120 read_ok
step flood 240 flood
step ids 180 lie ids
step status 180 lie status
step dup 180 lie dup
step scribble 180 lie scribble
step index 180 lie index:1
step pin 180 lie pin 'grant still in use after the response'
step silent 300 silent
step served-again 240 served_again
step hung-task 60 no_hung_task $U
step unload 120 unload
step grants 60 no_grants $U
step clean-logs 60 clean_logs $U
