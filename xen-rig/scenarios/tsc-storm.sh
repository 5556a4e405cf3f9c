# tsc-storm: the clock storm of pvh-selftest (cmdline "storm=SECS": what a
# busy unikernel event loop does, two RDTSCs per round and no hypercall)
# under each of Xen's TSC modes, one domain at a time. A run that ends in a
# crash (a triple fault shows as state c with on_crash = preserve) is
# recorded and the next mode still runs; the last step fails if any did.
# STORM_SECS and STORM_MODES can be overridden by editing this file only:
# dom0's init passes no arguments.
STORM_SECS=45
STORM_MODES="default always_emulate native"

# storm MODE: one storm domain with tsc_mode MODE; records
# /tmp/storm-MODE = PASS or CRASH and never fails itself.
storm() {
    _name="storm-$1"
    xl create /xl-configs/pvh-selftest.cfg "name=\"$_name\"" \
        "cmdline=\"storm=$STORM_SECS\"" "tsc_mode=\"$1\"" || {
        echo CREATE-FAILED >"/tmp/storm-$1"
        return 0
    }
    _log=$(dom_log "$_name")
    while :; do
        if grep -qF "selftest: storm PASS" "$_log" 2>/dev/null; then
            echo PASS >"/tmp/storm-$1"
            break
        fi
        if xl list "$_name" 2>/dev/null | awk 'NR == 2 { exit !($5 ~ /c/) }'; then
            echo CRASH >"/tmp/storm-$1"
            break
        fi
        if ! xl domid "$_name" >/dev/null 2>&1; then
            echo GONE >"/tmp/storm-$1"
            break
        fi
        sleep 1
    done
    echo "@@STORM $1 $(cat "/tmp/storm-$1")"
    grep -a "storm" "$_log" | sed 's/@@/@ @/g'
    xl dmesg | grep -a -i -E "triple|d[0-9]+v0|tsc" | tail -n 20 | sed 's/@@/@ @/g'
    xl destroy "$_name" 2>/dev/null
    while xl domid "$_name" >/dev/null 2>&1; do sleep 0.2; done
    return 0
}

# The TSC as Xen sees it (the 's' debug key dumps TSC state and each
# domain's mode).
tsc_state() {
    xl debug-keys s
    xl dmesg | grep -a -i -E "tsc|dom[0-9]+.*mode" | tail -n 20
}

verdict() {
    _bad=0
    for m in $STORM_MODES; do
        echo "$m: $(cat "/tmp/storm-$m" 2>/dev/null || echo NOT-RUN)"
        [ "$(cat "/tmp/storm-$m" 2>/dev/null)" = PASS ] || _bad=1
    done
    return $_bad
}

step tsc-state 30 tsc_state
for _m in $STORM_MODES; do
    step "storm-$_m" $((STORM_SECS + 240)) storm "$_m"
done
step tsc-state-after 30 tsc_state
step verdict 10 verdict
