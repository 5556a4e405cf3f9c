# Helpers for scenarios (sourced by dom0's init; scenarios call these).
#
#   step NAME TIMEOUT_S CMD [ARG...]
#       Runs CMD (a program, or a function of this file or the scenario) in
#       a subshell, kills it and everything it started after TIMEOUT_S,
#       prints @@STEP NAME BEGIN|OK|FAIL markers and ends the scenario on
#       failure. Variables a step sets do not survive it (a subshell).
#   say TEXT...              a line the step shows its user: a command as a
#                            user types it (`$ ...`, `guest1# ...`) or what it
#                            showed; printed under the step and kept in
#                            summary.txt (`@@SAY`)
#   dom_create CFG NAME      xl create CFG with name=NAME
#   dom_wait NAME TEXT       wait until TEXT appears on NAME's console
#   dom_run NAME CMD...      run CMD (sh -c) in Linux domU NAME via the rig
#                            agent; prints its output, returns its status
#   dom_expect NAME TEXT CMD...   dom_run, and fail unless the output holds TEXT
#   dom_shutdown NAME...     xl shutdown -w each, fail if one stays
#   bounded TIMEOUT_S CMD... CMD in a subshell, killed after TIMEOUT_S (for
#                            exit traps, which must not end a scenario)
#   install_block_script     a busybox /etc/xen/scripts/block (file -> loop)
#
# Console logs of domains are /var/log/xen/console/guest-NAME.log.

RIG_CONSOLE_DIR=/var/log/xen/console

now_ms() {
    read -r _up _ < /proc/uptime
    _frac=${_up#*.}
    echo $(( ${_up%.*} * 1000 + ${_frac#0} * 10 ))
}

# Kills PID and everything below it (stopped first so it cannot fork more).
# It reads every process's stat: about half a second of the nested dom0's
# time per level, so only a timeout's path calls it.
kill_tree() {
    kill -STOP "$1" 2>/dev/null
    # busybox-static has no pgrep: children are found by the ppid in stat.
    for _s in /proc/[0-9]*/stat; do
        read -r _p _ _ _pp _ < "$_s" 2>/dev/null || continue
        [ "$_pp" = "$1" ] && kill_tree "$_p"
    done
    kill -KILL "$1" 2>/dev/null
}

# watchdog PID TIMEOUT_S [TEXT]: in the background ($! is its pid), kills
# PID and everything below it after TIMEOUT_S, printing TEXT first.
# watchdog_off WATCHDOG ends it with one signal: its sleep is its own child,
# killed by its trap, so no /proc walk is needed (kill_tree cost each step
# about a second of the rig's time, minutes over the tier).
watchdog() {
    (
        trap 'kill "$_ws" 2>/dev/null; exit 0' TERM
        sleep "$2" &
        _ws=$!
        wait "$_ws" || exit 0
        [ -n "$3" ] && echo "$3"
        kill_tree "$1"
    ) &
}

watchdog_off() {
    kill -TERM "$1" 2>/dev/null
    wait "$1" 2>/dev/null
}

step() {
    _name=$1 _timeout=$2
    shift 2
    echo "@@STEP $_name BEGIN $_timeout"
    _t0=$(now_ms)
    ( "$@" ) &
    _pid=$!
    watchdog "$_pid" "$_timeout" "@@STEP $_name TIMEOUT"
    _wd=$!
    wait "$_pid"
    _rc=$?
    watchdog_off "$_wd"
    _ms=$(( $(now_ms) - _t0 ))
    if [ "$_rc" -eq 0 ]; then
        echo "@@STEP $_name OK 0 $_ms"
    else
        echo "@@STEP $_name FAIL $_rc $_ms"
        exit "$_rc"
    fi
}

say() {
    # One line: a newline would end the marker.
    printf '@@SAY %s\n' "$(printf '%s' "$*" | tr '\n\r' '  ')"
}

dom_create() {
    # xenconsoled appends to a name's log across domains: start it empty so
    # dom_wait cannot match an earlier domain's lines.
    : > "$(dom_log "$2")"
    xl create "$1" "name=\"$2\""
}

dom_log() {
    echo "$RIG_CONSOLE_DIR/guest-$1.log"
}

dom_wait() {
    while ! grep -qF -- "$2" "$(dom_log "$1")" 2>/dev/null; do
        sleep 0.2
    done
}

# The agent reads "@@RUN <id> <base64 command>" lines from its console and
# answers with "@@O <id> <line>" per output line, then "@@RC <id> <status> END"
# (the END makes a line cut by other output never match).
# Lines are matched by prefix anywhere in a line, so kernel messages
# between them do no harm.
_rig_seq=0
dom_run() {
    _dom=$1
    shift
    _rig_seq=$((_rig_seq + 1))
    _id="$$-$_rig_seq-$(now_ms)"
    _tty=$(dom_console "$_dom") || return 1
    _log=$(dom_log "$_dom")
    _line="@@RUN $_id $(printf '%s' "$*" | base64 -w 0)"
    printf '%s\n' "$_line" > "$_tty"
    _ticks=0
    while ! grep -q "@@RC $_id [0-9][0-9]* END" "$_log"; do
        sleep 0.2
        _ticks=$((_ticks + 1))
        # Not started after 10 s, 20 s, 30 s: a console event may have
        # gone missing (nested TCG). Send it again (the agent runs an id
        # once and answers a repeat, waking both directions); say so, with
        # the console's last lines, so a hang that is not that is visible.
        if [ $((_ticks % 50)) -eq 0 ] && [ "$_ticks" -le 150 ] && ! grep -q "@@GO $_id" "$_log"; then
            echo "dom_run: $_dom has not started command $_id after $((_ticks / 5)) s; sending it again. Its console ends:" >&2
            tail -n 5 "$_log" | tr -d '\r' | sed 's/@@/@ @/g; s/^/    | /' >&2
            printf '%s\n' "$_line" > "$_tty"
        fi
    done
    # The output, then the status; one awk (a fork costs tens of ms here).
    # Guest-written text reaches the serial console: defuse "@@" so it can
    # never read as a marker.
    awk -v o="@@O $_id " -v r="@@RC $_id " '
        index($0, o) {
            s = substr($0, index($0, o) + length(o))
            gsub(/\r/, "", s)
            gsub(/@@/, "@ @", s)
            print s
        }
        index($0, r) {
            s = substr($0, index($0, r) + length(r))
            if (s ~ /^[0-9]+ END/) { rc = s + 0; found = 1; exit }
        }
        END { exit (found ? rc : 1) }' "$_log"
}

# dom_console NAME: the console tty of domU NAME once its agent is ready.
# Cached per name, and the cache is believed only while xenstore still
# gives its domid that name: a rebooted or restored domain has a new domid,
# and its old pty may be another domain's by now. (`xl domid` alone takes
# a quarter of a second of the nested dom0's time, and dom_run is called
# hundreds of times per tier.)
dom_console() {
    if [ -f "/tmp/rig-console.$1" ] && read -r _cd _ct < "/tmp/rig-console.$1" &&
        [ "$(xenstore-read "/local/domain/$_cd/name" 2>/dev/null)" = "$1" ]; then
        echo "$_ct"
        return 0
    fi
    _cd=$(xl domid "$1") || return 1
    _ct=$(xenstore-read "/local/domain/$_cd/console/tty") || return 1
    dom_wait "$1" "@@READY"
    echo "$_cd $_ct" > "/tmp/rig-console.$1"
    echo "$_ct"
}

dom_expect() {
    _dom=$1 _want=$2
    shift 2
    _out=$(dom_run "$_dom" "$@")
    _rc=$?
    printf '%s\n' "$_out"
    if [ "$_rc" -ne 0 ]; then
        echo "dom_expect: '$*' in $_dom exited $_rc"
        return "$_rc"
    fi
    case "$_out" in
        *"$_want"*) return 0 ;;
        *) echo "dom_expect: output of '$*' in $_dom lacks '$_want'"; return 1 ;;
    esac
}

dom_shutdown() {
    for _dom in "$@"; do
        xl shutdown -w "$_dom" || return 1
    done
    for _dom in "$@"; do
        if xl domid "$_dom" >/dev/null 2>&1; then
            echo "dom_shutdown: $_dom is still there"
            return 1
        fi
    done
}

# Prints FILE to the console as "@@F <name>|<line>" lines between
# "@@FILE <name> BEGIN" and "@@FILE <name> END".
rig_send_file() {
    echo "@@FILE $1 BEGIN"
    sed "s/^/@@F $1|/" "$2" 2>/dev/null
    echo "@@FILE $1 END"
}

rig_dump_logs() {
    dmesg > /tmp/dom0-dmesg.log 2>&1
    rig_send_file dom0-dmesg.log /tmp/dom0-dmesg.log
    xl dmesg > /tmp/xen-dmesg.log 2>&1
    rig_send_file xen-dmesg.log /tmp/xen-dmesg.log
    for _f in /var/log/xen/*.log "$RIG_CONSOLE_DIR"/*.log; do
        [ -f "$_f" ] && rig_send_file "${_f##*/}" "$_f"
    done
    xl list > /tmp/xl-list.log 2>&1
    rig_send_file xl-list.log /tmp/xl-list.log
}

# Xen's /etc/xen/scripts/block needs bash, which this busybox dom0 lacks:
# the same job (loop device for a file, physical-device for blkback) in sh.
install_block_script() {
    cat > /etc/xen/scripts/block <<'EOF'
#!/bin/sh
# libxl runs: block add|remove, with XENBUS_PATH = the backend directory.
case "$1" in
add)
    target=$(xenstore-read "$XENBUS_PATH/params") || exit 1
    if [ -b "$target" ]; then
        dev=$target
    else
        dev=$(losetup -f) || exit 1
        losetup "$dev" "$target" || exit 1
    fi
    set -- $(stat -L -c '%t %T' "$dev")
    xenstore-write "$XENBUS_PATH/physical-device" "$1:$2" \
        "$XENBUS_PATH/physical-device-path" "$dev" \
        "$XENBUS_PATH/hotplug-status" connected
    ;;
remove)
    dev=$(xenstore-read "$XENBUS_PATH/physical-device-path" 2>/dev/null)
    case "$dev" in /dev/loop*) losetup -d "$dev" ;; esac
    ;;
esac
exit 0
EOF
    chmod +x /etc/xen/scripts/block
}

# bounded TIMEOUT_S CMD...: CMD in a subshell, killed after TIMEOUT_S; for
# the exit trap, which must not end the scenario the way `step` does.
bounded() {
    _bt=$1
    shift
    ("$@") &
    _bp=$!
    watchdog "$_bp" "$_bt"
    _bw=$!
    wait "$_bp"
    _brc=$?
    watchdog_off "$_bw"
    return "$_brc"
}

# ---- xsn0 on netback-uk's LAN 0: link, lease, pings, TCP ---------------
# (net, net-modules, net-policy, demo, save-restore)

# netback-uk's management address on LAN 0 (docs/protocol.md): the DHCP
# server every lease must come from.
MGMT=10.77.0.1
# dom0's udhcpc hook (its busybox udhcpc needs one; lease_dom0 writes it).
DOM0_HOOK=/tmp/udhcpc-hook

# up_cmds HOOK [MAC]: the commands that bring xsn0 up in a Linux domain
# (xensnet's device or share-member's TAP device): it exists (with MAC, if
# given: the one netback-uk assigned to the port), is up with carrier (the
# switch's link state) and gets a lease by udhcpc with HOOK.
up_cmds() {
    echo "i=0
until [ -e /sys/class/net/xsn0 ]; do
    i=\$((i + 1)); [ \$i -gt 150 ] && { echo 'no xsn0'; ip link; dmesg | tail; exit 1; }
    sleep 0.2
done
dmesg | grep xsn0
ip link set xsn0 up || exit 1"
    [ -z "$2" ] || echo "mac=\$(cat /sys/class/net/xsn0/address)
echo \"xsn0 MAC \$mac (want $2)\"
[ \"\$mac\" = $2 ] || exit 1"
    echo "i=0
until [ \"\$(cat /sys/class/net/xsn0/carrier 2>/dev/null)\" = 1 ]; do
    i=\$((i + 1)); [ \$i -gt 150 ] && { echo 'xsn0 has no carrier'; exit 1; }
    sleep 0.2
done
udhcpc -i xsn0 -n -q -t 5 -T 3 -s $1 || exit 1
ip -4 addr show xsn0"
}

# lease_addr NAME: /tmp/link-NAME (up_cmds' output) shows a lease from
# netback-uk ($MGMT); the leased address goes to /tmp/addr-NAME.
lease_addr() {
    cat "/tmp/link-$1"
    grep -q "lease: xsn0 10.77.0.[0-9]*/24 from server $MGMT" "/tmp/link-$1" || return 1
    sed -n 's|.*inet \(10\.77\.0\.[0-9]*\)/24.*|\1|p' "/tmp/link-$1" | head -n 1 > "/tmp/addr-$1"
    echo "address of $1: $(cat "/tmp/addr-$1")"
    [ -s "/tmp/addr-$1" ]
}

addr() {
    cat "/tmp/addr-$1"
}

# lease NAME [MAC [FIRST [THEN]]]: in domU NAME, the commands FIRST, xsn0
# up (with MAC, if not empty) with a lease from netback-uk, the commands
# THEN (which must succeed); the address in /tmp/addr-NAME.
lease() {
    dom_run "$1" "$3
$(up_cmds /etc/rig/udhcpc "$2")
$4" > "/tmp/link-$1" || { cat "/tmp/link-$1"; return 1; }
    lease_addr "$1"
}

# port_lease NAME: lease, with the MAC netback-uk assigned to NAME's port
# on LAN 0.
port_lease() {
    _mac=$(mac_of "$1") || return 1
    lease "$1" "$_mac"
}

# lan_guest NAME: xensnet loaded in domU NAME, then its lease.
lan_guest() {
    lease "$1" "" "modprobe xensnet || exit 1"
}

# lease_dom0 [MAC]: lease's part in dom0, whose xsn0 is xensnet's.
lease_dom0() {
    cat > $DOM0_HOOK <<'EOF'
#!/bin/sh
case "$1" in
deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
bound | renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface" || exit 1
    echo "lease: $interface $ip/${mask:-24} from server ${serverid:-?}" ;;
esac
exit 0
EOF
    chmod +x $DOM0_HOOK
    sh -c "$(up_cmds $DOM0_HOOK "$1")" > /tmp/link-dom0 2>&1 || { cat /tmp/link-dom0; return 1; }
    lease_addr dom0
}

# lan_dom0: xensnet loaded in dom0, then its lease.
lan_dom0() {
    modprobe xensnet || return 1
    lease_dom0
}

# netback_and_guests A B: the steps that start netback-uk and the Linux PV
# domUs A and B (steps netback-create, create-a, create-b, netback-ready,
# boot-a, boot-b).
netback_and_guests() {
    step netback-create 120 dom_create /xl-configs/netback-uk.cfg netback-uk
    step create-a 120 dom_create /rig/domu/linux-pv.cfg "$1"
    step create-b 120 dom_create /rig/domu/linux-pv.cfg "$2"
    step netback-ready 120 dom_wait netback-uk "netback-uk: ready"
    step boot-a 180 dom_wait "$1" @@READY
    step boot-b 180 dom_wait "$2" @@READY
}

# ping_cmd ADDR [COUNT]: the command that pings ADDR COUNT times (3) at
# once; it succeeds if an echo comes back.
ping_cmd() {
    echo "ping -c ${2:-3} -W 10 $1 > /tmp/ping.out; r=\$?; grep -E 'bytes from|loss' /tmp/ping.out; exit \$r"
}

# ping_cmds ADDR: five echo requests, one at a time, each answered within
# 10 s. (One `ping -c 5` waits only about twice the slowest round trip, at
# least 1 s, for its last reply, and TCG has pauses of that size.)
ping_cmds() {
    echo "for i in 1 2 3 4 5; do
    ping -c 1 -W 10 $1 > /tmp/ping.out
    grep -q 'bytes from' /tmp/ping.out || { cat /tmp/ping.out; exit 1; }
    grep 'bytes from' /tmp/ping.out
done"
}

# ping_ok FROM ADDR: ping_cmds in domU FROM.
ping_ok() {
    dom_run "$1" "$(ping_cmds "$2")"
}

# ping_peer FROM TO: FROM pings TO's leased address.
ping_peer() {
    ping_ok "$1" "$(addr "$2")"
}

# tcp_move FROM TO KIB: KIB KiB of random bytes from domU FROM to domU TO
# over TCP (busybox nc), checksums compared. The listener's stdin is a
# pipe that stays open: busybox nc ends at its stdin's EOF, which would
# cut the stream short.
tcp_move() {
    dom_run "$2" 'rm -f /tmp/recv; (sleep 200 | nc -l -p 5001 > /tmp/recv) > /dev/null 2>&1 < /dev/null &
i=0
until netstat -ltn | grep -q ":5001 "; do
    i=$((i + 1)); [ $i -gt 50 ] && { echo "nc does not listen"; exit 1; }
    sleep 0.2
done' || return 1
    dom_run "$1" "dd if=/dev/urandom of=/tmp/send bs=1024 count=$3 2>/dev/null || exit 1
read t0 _ < /proc/uptime
nc $(addr "$2") 5001 < /tmp/send || exit 1
read t1 _ < /proc/uptime
echo \"sent $3 KiB in \$t0 .. \$t1 s (uptime)\"
sha256sum /tmp/send" > /tmp/sum-a || { cat /tmp/sum-a; return 1; }
    dom_run "$2" 'i=0
while pidof nc > /dev/null; do
    i=$((i + 1)); [ $i -gt 500 ] && { echo "nc still receiving"; ls -l /tmp/recv; exit 1; }
    sleep 0.2
done
killall sleep 2>/dev/null
ls -l /tmp/recv; sha256sum /tmp/recv' > /tmp/sum-b || { cat /tmp/sum-b; return 1; }
    cat /tmp/sum-a /tmp/sum-b
    _a=$(awk '$2 == "/tmp/send" { print $1 }' /tmp/sum-a)
    _b=$(awk '$2 == "/tmp/recv" { print $1 }' /tmp/sum-b)
    [ -n "$_a" ] && [ "$_a" = "$_b" ]
}

# ---- kernel logs and Xen's grant table (xenshare, xenshare-dev, xenshare-vma,
# net-modules, net-policy, hostile-blk, hostile-net)

# clean_logs DOMU...: no Oops, WARNING or BUG in the kernel log of each
# domU nor in dom0's; each domU's log is kept in /tmp/dmesg-DOMU.log.
clean_logs() {
    _bad=0
    for _d in "$@"; do
        dom_run "$_d" 'dmesg' > "/tmp/dmesg-$_d.log" || return 1
        if grep -E "Oops|WARNING|BUG" "/tmp/dmesg-$_d.log"; then
            echo "$_d's kernel log has the lines above"
            _bad=1
        fi
    done
    if dmesg | grep -E "Oops|WARNING|BUG"; then
        echo "dom0's kernel log has the lines above"
        _bad=1
    fi
    [ "$_bad" -eq 0 ]
}

# grants: Xen's grant table dump (debug key g), as "table-owner mapper
# [ref]" per active entry, into /tmp/grants. The ring is cleared first so the
# dump read is this one, and the dump must be complete (its end marker).
grants() {
    xl dmesg -c > /dev/null
    xl debug-keys g
    _i=0
    until xl dmesg > /tmp/gdump && grep -q "gnttab_usage_print_all ] done" /tmp/gdump; do
        _i=$((_i + 1)); [ $_i -gt 50 ] && { echo "no complete grant dump"; tail -n 20 /tmp/gdump; return 1; }
        sleep 0.2
    done
    awk '/grant-table for remote d[0-9]+/ {
            match($0, /remote d[0-9]+/); owner = substr($0, RSTART + 8, RLENGTH - 8)
         }
         /\(XEN\) +\[0x[0-9a-f]+\]/ {
            for (i = 1; i <= NF; i++) if ($i ~ /^\[0x/) { print owner, $(i + 1), $i; break }
         }' /tmp/gdump > /tmp/grants
    grep -c "grant-table for remote d" /tmp/gdump | sed 's/^/grant tables dumped: /'
}

# no_grants NAME...: none of each domU NAME's grants in use and nothing
# mapped by it, in Xen's dump. Refs 0 and 1 are the console and xenstore
# pages (GNTTAB_RESERVED_*), which dom0's xenconsoled and xenstored map for
# every domain.
no_grants() {
    grants || return 1
    _bad=0
    for _d in "$@"; do
        _id=$(xl domid "$_d") || return 1
        _u=$(awk -v o="$_id" '$1 == o && !($2 == 0 && ($3 == "[0x000]" || $3 == "[0x001]"))' /tmp/grants | wc -l)
        _m=$(awk -v m="$_id" '$2 == m' /tmp/grants | wc -l)
        echo "$_d (domain $_id): $_u of its grants in use, maps $_m grants"
        [ "$_u" -eq 0 ] && [ "$_m" -eq 0 ] || _bad=1
    done
    [ "$_bad" -eq 0 ] || grep -B2 -A6 "grant-table for remote" /tmp/gdump | head -n 40
    [ "$_bad" -eq 0 ]
}

# collect_dmesg DOMU...: hands over each running domU's kernel log as
# dmesg-DOMU.log (for a scenario's exit trap: pass or fail).
collect_dmesg() {
    for _d in "$@"; do
        xl domid "$_d" >/dev/null 2>&1 || continue
        bounded 30 dom_run "$_d" 'dmesg' > "/tmp/dmesg-$_d.log" 2>/dev/null
        rig_send_file "dmesg-$_d.log" "/tmp/dmesg-$_d.log"
    done
}

# no_hung_task DOMU...: the kernel of each DOMU reported no hung task.
no_hung_task() {
    for _d in "$@"; do
        dom_run "$_d" 'if dmesg | grep -i "hung_task\|blocked for more than"; then exit 1; fi' || return 1
    done
    echo "no hung task"
}

# ---- the guest modules in a domU (net-modules, net-policy, blk-modules,
# hostile-blk, hostile-net, xenshare-dev, xenshare-vma)

# load_xenshare_dev DOMU: xenshare.ko alone; /dev/xenshare is there.
load_xenshare_dev() {
    dom_run "$1" 'modprobe xenshare || exit 1
[ -c /dev/xenshare ] || { echo "no /dev/xenshare"; ls -l /dev; exit 1; }
ls -l /dev/xenshare; dmesg | grep "xenshare:" | tail -n 3'
}

# load_xensnet DOMU: modprobe xensnet brings xenshare with it (its
# symbols); the domU's vdevice page is out.
load_xensnet() {
    dom_expect "$1" "vdevice page published" 'modprobe xensnet || exit 1
[ -e /sys/module/xenshare ] || { echo "xenshare not loaded"; exit 1; }
dmesg | grep -E "xenshare|xensnet"'
}

# load_xensblk DOMU [MODULE...]: the MODULEs, then xenshare and xensblk
# (the image resolves no module dependencies: xenshare first).
load_xensblk() {
    _u=$1
    shift
    dom_run "$_u" "for m in $* xenshare xensblk; do modprobe \$m || exit 1; done
dmesg | grep -i 'xenshare\|xensblk'
lsmod | grep '^xens'"
}

# published DOMU: xenshare.ko has published DOMU's vdevice page
# (data/vdevice in xenstore).
published() {
    _p=/local/domain/$(xl domid "$1")/data/vdevice
    until xenstore-read "$_p" 2>/dev/null; do sleep 0.2; done
}

# xsba_cmds: the domU commands that wait for xensblk's disk /dev/xsba (60 s
# at most) and print its kernel lines.
xsba_cmds() {
    echo "i=0
until [ -b /dev/xsba ]; do
    i=\$((i + 1)); [ \$i -gt 300 ] && { echo 'no /dev/xsba'; dmesg | tail -n 20; exit 1; }
    sleep 0.2
done
dmesg | grep xsba"
}

# ---- a backend that lies (hostile-blk, hostile-net) ---------------------

# fresh_backend NAME CFG MODE [SETTING...]: a fresh NAME (the running one
# destroyed first) from CFG with the xl SETTINGs: the shipped image for
# MODE "honest", else the test-only build /images/NAME-hostile with
# hostile=MODE. It must be ready and carry the test build's marker
# exactly when it lies.
fresh_backend() {
    _n=$1 _cfg=$2 _mode=$3
    shift 3
    if xl domid "$_n" >/dev/null 2>&1; then
        xl destroy "$_n" || return 1
        while xl domid "$_n" >/dev/null 2>&1; do sleep 0.2; done
    fi
    : > "$(dom_log "$_n")"
    if [ "$_mode" = honest ]; then
        xl create "$_cfg" "$@" || return 1
    else
        xl create "$_cfg" "$@" "kernel=\"/images/$_n-hostile\"" "cmdline=\"hostile=$_mode\"" || return 1
    fi
    dom_wait "$_n" "$_n: ready"
    grep -a "$_n: hostile\|HOSTILE\|$_n: disk 0" "$(dom_log "$_n")" | sed 's/@@/@ @/g'
    if [ "$_mode" = honest ]; then
        ! grep -aq "HOSTILE" "$(dom_log "$_n")"
    else
        grep -aq "$_n: hostile mode" "$(dom_log "$_n")"
    fi
}

# ---- share-member in a domU (blk-domu, blk-ram, net, vdevice) -----------

# The domU commands that start share-member and wait until it has
# published the domain's vdevice page, then print its log. Appended to a
# scenario's own commands: dom_run DOM '...'"$START_SHARE_MEMBER".
START_SHARE_MEMBER='setsid share-member > /tmp/share-member.log 2>&1 < /dev/null &
i=0
while ! grep -q published /tmp/share-member.log; do
    i=$((i + 1))
    if [ $i -gt 300 ] || ! pidof share-member > /dev/null; then
        echo "share-member did not publish its page:"
        cat /tmp/share-member.log
        exit 1
    fi
    sleep 0.2
done
cat /tmp/share-member.log'

# ---- a writer on a domU's file system (demo, save-restore) --------------

# start_writer DOM PREFIX COUNT [PAUSE_S]: in DOM, COUNT files of 1 MiB
# written to /mnt/d/PREFIX1.. in the background, each synced before its
# checksum goes to /tmp/written.sums (in the domU's RAM, not on the disk),
# PAUSE_S seconds (default 0) after each; /tmp/writer.end when done.
start_writer() {
    dom_run "$1" "(for i in \$(seq 1 $3); do
    dd if=/dev/urandom of=/tmp/$2 bs=1M count=1 2>/dev/null
    cp /tmp/$2 /mnt/d/$2\$i && sync && sha256sum /tmp/$2 | sed \"s|/tmp/$2|$2\$i|\" >> /tmp/written.sums
    sleep ${4:-0}
done; echo done > /tmp/writer.end) > /tmp/writer.log 2>&1 &
sleep 2; cat /tmp/written.sums 2>/dev/null | wc -l"
}

# writer_wait_cmds TICKS: the domU commands that wait (TICKS x 0.2 s at
# most) for start_writer's writer to end.
writer_wait_cmds() {
    echo "i=0
until [ -f /tmp/writer.end ]; do
    i=\$((i + 1)); [ \$i -gt $1 ] && { echo 'the writer is stuck'; cat /tmp/writer.log; exit 1; }
    sleep 0.2
done"
}

# ---- a disk server destroyed under a writer (blk-domu, blk-modules) -----

# chunk_writer DOM CHUNKS: in DOM, CHUNKS x 1 MiB into /mnt/during, each
# chunk with fsync (a blk flush), in the background; returns once 3
# chunks are on the disk, so a destroy comes mid-stream (64 chunks: about
# 6 s of margin at the fastest seen, 10 MiB/s on an idle host). Its
# checksum goes to /tmp/sums with the others.
chunk_writer() {
    dom_run "$1" "
dd if=/dev/urandom of=/tmp/during bs=1M count=$2 2>/dev/null || exit 1
md5sum /tmp/during | sed 's|/tmp/during|/mnt/during|' >> /tmp/sums
cat > /tmp/writer.sh <<'EOF2'
i=0
while [ \$i -lt $2 ]; do
    dd if=/tmp/during of=/mnt/during bs=1M skip=\$i seek=\$i count=1 conv=notrunc,fsync 2>/dev/null || { echo \"dd failed at chunk \$i\" > /tmp/writer.rc; exit 1; }
    i=\$((i + 1))
    echo \$i > /tmp/writer.progress
done
sync && echo ok > /tmp/writer.rc
EOF2
rm -f /tmp/writer.rc /tmp/writer.progress
setsid sh /tmp/writer.sh > /dev/null 2>&1 < /dev/null &
i=0
until [ \"\$(cat /tmp/writer.progress 2>/dev/null)\" -ge 3 ] 2>/dev/null; do
    i=\$((i + 1)); [ \$i -gt 600 ] && { echo 'the writer does not get going'; exit 1; }
    [ -e /tmp/writer.rc ] && { cat /tmp/writer.rc; exit 1; }
    sleep 0.2
done
echo \"writer at chunk \$(cat /tmp/writer.progress) of $2\""
}

# install_vif_script BRIDGE: Xen's vif-bridge needs bash, which this
# busybox dom0 lacks: the same job (the vif up and on its bridge, BRIDGE
# when the vif names none) in sh. libxl runs it with online|offline
# (add|remove for emulated NICs), XENBUS_PATH and vif in the environment.
install_vif_script() {
    cat > /etc/xen/scripts/vif-bridge <<'EOF'
#!/bin/sh
br=$(xenstore-read "$XENBUS_PATH/bridge" 2>/dev/null) || br=@BRIDGE@
case "$1" in
online | add)
    ip link set "$vif" up || exit 1
    brctl addif "$br" "$vif" || exit 1
    xenstore-write "$XENBUS_PATH/hotplug-status" connected
    ;;
offline | remove)
    brctl delif "$br" "$vif" 2>/dev/null
    ip link set "$vif" down 2>/dev/null
    ;;
esac
exit 0
EOF
    sed -i "s/@BRIDGE@/$1/" /etc/xen/scripts/vif-bridge || return 1
    chmod +x /etc/xen/scripts/vif-bridge
}

# connect_disk DOM: blkback-uk's disk 0 for DOM with features 15 (flush,
# discard, FUA, indirect), and DOM's page as dom0 reads it.
connect_disk() {
    vdevice --timeout 60 create disk --backend "$(xl domid blkback-uk)" --disk 0 \
        --features 15 "$(xl domid "$1")" || return 1
    vdevice show "$(xl domid "$1")"
}

# image_fsck FILE: blkback-uk destroyed, what reached dom0's image FILE is
# a clean file system.
image_fsck() {
    destroy_blkback || return 1
    e2fsck -f -n "$1"
    _rc=$?
    echo "e2fsck -f of dom0's image file: exit status $_rc"
    [ $_rc = 0 ]
}

# destroy_blkback: `xl destroy blkback-uk`, its id kept in /tmp/old-id.
destroy_blkback() {
    _id=$(xl domid blkback-uk) || return 1
    xl destroy blkback-uk || return 1
    while xl domid blkback-uk >/dev/null 2>&1; do sleep 0.2; done
    echo "destroyed blkback-uk (domain $_id)"
    echo "$_id" > /tmp/old-id
}

# chunk_writer_stuck DOM CHUNKS: the writer is stuck: not finished, no
# progress over 5 s.
chunk_writer_stuck() {
    dom_run "$1" "
a=\$(cat /tmp/writer.progress)
sleep 5
b=\$(cat /tmp/writer.progress)
echo \"writer at chunk \$a, 5 s later \$b, of $2; finished: \$(cat /tmp/writer.rc 2>/dev/null || echo no)\"
[ ! -e /tmp/writer.rc ] && [ \"\$a\" = \"\$b\" ] && [ \"\$b\" -lt $2 ]"
}

# reconnect_disk DOM: blkback-uk runs again under a new id; DOM's disk 0
# moves to it (`vdevice reconnect disk`).
reconnect_disk() {
    _new=$(xl domid blkback-uk) || return 1
    echo "blkback-uk was domain $(cat /tmp/old-id), is now domain $_new"
    [ "$_new" != "$(cat /tmp/old-id)" ] || return 1
    vdevice --timeout 60 reconnect disk --backend "$_new" --disk 0 "$(xl domid "$1")" || return 1
    vdevice show "$(xl domid "$1")"
}

# ---- a disk file served through dom0's blkback (blk-domu, blk-modules) --

# make_disk: $IMG, $SECTORS sectors of zeros, with what dom0 needs to
# give it to a domain (xen-blkback, loop, the block script).
make_disk() {
    modprobe xen-blkback || return 1
    modprobe loop || return 1
    install_block_script
    dd if=/dev/zero of="$IMG" bs=1M count=$((SECTORS / 2048)) 2>&1 || return 1
    ls -l "$IMG"
}

# blk_create: blkback-uk created with the scenario's $DISK (`disk=`).
blk_create() {
    : > "$(dom_log blkback-uk)"
    xl create /xl-configs/blkback-uk.cfg "$DISK" || return 1
    xl domid blkback-uk
}

# disk_line: blkback-uk says it serves disk 0, $SECTORS sectors.
disk_line() {
    dom_wait blkback-uk "blkback-uk: disk 0:"
    grep -a "blkback-uk: disk 0:\|blkback-uk: ready" "$(dom_log blkback-uk)" | sed 's/@@/@ @/g'
    grep -aq "blkback-uk: disk 0: vbd 51712 (backend domain 0): $SECTORS sectors" "$(dom_log blkback-uk)"
}

# ---- netback-uk's LANs (net, net-modules, xenshare, hostile-net) -------

# timed CMD...: CMD, then how long it took (TCG makes every program slow;
# the log says where the time goes).
timed() {
    _t0=$(now_ms)
    "$@"
    _trc=$?
    echo "time: $* -> $(( $(now_ms) - _t0 )) ms (status $_trc)"
    return "$_trc"
}

# nb: netback-uk's domain id.
nb() {
    xl domid netback-uk
}

# mac_of NAME: the MAC netback-uk assigns to NAME's port on LAN 0
# (02:58:LL:LL:DD:DD, docs/protocol.md).
mac_of() {
    _id=$(xl domid "$1") || return 1
    printf '02:58:00:00:%02x:%02x\n' $((_id >> 8)) $((_id & 255))
}
