# xenshare-vma: a mapping of /dev/xenshare against the VMA operations
# that copy or move it (issue 18 item 1). In a PV and a PVH domU,
# xenshare-vma maps a page block with one page granted to dom0, forks
# (the child must not inherit the mapping), RELEASEs it under the mapping
# and uses it, lets a child inherit a copy after MADV_DOFORK, and tries to
# move it with mremap() (refused with EINVAL; MREMAP_DONTUNMAP refused),
# then revokes the grant and closes. A VMA copied without a reference of
# its own would let the object be freed under the parent's mapping: the
# kernel would warn (refcount underflow) or oops at the parent's munmap.
# Then: no Oops, WARNING or BUG in either domU's log (nor dom0's); none of
# either domU's grants in use in Xen's grant dump; rmmod xenshare works.
PV=xsv-pv
PVH=xsv-pvh

collect() {
    for _d in $PV $PVH; do
        xl domid "$_d" >/dev/null 2>&1 || continue
        bounded 30 dom_run "$_d" 'dmesg; cat /tmp/vma.log' > "/tmp/xsv-$_d.log" 2>/dev/null
        rig_send_file "xenshare-vma-$_d.log" "/tmp/xsv-$_d.log"
    done
}
trap collect EXIT

# vma DOMU: the program's checks, three times over (a freed object is
# more likely to be reused, and so seen, on a later round).
vma() {
    dom_run "$1" 'rm -f /tmp/vma.log
for i in 1 2 3; do
    xenshare-vma --peer 0 >> /tmp/vma.log 2>&1 || { cat /tmp/vma.log; exit 1; }
done
cat /tmp/vma.log
[ "$(grep -c "^vma: 8 checks passed" /tmp/vma.log)" -eq 3 ]'
}


unload() {
    dom_run "$1" 'rmmod xenshare && [ ! -e /dev/xenshare ]'
}

step create-pv 120 dom_create /rig/domu/linux-pv.cfg $PV
step create-pvh 120 dom_create /rig/domu/linux-pvh.cfg $PVH
step boot-pv 180 dom_wait $PV @@READY
step boot-pvh 180 dom_wait $PVH @@READY
step load-pv 60 load_xenshare_dev $PV
step load-pvh 60 load_xenshare_dev $PVH
step vma-pv 120 vma $PV
step vma-pvh 120 vma $PVH
step clean-logs 60 clean_logs $PV $PVH
step grants-closed 60 no_grants $PV $PVH
step unload-pv 60 unload $PV
step unload-pvh 60 unload $PVH
step clean-logs-unloaded 60 clean_logs $PV $PVH
