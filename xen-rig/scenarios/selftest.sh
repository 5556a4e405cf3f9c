# selftest: the PVH platform self-test against dom0 (protocol:
# platforms/share-pvh/SELFTEST.md), a deliberate fault, a stack overflow and
# two #GPs (raised by the CPU, injected by Xen) that must each end as a
# crash report and a crashed domain, and both backend images booting to
# "ready". Each "ready" step prints @@TIME lines: xl create to ready, ms.

# timed_ready CFG NAME TEXT: xl create, wait for TEXT, print the time.
timed_ready() {
    _t0=$(now_ms)
    xl create "$1" "name=\"$2\"" || return 1
    dom_wait "$2" "$3"
    echo "@@TIME $2 create-to-ready $(( $(now_ms) - _t0 )) ms"
}

# wait_gone NAME: the domain powered off (on_poweroff = destroy).
wait_gone() {
    while xl domid "$1" >/dev/null 2>&1; do sleep 0.2; done
}

# crashed NAME: xl list shows the domain in state c (on_crash = preserve).
# xl's monitor then renames a preserved domain (NAME-<time>), at a moment
# of its own: match both names, and keep the domid, which does not change,
# for destroy_crashed.
crashed() {
    until xl list | awk -v n="$1" 'NR > 1 && ($1 == n || index($1, n "-") == 1) && $5 ~ /c/ {
            print $2; found = 1 } END { exit !found }' > "/tmp/crashed-$1"; do
        sleep 0.2
    done
    xl list "$(cat "/tmp/crashed-$1")"
}

# destroy_crashed NAME: destroy the domain crashed found, by its domid.
destroy_crashed() {
    xl destroy "$(cat "/tmp/crashed-$1")"
}

# vdevice_show NAME: dom0's tool maps NAME's vdevice page (published in
# data/vdevice) and reads its header and entries.
vdevice_show() {
    vdevice show "$(xl domid "$1")" | tee /tmp/vdevice-show || return 1
    grep -q "device(s)" /tmp/vdevice-show
}

# vdevice_answered: a change to netback-uk's page is acknowledged (applied
# or refused with a status), not left unanswered: the image's event loop
# serves its vdevice port.
vdevice_answered() {
    _out=$(vdevice --timeout 60 create net --backend "$(xl domid netback-uk)" \
        "$(xl domid blkback-uk)" 2>&1)
    _rc=$?
    echo "$_out"
    [ "$_rc" -eq 0 ] && return 0
    case "$_out" in
        *"refused the change"*) return 0 ;;
        *) return 1 ;;
    esac
}

step create 120 dom_create /xl-configs/pvh-selftest.cfg pvh-selftest
step published 120 dom_wait pvh-selftest "selftest: published"
step dom0-side 300 sh -c 'share-selftest-dom0 "$(xl domid pvh-selftest)"'
step pass 120 dom_wait pvh-selftest "selftest: PASS"
step poweroff 60 wait_gone pvh-selftest
step no-failure 10 sh -c '! grep -a "selftest: FAIL" /var/log/xen/console/guest-pvh-selftest.log'

step fault-create 120 xl create /xl-configs/pvh-selftest.cfg 'name="pvh-fault"' 'cmdline="fault"'
step fault-report 120 dom_wait pvh-fault "fault address (cr2) 0x0000004000000000: read on a not-present page"
step fault-crashed 60 crashed pvh-fault
step fault-destroy 60 destroy_crashed pvh-fault
step overflow-create 120 xl create /xl-configs/pvh-selftest.cfg 'name="pvh-overflow"' 'cmdline="overflow"'
step overflow-report 120 dom_wait pvh-overflow "(the boot stack overflowed into its guard page)"
step overflow-crashed 60 crashed pvh-overflow
step overflow-destroy 60 destroy_crashed pvh-overflow

# A #GP the CPU raises in the domain, and one Xen injects (RDMSR of an MSR
# it does not implement): both must reach the crash handler.
step gp-native-create 120 xl create /xl-configs/pvh-selftest.cfg 'name="pvh-gp-native"' 'cmdline="gp-native"'
step gp-native-report 120 dom_wait pvh-gp-native "general protection fault (#GP, vector 13)"
step gp-native-crashed 60 crashed pvh-gp-native
step gp-native-destroy 60 destroy_crashed pvh-gp-native
step gp-injected-create 120 xl create /xl-configs/pvh-selftest.cfg 'name="pvh-gp-injected"' 'cmdline="gp-injected"'
step gp-injected-report 120 dom_wait pvh-gp-injected "general protection fault (#GP, vector 13)"
step gp-injected-crashed 60 crashed pvh-gp-injected
step gp-injected-destroy 60 destroy_crashed pvh-gp-injected

# A fault that cannot be delivered (exception stack unmapped): the double
# fault runs on its own stack and reports.
step df-create 120 xl create /xl-configs/pvh-selftest.cfg 'name="pvh-df"' 'cmdline="double-fault"'
step df-report 120 dom_wait pvh-df "double fault (#DF, vector 8)"
step df-crashed 60 crashed pvh-df
step df-destroy 60 destroy_crashed pvh-df

step netback-ready 120 timed_ready /xl-configs/netback-uk.cfg netback-uk "netback-uk: ready"
step blkback-ready 120 timed_ready /xl-configs/blkback-uk.cfg blkback-uk "blkback-uk: ready"
step backends-list 30 xl list
step vdevice-show 60 vdevice_show netback-uk
step vdevice-answered 60 vdevice_answered
step backends-destroy 60 sh -c 'xl destroy netback-uk && xl destroy blkback-uk'
