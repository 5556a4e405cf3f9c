# selftest-fail: checks the rig itself. A command fails inside a domU, so the
# run must fail at step `domu-false` with the logs kept; `cargo xtask test
# --tier xen` runs it with --expect-fail domu-false.
step create 120 dom_create /rig/domu/linux-pv.cfg selftest
step boot 180 dom_wait selftest @@READY
step domu-true 60 dom_run selftest true
step domu-false 60 dom_run selftest 'echo failing on purpose; exit 3'
step never-reached 10 true
