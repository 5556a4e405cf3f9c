# uk-measure: figures for docs/performance.md (not part of the test tier).
# Time from `xl create` to "ready" for both backend images next to a Linux
# PV domU in the same run, and the smallest memory each image boots in.
# Prints @@TIME and @@MEM lines; fails only if a 16 MiB backend or the
# Linux domU does not come up.

timed_ready() {
    _t0=$(now_ms)
    xl create "$1" "name=\"$2\"" || return 1
    dom_wait "$2" "$3"
    echo "@@TIME $2 create-to-ready $(( $(now_ms) - _t0 )) ms"
}

# mem_probe IMAGE MIB: does IMAGE reach "ready" with MIB of memory?
mem_probe() {
    _n="$1-$2m"
    _t0=$(now_ms)
    if ! xl create "/xl-configs/$1.cfg" "name=\"$_n\"" "memory=$2" >/dev/null 2>&1; then
        echo "@@MEM $1 ${2} MiB: xl create refused"
        return 0
    fi
    _i=0
    while [ $_i -lt 150 ]; do
        if grep -qF "$1: ready" "$(dom_log "$_n")" 2>/dev/null; then
            echo "@@MEM $1 ${2} MiB: ready in $(( $(now_ms) - _t0 )) ms"
            xl destroy "$_n"
            return 0
        fi
        sleep 0.2
        _i=$((_i + 1))
    done
    echo "@@MEM $1 ${2} MiB: not ready in 30 s"
    tail -n 3 "$(dom_log "$_n")"
    xl destroy "$_n" 2>/dev/null
    return 0
}

step linux-pv 300 timed_ready /rig/domu/linux-pv.cfg linux-pv @@READY
step netback 120 timed_ready /xl-configs/netback-uk.cfg netback-uk "netback-uk: ready"
step blkback 120 timed_ready /xl-configs/blkback-uk.cfg blkback-uk "blkback-uk: ready"
step list 30 xl list
step destroy 60 sh -c 'xl destroy netback-uk; xl destroy blkback-uk; xl destroy linux-pv'
step mem-net-8 60 mem_probe netback-uk 8
step mem-net-4 60 mem_probe netback-uk 4
step mem-net-2 60 mem_probe netback-uk 2
step mem-blk-4 60 mem_probe blkback-uk 4
