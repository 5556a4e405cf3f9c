# temporary dev scenario (not committed)
step create-net 120 xl create /xl-configs/netback-uk.cfg
step create-blk 120 xl create /xl-configs/blkback-uk.cfg
step ready-net 120 dom_wait netback-uk "netback-uk: ready"
step ready-blk 120 dom_wait blkback-uk "blkback-uk: ready"
