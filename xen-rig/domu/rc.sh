#!/bin/sh
# One-time setup of a Linux test domU.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
# Only the agent talks on the console; dmesg stays readable with `dmesg`.
dmesg -n 1
while read -r m; do
    [ -n "$m" ] && modprobe "$m"
done < /etc/rig/modules
for arg in $(cat /proc/cmdline); do
    case "$arg" in rig.name=*) hostname "${arg#rig.name=}" ;; esac
done
ip link set lo up
