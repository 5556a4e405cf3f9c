#!/bin/sh
# dom0's init: bring up the Xen tool stack, run the scenario named on the
# kernel command line (rig.scenario=NAME), hand every log to the host over
# the console, power off. Markers (@@...) are read by `cargo xtask xen run`;
# see xen-rig/README.md for their grammar.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu:/lib/x86_64-linux-gnu
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
exec >/dev/console 2>&1 </dev/null
echo "@@RIG BOOT"

. /rig/lib.sh

rig_fail() {
    echo "@@RIG FAIL $*"
    rig_dump_logs
    echo "@@RIG DONE"
    poweroff -f
}

while read -r m; do
    [ -n "$m" ] || continue
    modprobe "$m" || rig_fail "modprobe $m"
done < /etc/rig/modules
mount -t xenfs xenfs /proc/xen || rig_fail "mount xenfs"
mkdir -p /var/lock /var/run/xen /var/lib/xen /var/log/xen/console /run/xen /var/lib/xenstored
# Kernel messages would interleave with markers; the full dmesg is handed
# over at the end instead.
dmesg -n 1
xenstored --pid-file /var/run/xenstored.pid || rig_fail "xenstored"
xen-init-dom0 || rig_fail "xen-init-dom0"
xenconsoled --log=guest --pid-file=/var/run/xenconsoled.pid || rig_fail "xenconsoled"
echo "@@RIG READY"

scenario=
for arg in $(cat /proc/cmdline); do
    case "$arg" in rig.scenario=*) scenario=${arg#rig.scenario=} ;; esac
done
script=/rig/scenarios/$scenario.sh
if [ -z "$scenario" ] || [ ! -f "$script" ]; then
    rig_fail "no scenario '$scenario' in /rig/scenarios"
fi
echo "@@SCENARIO $scenario BEGIN"
# A subshell: `step` ends the scenario with `exit` on the first failure.
( . "$script" )
rc=$?
echo "@@SCENARIO $scenario END $rc"
rig_dump_logs
echo "@@RIG DONE"
sync
poweroff -f
