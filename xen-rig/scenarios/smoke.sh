# smoke: dom0 up, `xl info`, two Linux domUs (one PV, one PVH) each answer
# a command, both shut down.
step xl-info 60 sh -c 'xl info | tee /tmp/xl-info && grep -q "virt_caps.*pv" /tmp/xl-info'
step create-pv 120 dom_create /rig/domu/linux-pv.cfg smoke-pv
step create-pvh 120 dom_create /rig/domu/linux-pvh.cfg smoke-pvh
step boot-pv 180 dom_wait smoke-pv @@READY
step boot-pvh 180 dom_wait smoke-pvh @@READY
step pv-answers 60 dom_expect smoke-pv "Linux" 'uname -sr; ls /dev/xen'
step pvh-answers 60 dom_expect smoke-pvh "Linux" 'uname -sr; ls /dev/xen'
step pv-mkfs 60 dom_run smoke-pv 'dd if=/dev/zero of=/tmp/disk bs=1M count=8 2>/dev/null && mkfs.ext4 -q /tmp/disk && fsck.ext4 -fn /tmp/disk'
step shutdown 120 dom_shutdown smoke-pv smoke-pvh
