#!/bin/sh
# The rig agent of a Linux test domU: runs commands dom0 sends on the
# console and answers there. Protocol (one message per line, matched by
# prefix so kernel messages between lines do no harm):
#   dom0 -> domU   @@RUN <id> <command, base64>
#   domU -> dom0   @@GO <id>                  (the command starts)
#                  @@O <id> <output line>     (stdout and stderr, merged)
#                  @@RC <id> <exit status> END
#                  @@DUP <id>                 (a repeat of a command it ran)
# dom0 sends a command again when it has not heard @@GO after a while (a
# console event can go missing under nested TCG); each id runs once.
# dom0's side is dom_run in xen-rig/lib.sh.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
exec </dev/console >/dev/console 2>&1
stty -echo 2>/dev/null
echo
echo "@@READY $(hostname)"
# Each command costs forks of a PV domain under TCG (tens of ms each): the
# loop makes three (base64, sh, sed). The ids run so far live in $seen and,
# for a respawned agent, in /tmp/rig-seen.
seen=" $(tr '\n' ' ' 2>/dev/null < /tmp/rig-seen)"
while read -r tag id cmd; do
    [ "$tag" = "@@RUN" ] || continue
    # A repeat is answered (which also wakes a stalled console) but not run.
    case "$seen" in
    *" $id "*)
        echo
        echo "@@DUP $id"
        continue
        ;;
    esac
    seen="$seen$id "
    echo "$id" >> /tmp/rig-seen
    echo
    echo "@@GO $id"
    base64 -d > /tmp/rig-cmd 2>/dev/null <<EOF
$cmd
EOF
    sh /tmp/rig-cmd > /tmp/rig-out 2>&1 < /dev/null
    rc=$?
    echo
    sed "s/^/@@O $id /" /tmp/rig-out
    # Output that did not end its last line must not end in the marker.
    echo
    echo "@@RC $id $rc END"
done
