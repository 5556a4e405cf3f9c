# hostile-net: xensnet against a switch that lies (issue 18). The switch
# is the test-only build of netback-uk (feature `hostile`, image
# /images/netback-uk-hostile, never shipped: `cargo xtask images` and
# `dist` refuse it); its command line picks the lies (netback-uk/src/
# hostile.rs). A PV domU runs xenshare.ko and xensnet.ko and pings the
# switch's own address (10.77.0.1) with 1000-byte echoes from a static
# address. One hostile switch runs every lie: it boots with the list of
# them (`hostile=len-zero,len-slot,...:2`) and gives each port it makes
# the next one. For each lie the domU gets a port (`vdevice create net`;
# the switch's log must name that lie for it): the first two echo
# replies come honestly (xsn0 works with this switch), the lie starts
# with the third, and the guest must answer as docs/design.md says:
#   len-zero len-slot csum-start csum-offset gso-type gso-zero scribble
#            the frame is refused by the slot rules: rx_dropped counts it
#            and the log says "dropped a frame the switch sent against
#            the rules (-22)";
#   len-frame chain
#            a frame longer than the MTU / a MORE chain past the longest
#            GSO frame: rx_length_errors counts it ("(-90)");
#   gso-udp  UDP GSO of 1-byte segments (more than 64): dropped, counted;
#   gso-tcp  TCP GSO of 1-byte segments on a 60 000-byte frame (~7500
#            segments of 8 bytes, more than 256): dropped, counted (before
#            xensnet bounded TCP segments it was taken, and a guest that
#            forwarded it would have made ~7500 skbs);
#   index    the rx lane's prod out of bounds: the device breaks
#            ("the rx lane's prod is out of bounds"), carrier off;
#   cons     the tx lane's cons out of bounds: the device breaks at its
#            next send ("the tx lane's cons is out of bounds");
#   flood    64 extra triggers per trigger: the echoes still come back.
# After each, the port is removed (xsn0 goes). Last, the hostile switch
# is destroyed and the shipped netback-uk serves the domU again (echoes
# come back, nothing dropped); no hung task; `rmmod xensnet xenshare`
# leaves none of the domU's grants in use and nothing mapped by it in
# Xen's grant dump; no Oops, WARNING or BUG in any kernel log.
# (Before, each lie booted a switch of its own: 290 s for the scenario.)
U=hn-u
ME=10.77.0.50
# The lies, in the order of the steps below (each port takes the next).
LIES="len-zero len-slot len-frame chain csum-start csum-offset gso-type gso-zero gso-udp gso-tcp scribble index cons flood"

trap 'collect_dmesg $U' EXIT

# switch MODES: a fresh netback-uk (lib.sh's fresh_backend): the shipped
# image for "honest", the hostile build with hostile=MODES otherwise.
switch() {
    fresh_backend netback-uk /xl-configs/netback-uk.cfg "$1"
}

# port_up: a port of the switch for the domU; xsn0 comes, takes the static
# address, gets carrier, and two echoes come back (honest frames).
port_up() {
    vdevice --timeout 60 create net --backend "$(nb)" "$(xl domid $U)" || return 1
    dom_run $U "
i=0
until [ -e /sys/class/net/xsn0 ]; do
    i=\$((i + 1)); [ \$i -gt 150 ] && { echo 'no xsn0'; dmesg | tail -n 20; exit 1; }
    sleep 0.2
done
ip addr add $ME/24 dev xsn0 && ip link set xsn0 up || exit 1
i=0
until [ \"\$(cat /sys/class/net/xsn0/carrier 2>/dev/null)\" = 1 ]; do
    i=\$((i + 1)); [ \$i -gt 150 ] && { echo 'xsn0 has no carrier'; exit 1; }
    sleep 0.2
done
ping -c 2 -i 0.2 -s 1000 -W 10 $MGMT > /tmp/ping.out; r=\$?
grep -E 'bytes from|loss' /tmp/ping.out
exit \$r"
}

# port_down: the port removed while its switch runs; xsn0 goes.
port_down() {
    vdevice --timeout 60 remove net --backend "$(nb)" "$(xl domid $U)" || return 1
    dom_run $U '
i=0
while [ -e /sys/class/net/xsn0 ]; do
    i=$((i + 1)); [ $i -gt 150 ] && { echo "xsn0 is still there"; exit 1; }
    sleep 0.2
done'
}

# lie MODE WANT: the next port of the switch lies as MODE after two
# honest echoes (its log must say so: the ports and the list stay in
# step); two more echoes (exactly two: the lie counts frames), then what
# xsn0 counted and logged since, checked against WANT:
#   refused  rx_dropped > 0, no length error, "against the rules (-22)"
#   long     rx_length_errors > 0, "against the rules (-90)"
#   dropped  rx_dropped > 0, no length error
#   rx-index "the rx lane's prod is out of bounds", carrier 0
#   tx-index "the tx lane's cons is out of bounds", carrier 0
#   works    both echoes came back, nothing dropped
lie() {
    _n=$(grep -ac ": hostile mode " "$(dom_log netback-uk)")
    port_up || return 1
    # The port's line in the switch's log names its lie (Debug name).
    _want=$(echo "$1" | awk -F- '{ for (i = 1; i <= NF; i++) printf "%s%s", toupper(substr($i, 1, 1)), substr($i, 2) }')
    _i=0
    until _l=$(grep -a ": hostile mode " "$(dom_log netback-uk)" | tr -d '\r' | sed -n "$((_n + 1))p") &&
        [ -n "$_l" ]; do
        _i=$((_i + 1)); [ $_i -gt 25 ] && { echo "the switch logged no mode for the port"; return 1; }
        sleep 0.2
    done
    echo "switch: $_l"
    case "$_l" in
    *"hostile mode $_want") ;;
    *) echo "the switch's port does not lie as $1 ($_want)"; return 1 ;;
    esac
    dom_run $U "
echo 'hostile-net: mode $1' > /dev/kmsg
s=/sys/class/net/xsn0/statistics
rx0=\$(cat \$s/rx_packets)
ping -c 2 -i 0.2 -s 1000 -W 1 $MGMT > /tmp/ping.out; pr=\$?
grep -E 'bytes from|loss' /tmp/ping.out
sleep 0.2
rx=\$((\$(cat \$s/rx_packets) - rx0)); drop=\$(cat \$s/rx_dropped); long=\$(cat \$s/rx_length_errors)
carrier=\$(cat /sys/class/net/xsn0/carrier)
echo \"ping status \$pr; since the lie: rx_packets +\$rx; rx_dropped \$drop, rx_length_errors \$long; carrier \$carrier\"
dmesg | sed -n '/hostile-net: mode $1\$/,\$p' | grep xsn0 > /tmp/log
cat /tmp/log
case $2 in
refused) [ \$drop -gt 0 ] && [ \$long = 0 ] && grep -q 'against the rules (-22)' /tmp/log ;;
long) [ \$long -gt 0 ] && grep -q 'against the rules (-90)' /tmp/log ;;
dropped) [ \$drop -gt 0 ] && [ \$long = 0 ] ;;
rx-index) grep -q \"the rx lane's prod is out of bounds\" /tmp/log && [ \$carrier = 0 ] ;;
tx-index) grep -q \"the tx lane's cons is out of bounds\" /tmp/log && [ \$carrier = 0 ] ;;
works) [ \$pr = 0 ] && [ \$drop = 0 ] && grep -q '2 packets received' /tmp/ping.out ;;
*) echo 'no such answer: $2'; exit 1 ;;
esac" || return 1
    if [ "$2" = works ]; then
        dom_run $U 'grep xsn0 /proc/interrupts'
    fi
    port_down
}

# The shipped switch serves the domU again: echoes come back, nothing
# dropped.
served_again() {
    switch honest || return 1
    port_up || return 1
    dom_run $U "
ping -c 5 -s 1000 -W 10 $MGMT > /tmp/ping.out; r=\$?
grep -E 'loss' /tmp/ping.out
s=/sys/class/net/xsn0/statistics
echo \"rx_packets \$(cat \$s/rx_packets), rx_dropped \$(cat \$s/rx_dropped)\"
[ \$r = 0 ] && [ \$(cat \$s/rx_dropped) = 0 ]"
}

unload() {
    dom_run $U '
rmmod xensnet xenshare || exit 1
[ ! -e /sys/class/net/xsn0 ] || { echo "xsn0 is still there"; exit 1; }
[ ! -e /sys/module/xenshare ] || { echo "xenshare is still loaded"; exit 1; }
dmesg | tail -n 4'
}

step domu-create 120 dom_create /rig/domu/linux-pv.cfg $U
step domu-boot 180 dom_wait $U @@READY
step modules 90 load_xensnet $U
step published 60 published $U
step switch 120 switch "$(echo $LIES | tr ' ' ',')":2
step len-zero 120 lie len-zero refused
step len-slot 120 lie len-slot refused
step len-frame 120 lie len-frame long
step chain 120 lie chain long
step csum-start 120 lie csum-start refused
step csum-offset 120 lie csum-offset refused
step gso-type 120 lie gso-type refused
step gso-zero 120 lie gso-zero refused
step gso-udp 120 lie gso-udp dropped
step gso-tcp 120 lie gso-tcp dropped
step scribble 120 lie scribble refused
step index 120 lie index rx-index
step cons 120 lie cons tx-index
step flood 120 lie flood works
step served-again 120 served_again
step hung-task 60 no_hung_task $U
step unload 60 unload
step grants 60 no_grants $U
step clean-logs 60 clean_logs $U
