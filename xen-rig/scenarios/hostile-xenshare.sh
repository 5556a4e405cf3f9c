# hostile-xenshare: a /dev/xenshare user against an owner that lies
# (issue 18). The owner a /dev/xenshare user talks to is another domU's
# process over its own /dev/xenshare (xenshare-xfer owner, scenario
# xenshare-dev); here it is the test-only xenshare-liar (share-linux
# feature `hostile`, never shipped: `dist` refuses its marker), which
# offers a share in xenshare-xfer's layout and lies as --mode says. The
# user is the ordinary `xenshare-xfer member`, attached through MAP
# (share-hal parses the descriptor) or joined through JOIN (xenshare.ko
# parses and maps it). Each lie must end the member with a clean error,
# and, where it had attached, leave the share; the liar then revokes every
# grant it made (one the member still mapped would fail the step).
#
# Lies in the descriptor (the attach or JOIN fails): numpages-huge,
# numpages-short, member, refs-bogus, refs-foreign, refs-readonly,
# share-ref, desc-zero, port: owner PV, member PVH (JOIN and attach),
# then owner PVH, member PV (attach: Xen writes the process's PTEs, the
# mapping is made at mmap). Lies once attached (PVH member, JOIN and
# attach): lane-prod, msg-len, bulk-len, flood (triggers only, for 4 s),
# silent. The member gives up after 2 s without progress (the flood
# must have reached it: its port's interrupts are counted while it runs).
#
# Then an honest owner (xenshare-xfer owner) serves the same member
# again (1 MiB each way, checksums compared); no hung task; none of
# either domU's grants in use and nothing mapped by either (Xen's grant
# dump, debug key g), before and after `rmmod xenshare`; no Oops, WARNING
# or BUG in any kernel log.
PV=xsh-pv
PVH=xsh-pvh
STOP=/tmp/xenshare-liar.stop

collect() {
    for _d in $PV $PVH; do
        xl domid "$_d" >/dev/null 2>&1 || continue
        bounded 30 dom_run "$_d" 'dmesg; for f in /tmp/liar.log /tmp/member.log /tmp/xfer-*.log; do echo "== $f"; cat "$f"; done' \
            > "/tmp/xsh-$_d.log" 2>/dev/null
        rig_send_file "hostile-xenshare-$_d.log" "/tmp/xsh-$_d.log"
    done
}
trap collect EXIT

load() {
    dom_run "$1" 'modprobe xenshare && [ -c /dev/xenshare ] && dmesg | grep "xenshare:" | tail -n 1'
}

# liar_start OWNER MEMBER MODE: the liar in OWNER until it prints its
# share ref (to /tmp/ref).
liar_start() {
    _o=$(xl domid "$1") || return 1
    _m=$(xl domid "$2") || return 1
    dom_run "$1" "rm -f $STOP /tmp/liar.log
setsid xenshare-liar --domid $_o --peer $_m --mode $3 --flood 4 > /tmp/liar.log 2>&1 < /dev/null &
i=0
until grep -q '^SHARE_REF ' /tmp/liar.log; do
    i=\$((i + 1))
    if [ \$i -gt 150 ] || ! pidof xenshare-liar > /dev/null; then
        echo 'the liar offered no share:'; cat /tmp/liar.log; exit 1
    fi
    sleep 0.1
done
cat /tmp/liar.log" > /tmp/liar.out || { cat /tmp/liar.out; return 1; }
    grep -v "^SHARE_REF" /tmp/liar.out
    awk -v o="$_o" '$1 == "SHARE_REF" && $2 == o { print $3 }' /tmp/liar.out > /tmp/ref
    [ -s /tmp/ref ]
}

# liar_stop OWNER: the liar revokes every grant it made and ends.
liar_stop() {
    dom_run "$1" "touch $STOP
i=0
while pidof xenshare-liar > /dev/null; do
    i=\$((i + 1)); [ \$i -gt 200 ] && { echo 'the liar still runs'; cat /tmp/liar.log; exit 1; }
    sleep 0.1
done
grep '^liar: flood\|every grant\|xenshare-liar:' /tmp/liar.log
grep -q 'liar: every grant revoked' /tmp/liar.log"
}

# try OWNER MEMBER MODE PATH WANT: the member (PATH attach or join)
# against the liar in MODE must exit 1 with an error line matching WANT
# (an extended regex), and leave the share if it had joined it.
try() {
    liar_start "$1" "$2" "$3" || return 1
    _o=$(xl domid "$1")
    _m=$(xl domid "$2")
    _j=
    [ "$4" = join ] && _j=--join
    dom_run "$2" "echo 'hostile-xenshare: $3 $4' > /dev/kmsg
irqs() {
    awk '/xenshare-dev/ { for (i = 2; i <= NF && \$i ~ /^[0-9]+\$/; i++) n += \$i } END { print n + 0 }' /proc/interrupts
}
# The member's port is listed only while it is bound: the most seen.
i0=\$(irqs)
xenshare-xfer member --domid $_m --owner $_o --ref $(cat /tmp/ref) --mib 1 --stall 2 $_j > /tmp/member.log 2>&1 &
pid=\$!
n=\$i0
while kill -0 \$pid 2> /dev/null; do
    c=\$(irqs); [ \$c -gt \$n ] && n=\$c
    sleep 0.1
done
wait \$pid
rc=\$?
grep -v '^lane \|^bulk ' /tmp/member.log
echo \"member ($4): exit \$rc, \$((n - i0)) interrupt(s) on its xenshare-dev port while it ran\"
dmesg | sed -n '/hostile-xenshare: $3 $4\$/,\$p' | grep 'xenshare' | grep -v 'hostile-xenshare:'
[ \$rc = 1 ] || exit 1
[ $3 != flood ] || [ \$((n - i0)) -gt 0 ] || { echo 'the flood never reached the member'; exit 1; }
grep -Eq 'xenshare-xfer: ($5)' /tmp/member.log || { echo 'not the error wanted: $5'; exit 1; }
if grep -q '^member: joined' /tmp/member.log; then
    grep -q '^member: left the share' /tmp/member.log || { echo 'joined and did not leave'; exit 1; }
fi" > /tmp/try.out
    _xrc=$?
    cat /tmp/try.out
    liar_stop "$1" || return 1
    [ "$_xrc" -eq 0 ]
}

# in_descriptor OWNER MEMBER MODE WANT_JOIN WANT_ATTACH: a descriptor lie;
# JOIN is tried where the member is PVH (WANT_JOIN "-" skips it).
in_descriptor() {
    if [ "$4" != - ]; then
        try "$1" "$2" "$3" join "$4" || return 1
    fi
    try "$1" "$2" "$3" attach "$5"
}

# attached MODE WANT: a lie once the PVH member attached, both ways.
attached() {
    try $PV $PVH "$1" join "$2" && try $PV $PVH "$1" attach "$2"
}

NOGRANT='domain [0-9]+ has not granted reference'
PROTO='peer broke the protocol'
EINVAL='xenshare: join failed: Invalid argument'
EIO='xenshare: join failed: Input/output error'

# Descriptor lies from the PV owner to the PVH member (JOIN and attach),
# then from the PVH owner to the PV member (attach).
descriptor_lies() {
    _own=$1 _mem=$2 _join=$3
    _w() { [ "$_join" = yes ] && echo "$1" || echo -; }
    in_descriptor $_own $_mem numpages-huge "$(_w "$EINVAL")" "$PROTO" &&
        in_descriptor $_own $_mem numpages-short "$(_w "$EINVAL")" 'share has 65 pages, not 66' &&
        in_descriptor $_own $_mem member "$(_w "$NOGRANT")" "$PROTO" &&
        in_descriptor $_own $_mem refs-bogus "$(_w "$NOGRANT")" "$NOGRANT" &&
        in_descriptor $_own $_mem refs-foreign "$(_w "$NOGRANT|$EIO")" "$NOGRANT" &&
        in_descriptor $_own $_mem refs-readonly "$(_w "$NOGRANT|$EIO")" "$NOGRANT" &&
        in_descriptor $_own $_mem share-ref "$(_w "$NOGRANT")" "$NOGRANT" &&
        in_descriptor $_own $_mem desc-zero "$(_w "$EINVAL")" "$PROTO" &&
        in_descriptor $_own $_mem port "$(_w "$EIO")" 'xenshare: bind interdomain failed: Invalid argument'
}

# served_again PATH: the honest owner (xenshare-xfer owner in the PV
# domU) and the same PVH member move 1 MiB each way; what each sent is
# what the other got.
served_again() {
    _o=$(xl domid $PV)
    _m=$(xl domid $PVH)
    _j=
    [ "$1" = join ] && _j=--join
    dom_run $PV "rm -f /tmp/xfer-owner.log
setsid xenshare-xfer owner --domid $_o --peer $_m --mib 1 > /tmp/xfer-owner.log 2>&1 < /dev/null &
i=0
until grep -q '^SHARE_REF ' /tmp/xfer-owner.log; do
    i=\$((i + 1)); [ \$i -gt 150 ] && { cat /tmp/xfer-owner.log; exit 1; }
    sleep 0.1
done
cat /tmp/xfer-owner.log" > /tmp/owner.out || { cat /tmp/owner.out; return 1; }
    _r=$(awk -v o="$_o" '$1 == "SHARE_REF" && $2 == o { print $3 }' /tmp/owner.out)
    dom_run $PVH "xenshare-xfer member --domid $_m --owner $_o --ref $_r --mib 1 $_j > /tmp/xfer-member.log 2>&1
rc=\$?; cat /tmp/xfer-member.log; exit \$rc" > /tmp/member.out || { cat /tmp/member.out; return 1; }
    dom_run $PV "i=0
while pidof xenshare-xfer > /dev/null; do
    i=\$((i + 1)); [ \$i -gt 300 ] && { echo 'owner still runs'; exit 1; }
    sleep 0.1
done
cat /tmp/xfer-owner.log
grep -q 'share destroyed, every grant revoked' /tmp/xfer-owner.log" > /tmp/owner.out || { cat /tmp/owner.out; return 1; }
    cat /tmp/member.out
    _bad=0
    for _k in lane bulk; do
        _os=$(sed -n "s/^$_k sent //p" /tmp/owner.out)
        _mr=$(sed -n "s/^$_k received //p" /tmp/member.out)
        _ms=$(sed -n "s/^$_k sent //p" /tmp/member.out)
        _or=$(sed -n "s/^$_k received //p" /tmp/owner.out)
        echo "$_k owner->member: sent $_os, received $_mr; member->owner: sent $_ms, received $_or"
        [ -n "$_os" ] && [ "$_os" = "$_mr" ] && [ -n "$_ms" ] && [ "$_ms" = "$_or" ] || _bad=1
        [ "${_os%% *}" = 1048576 ] || _bad=1
    done
    [ "$_bad" -eq 0 ]
}

unload() {
    dom_run "$1" 'rmmod xenshare && [ ! -e /dev/xenshare ] && dmesg | tail -n 2'
}

step create-pv 120 dom_create /rig/domu/linux-pv.cfg $PV
step create-pvh 120 dom_create /rig/domu/linux-pvh.cfg $PVH
step boot-pv 180 dom_wait $PV @@READY
step boot-pvh 180 dom_wait $PVH @@READY
step load-pv 60 load $PV
step load-pvh 60 load $PVH
step descriptor-to-pvh 300 descriptor_lies $PV $PVH yes
step descriptor-to-pv 300 descriptor_lies $PVH $PV no
step grants-descriptor 60 no_grants $PV $PVH
step lane-prod 60 attached lane-prod "$PROTO"
step msg-len 60 attached msg-len 'bad data message \(seq 0, len 65535\)'
step bulk-len 60 attached bulk-len "bad bulk message \(seq 0, len $((16 * 4096 + 1))\)"
step flood 60 attached flood 'member: no progress'
step silent 60 attached silent 'member: no progress'
step grants-attached 60 no_grants $PV $PVH
step served-again-join 120 served_again join
step served-again-attach 120 served_again attach
step hung-task 60 no_hung_task $PV $PVH
step grants-closed 60 no_grants $PV $PVH
step unload-pv 60 unload $PV
step unload-pvh 60 unload $PVH
step grants-unloaded 60 no_grants $PV $PVH
step clean-logs 60 clean_logs $PV $PVH
