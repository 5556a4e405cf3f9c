# xenshare-dev: /dev/xenshare (xenshare.ko) carries data between a PV and
# a PVH Linux domU, with share-hal's ordinary API (example xenshare-xfer
# over share_linux::xenshare::XenShareDev).
#
# Each run: the owner domU creates a share of 66 pages for the other
# (Share over the device: its own pages, granted one by one), the member
# attaches (Attached: the descriptor and pages mapped through the device,
# PTEs written by Xen in the PV domU, ballooned pages in the PVH one) or
# joins through the device's JOIN call, and each side sends MIB MiB of
# random bytes through a lane and MIB MiB through bulk chunks the member
# grant-copies (sg_xfer) both ways. Both print checksums of what they sent
# and received; the scenario compares them across the domains. Runs: PV
# owner / PVH member, PVH owner / PV member, PV owner / PVH member joining.
# In each domU the device refuses pages, grants, ports and mappings that
# are not the caller's and copy segments out of bounds (example mode
# `refusals`).
# Then: no grant of either domU in use and none mapped by either (Xen's
# grant dump, debug key g), both before and after `rmmod xenshare`. The
# owner's process is killed under a member that maps its pages: its grants
# end once the member leaves. Last,
# an owner that vanishes: the PVH owner's domain is destroyed under a PV
# member, which gives up, leaves, and maps nothing afterwards. No Oops,
# WARNING or BUG in any kernel log.
PV=xsd-pv
PVH=xsd-pvh
MIB=8

collect() {
    for _d in $PV $PVH; do
        xl domid "$_d" >/dev/null 2>&1 || continue
        bounded 30 dom_run "$_d" 'dmesg; for f in /tmp/xfer-*.log; do echo "== $f"; cat "$f"; done' \
            > "/tmp/xsd-$_d.log" 2>/dev/null
        rig_send_file "xenshare-dev-$_d.log" "/tmp/xsd-$_d.log"
    done
}
trap collect EXIT

# start_owner DOMU PEER LOG MIB: the owner in the background, until it
# prints its share_ref; the ref goes to /tmp/ref.
start_owner() {
    _me=$(xl domid "$1") || return 1
    _peer=$(xl domid "$2") || return 1
    dom_run "$1" "rm -f $3
setsid xenshare-xfer owner --domid $_me --peer $_peer --mib $4 > $3 2>&1 < /dev/null &
i=0
until grep -q '^SHARE_REF ' $3; do
    i=\$((i + 1))
    if [ \$i -gt 300 ] || ! pidof xenshare-xfer > /dev/null; then
        echo 'the owner did not create its share:'; cat $3; exit 1
    fi
    sleep 0.2
done
cat $3" > /tmp/owner.out || { cat /tmp/owner.out; return 1; }
    cat /tmp/owner.out
    _r=$(awk -v o="$_me" '$1 == "SHARE_REF" && $2 == o { print $3 }' /tmp/owner.out)
    [ -n "$_r" ] || { echo "no share_ref for domain $_me"; return 1; }
    echo "$_r" > /tmp/ref
}

# member DOMU OWNER LOG [ARGS]: runs the member to its end.
member() {
    _me=$(xl domid "$1") || return 1
    _own=$(xl domid "$2") || return 1
    dom_run "$1" "xenshare-xfer member --domid $_me --owner $_own --ref $(cat /tmp/ref) --mib $MIB $4 > $3 2>&1
rc=\$?; cat $3; exit \$rc"
}

# wait_owner DOMU LOG: the owner ends (its share destroyed) and succeeded.
wait_owner() {
    dom_run "$1" "i=0
while pidof xenshare-xfer > /dev/null; do
    i=\$((i + 1)); [ \$i -gt 600 ] && { echo 'owner still runs'; cat $2; exit 1; }
    sleep 0.2
done
cat $2
grep -q 'share destroyed, every grant revoked' $2"
}

# sums OWNER_OUT MEMBER_OUT: what each side sent is what the other got,
# MIB MiB of each kind, each way.
sums() {
    _want="$((MIB * 1048576))"
    _bad=0
    for _k in lane bulk; do
        _os=$(sed -n "s/^$_k sent //p" "$1")
        _or=$(sed -n "s/^$_k received //p" "$1")
        _ms=$(sed -n "s/^$_k sent //p" "$2")
        _mr=$(sed -n "s/^$_k received //p" "$2")
        echo "$_k owner->member: sent $_os, received $_mr"
        echo "$_k member->owner: sent $_ms, received $_or"
        [ -n "$_os" ] && [ "$_os" = "$_mr" ] || _bad=1
        [ -n "$_ms" ] && [ "$_ms" = "$_or" ] || _bad=1
        for _v in "$_os" "$_ms"; do
            [ "${_v%% *}" = "$_want" ] || { echo "$_k: ${_v%% *} bytes, not $_want"; _bad=1; }
        done
    done
    [ "$_bad" -eq 0 ]
}

# xfer OWNER MEMBER NAME [MEMBER_ARGS]: one run, checked.
xfer() {
    start_owner "$1" "$2" "/tmp/xfer-$3-owner.log" "$MIB" || return 1
    member "$2" "$1" "/tmp/xfer-$3-member.log" "$4" > "/tmp/$3-member.out"
    _mrc=$?
    cat "/tmp/$3-member.out"
    wait_owner "$1" "/tmp/xfer-$3-owner.log" > "/tmp/$3-owner.out"
    _orc=$?
    cat "/tmp/$3-owner.out"
    [ "$_mrc" -eq 0 ] && [ "$_orc" -eq 0 ] || return 1
    sums "/tmp/$3-owner.out" "/tmp/$3-member.out"
}


# refusals NAME PEER: the device refuses what is not the caller's, with
# the documented errors (example mode `refusals`).
refusals() {
    dom_expect "$1" "refusals: 8 checks passed" \
        "xenshare-xfer refusals --domid $(xl domid "$1") --peer $(xl domid "$2")"
}

unload() {
    dom_run "$1" 'rmmod xenshare || exit 1
[ ! -e /dev/xenshare ] || { echo "/dev/xenshare is still there"; exit 1; }
dmesg | tail -n 3'
}

# owner_killed: the PV owner's process is killed (SIGKILL) under a PVH
# member that maps its pages. Closing the owner's file ends grants the
# member still maps (the kernel defers them); the member gives up after
# 15 s, leaves, and then nothing of either domain stays in use.
owner_killed() {
    start_owner $PV $PVH /tmp/xfer-killed-owner.log 512 || return 1
    _own=$(xl domid $PV)
    _me=$(xl domid $PVH)
    dom_run $PVH "rm -f /tmp/xfer-killed-member.log
setsid xenshare-xfer member --domid $_me --owner $_own --ref $(cat /tmp/ref) --mib 512 --stall 15 \
    > /tmp/xfer-killed-member.log 2>&1 < /dev/null &
i=0
until grep -q 'joined' /tmp/xfer-killed-member.log; do
    i=\$((i + 1)); [ \$i -gt 300 ] && { cat /tmp/xfer-killed-member.log; exit 1; }
    sleep 0.2
done
sleep 3
cat /tmp/xfer-killed-member.log" || return 1
    grants || return 1
    _m=$(awk -v o="$_own" -v m="$_me" '$1 == o && $2 == m' /tmp/grants | wc -l)
    echo "$PVH maps $_m of $PV's grants while the transfer runs"
    [ "$_m" -eq 66 ] || return 1
    dom_run $PV 'kill -KILL $(pidof xenshare-xfer) || exit 1
i=0
while pidof xenshare-xfer > /dev/null; do
    i=$((i + 1)); [ $i -gt 100 ] && { echo "owner still runs"; exit 1; }
    sleep 0.2
done
echo "owner process killed"' || return 1
    dom_run $PVH "i=0
while pidof xenshare-xfer > /dev/null; do
    i=\$((i + 1)); [ \$i -gt 300 ] && { echo 'member still runs'; exit 1; }
    sleep 0.2
done
cat /tmp/xfer-killed-member.log
grep -q 'no progress' /tmp/xfer-killed-member.log && grep -q 'left the share' /tmp/xfer-killed-member.log" || return 1
    no_grants $PV $PVH
}

# owner_vanishes: a PVH owner moving 512 MiB is destroyed under a PV
# member; the member gives up after 15 s without progress, leaves the
# share, and no trace of it stays in Xen's books.
owner_vanishes() {
    start_owner $PVH $PV /tmp/xfer-vanish-owner.log 512 || return 1
    _own=$(xl domid $PVH)
    _me=$(xl domid $PV)
    dom_run $PV "rm -f /tmp/xfer-vanish-member.log
setsid xenshare-xfer member --domid $_me --owner $_own --ref $(cat /tmp/ref) --mib 512 --stall 15 \
    > /tmp/xfer-vanish-member.log 2>&1 < /dev/null &
i=0
until grep -q 'joined' /tmp/xfer-vanish-member.log; do
    i=\$((i + 1)); [ \$i -gt 300 ] && { cat /tmp/xfer-vanish-member.log; exit 1; }
    sleep 0.2
done
sleep 3
cat /tmp/xfer-vanish-member.log" || return 1
    # While it runs, the member maps the share's 66 pages (the descriptor
    # was unmapped after its copy): the dump sees them, so it would see
    # a leftover too.
    grants || return 1
    _m=$(awk -v o="$_own" -v m="$_me" '$1 == o && $2 == m' /tmp/grants | wc -l)
    echo "$PV maps $_m of $PVH's grants while the transfer runs"
    [ "$_m" -eq 66 ] || return 1
    xl destroy $PVH || return 1
    echo "destroyed $PVH (domain $_own) under the member"
    dom_run $PV "i=0
while pidof xenshare-xfer > /dev/null; do
    i=\$((i + 1)); [ \$i -gt 300 ] && { echo 'member still runs'; exit 1; }
    sleep 0.2
done
cat /tmp/xfer-vanish-member.log
grep -q 'no progress' /tmp/xfer-vanish-member.log && grep -q 'left the share' /tmp/xfer-vanish-member.log" || return 1
    # The dead owner is gone for good once nothing maps its pages.
    _i=0
    while xl list | awk '{ print $2 }' | grep -qx "$_own"; do
        _i=$((_i + 1)); [ $_i -gt 50 ] && { echo "domain $_own lingers:"; xl list; return 1; }
        sleep 0.2
    done
    xl list
    no_grants $PV
}

step create-pv 120 dom_create /rig/domu/linux-pv.cfg $PV
step create-pvh 120 dom_create /rig/domu/linux-pvh.cfg $PVH
step boot-pv 180 dom_wait $PV @@READY
step boot-pvh 180 dom_wait $PVH @@READY
step load-pv 60 load_xenshare_dev $PV
step load-pvh 60 load_xenshare_dev $PVH
step xfer-pv-owner 300 xfer $PV $PVH pv-owner
step xfer-pvh-owner 300 xfer $PVH $PV pvh-owner
step xfer-join 300 xfer $PV $PVH join --join
step refusals-pv 60 refusals $PV $PVH
step refusals-pvh 60 refusals $PVH $PV
step grants-closed 60 no_grants $PV $PVH
step unload-pv 60 unload $PV
step unload-pvh 60 unload $PVH
step grants-unloaded 60 no_grants $PV $PVH
step clean-logs-1 60 clean_logs $PV $PVH
step reload-pv 60 load_xenshare_dev $PV
step reload-pvh 60 load_xenshare_dev $PVH
step owner-killed 240 owner_killed
step owner-vanishes 240 owner_vanishes
step unload-after-vanish 60 unload $PV
step clean-logs-2 60 clean_logs $PV
