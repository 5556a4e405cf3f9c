#!/bin/sh
# udhcpc's hook in a Linux test domU (`udhcpc -s /etc/rig/udhcpc`): applies
# a lease to the interface with `ip` and prints it, so the scenario's log
# shows what the DHCP server handed out. udhcpc passes the lease in the
# environment ($ip, $mask as a prefix length, $serverid, $lease, ...).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
case "$1" in
deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
bound | renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface" || exit 1
    echo "lease: $interface $ip/${mask:-24} from server ${serverid:-?} for ${lease:-?} s (router ${router:-none}, subnet ${subnet:-?})"
    ;;
leasefail | nak)
    echo "lease: $interface: $1 ${message:-}"
    ;;
esac
exit 0
