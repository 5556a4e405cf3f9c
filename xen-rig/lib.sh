# Helpers for scenarios (sourced by dom0's init; scenarios call these).
#
#   step NAME TIMEOUT_S CMD [ARG...]
#       Runs CMD (a program, or a function of this file or the scenario) in
#       a subshell, kills it and everything it started after TIMEOUT_S,
#       prints @@STEP NAME BEGIN|OK|FAIL markers and ends the scenario on
#       failure. Variables a step sets do not survive it (a subshell).
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
kill_tree() {
    kill -STOP "$1" 2>/dev/null
    # busybox-static has no pgrep: children are found by the ppid in stat.
    for _s in /proc/[0-9]*/stat; do
        read -r _p _ _ _pp _ < "$_s" 2>/dev/null || continue
        [ "$_pp" = "$1" ] && kill_tree "$_p"
    done
    kill -KILL "$1" 2>/dev/null
}

step() {
    _name=$1 _timeout=$2
    shift 2
    echo "@@STEP $_name BEGIN $_timeout"
    _t0=$(now_ms)
    ( "$@" ) &
    _pid=$!
    ( sleep "$_timeout"; echo "@@STEP $_name TIMEOUT"; kill_tree "$_pid" ) &
    _wd=$!
    wait "$_pid"
    _rc=$?
    kill_tree "$_wd"
    wait "$_wd" 2>/dev/null
    _ms=$(( $(now_ms) - _t0 ))
    if [ "$_rc" -eq 0 ]; then
        echo "@@STEP $_name OK 0 $_ms"
    else
        echo "@@STEP $_name FAIL $_rc $_ms"
        exit "$_rc"
    fi
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
    _domid=$(xl domid "$_dom") || return 1
    _tty=$(xenstore-read "/local/domain/$_domid/console/tty") || return 1
    _log=$(dom_log "$_dom")
    dom_wait "$_dom" "@@READY"
    printf '@@RUN %s %s\n' "$_id" "$(printf '%s' "$*" | base64 -w 0)" > "$_tty"
    while ! grep -q "@@RC $_id [0-9][0-9]* END" "$_log"; do
        sleep 0.2
    done
    # Guest-written text reaches the serial console: defuse "@@" so it can
    # never read as a marker.
    grep -o "@@O $_id .*" "$_log" | sed -e "s/^@@O $_id //" -e 's/@@/@ @/g' | tr -d '\r'
    _rc=$(grep -o "@@RC $_id [0-9][0-9]* END" "$_log" | head -n 1)
    _rc=${_rc% END}
    return "${_rc##* }"
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
    (
        sleep "$_bt"
        kill_tree "$_bp"
    ) &
    _bw=$!
    wait "$_bp"
    _brc=$?
    kill_tree "$_bw" 2>/dev/null
    wait "$_bw" 2>/dev/null
    return "$_brc"
}
