# tsc-storm: the clock storm of pvh-selftest (cmdline "storm=SECS": what a
# busy unikernel event loop does, two clock reads per round and no
# hypercall) under Xen's TSC modes. Each case runs STORM_DOMAINS storm
# domains at once, "busy" cases with two dom0 CPU hogs beside them, so the
# storm vCPUs are preempted and moved between the two pCPUs as netback-uk's
# was in the net scenario.
#
# Cases with RDTSC native (tsc_mode "native", what xl-configs/ ship) must
# pass. Cases with RDTSC emulated by Xen ("default" on this rig's qemu64
# CPU, "always_emulate") are the nested-virtualization artifact described
# in xen-rig/README.md ("RDTSC exits and the triple fault"): their outcome
# is printed, not judged. dom0's init passes no arguments: edit the
# variables below to change the cases.
STORM_SECS=60
STORM_DOMAINS=2
STORM_CASES="native-busy default-busy"

# storm CASE: MODE[-busy]; records /tmp/storm-CASE = PASS or what went
# wrong, and never fails itself.
storm() {
    _mode=${1%-busy}
    _hogs=""
    if [ "$_mode" != "$1" ]; then
        for _i in 1 2; do
            sh -c 'while :; do :; done' &
            _hogs="$_hogs $!"
        done
    fi
    _result=PASS
    _names=""
    _i=0
    while [ $_i -lt $STORM_DOMAINS ]; do
        _i=$((_i + 1))
        _name="storm-$1-$_i"
        if xl create /xl-configs/pvh-selftest.cfg "name=\"$_name\"" \
            "cmdline=\"storm=$STORM_SECS\"" "tsc_mode=\"$_mode\""; then
            _names="$_names $_name"
        else
            _result=CREATE-FAILED
        fi
    done
    for _name in $_names; do
        _log=$(dom_log "$_name")
        while :; do
            if grep -qF "selftest: storm PASS" "$_log" 2>/dev/null; then
                break
            fi
            if xl list "$_name" 2>/dev/null | awk 'NR == 2 { exit !($5 ~ /c/) }'; then
                _result="CRASH($_name)"
                break
            fi
            if ! xl domid "$_name" >/dev/null 2>&1; then
                grep -qF "selftest: storm PASS" "$_log" 2>/dev/null || _result="GONE($_name)"
                break
            fi
            sleep 1
        done
        grep -a "storm" "$_log" | sed 's/@@/@ @/g'
    done
    [ -n "$_hogs" ] && kill $_hogs
    echo "$_result" >"/tmp/storm-$1"
    echo "@@STORM $1 $_result"
    xl dmesg | grep -a -i -E -A25 "triple" | tail -n 60 | sed 's/@@/@ @/g'
    for _name in $_names; do
        xl destroy "$_name" 2>/dev/null
        while xl domid "$_name" >/dev/null 2>&1; do sleep 0.2; done
    done
    return 0
}

# The TSC as Xen sees it (the 's' debug key).
tsc_state() {
    xl debug-keys s
    xl dmesg | grep -a -i -E "tsc" | tail -n 6
}

verdict() {
    _bad=0
    for c in $STORM_CASES; do
        _r=$(cat "/tmp/storm-$c" 2>/dev/null || echo NOT-RUN)
        case "$c" in
        native*)
            echo "$c: $_r"
            [ "$_r" = PASS ] || _bad=1
            ;;
        *) echo "$c: $_r (RDTSC emulated: not judged)" ;;
        esac
    done
    return $_bad
}

step tsc-state 30 tsc_state
for _c in $STORM_CASES; do
    step "storm-$_c" $((STORM_SECS + 300)) storm "$_c"
done
step verdict 10 verdict
