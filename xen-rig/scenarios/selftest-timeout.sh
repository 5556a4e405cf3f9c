# selftest-timeout: checks the rig's step timeout. A domU command hangs, so
# dom0 must kill the step after 5 s and the run must fail at `hang`:
#   cargo xtask xen run selftest-timeout --expect-fail hang
step create 120 dom_create /rig/domu/linux-pv.cfg selftest
step boot 180 dom_wait selftest @@READY
step hang 5 dom_run selftest 'sleep 1000'
step never-reached 10 true
