#!/bin/sh
# The bench's zswap run (clients.run_zswap): push a file's pages through zswap on
# each zpool in turn and read zswap's pool while they are out.
#
# A ramdisk (brd.ko at BRD, loaded here with SWAP_KB KiB) is the swap device: zswap
# writes to it only the pages it refuses. zskit-pageout copies FILE into anonymous
# memory and pages it out; while the pages are out this prints, per zpool,
#   zswap ZPOOL pool_total_size stored_pages same_filled_pages reject_compress_poor
#       reject_alloc_fail written_back_pages
# (the counters of /sys/kernel/debug/zswap, cumulative ones as differences), then
# the program reads every page back and compares it (its lines follow). At the end
# `zswap-ok`, or `zswap-fail: what` (exit status 1); zswap is left disabled and the
# swap device gone either way.
#
# Usage: FILE=PATH ZPOOLS="zbud z3fold zsmalloc" COMP=ALG SWAP_KB=N BRD=PATH sh zswap.sh
set -u
p=/sys/module/zswap/parameters d=/sys/kernel/debug/zswap
: "$FILE" "$ZPOOLS" "$COMP" "$SWAP_KB" "$BRD"
# zswap keeps its current pool while disabled: the zpool it booted with goes back,
# so that no zpool module (zsmalloc.ko, z3fold.ko) stays in use.
first=$(cat $p/zpool 2>/dev/null)
cleanup() {
    echo N > $p/enabled 2>/dev/null
    echo "$first" > $p/zpool 2>/dev/null
    swapoff /dev/ram0 2>/dev/null
    rmmod brd 2>/dev/null
}
fail() {
    echo "zswap-fail: $*"
    cleanup
    exit 1
}
counter() { cat $d/$1 2>/dev/null || echo 0; }
test -d $p || fail "this kernel has no zswap"
test -d $d || fail "no $d (debugfs, CONFIG_DEBUG_FS)"
insmod "$BRD" rd_nr=1 rd_size="$SWAP_KB" || fail "insmod $BRD"
mkswap /dev/ram0 > /dev/null || fail "mkswap /dev/ram0"
swapon /dev/ram0 || fail "swapon /dev/ram0"
echo 100 > $p/max_pool_percent || fail "setting max_pool_percent"
echo "$COMP" > $p/compressor || fail "zswap has no compressor $COMP"
echo Y > $p/enabled || fail "enabling zswap"
for z in $ZPOOLS; do
    echo "$z" > $p/zpool || fail "zswap cannot use the zpool $z"
    poor=$(counter reject_compress_poor) alloc=$(counter reject_alloc_fail)
    back=$(counter written_back_pages)
    rm -f /tmp/zskit-out
    zskit-pageout "$FILE" /tmp/zskit-out > /tmp/zskit-pageout.log 2>&1 &
    pid=$!
    while [ ! -e /tmp/zskit-out ] && kill -0 $pid 2>/dev/null; do sleep 0.2; done
    echo "zswap $z $(counter pool_total_size) $(counter stored_pages)" \
        "$(counter same_filled_pages) $(($(counter reject_compress_poor) - poor))" \
        "$(($(counter reject_alloc_fail) - alloc)) $(($(counter written_back_pages) - back))"
    kill -USR1 $pid 2>/dev/null
    wait $pid
    rc=$?
    cat /tmp/zskit-pageout.log
    [ $rc = 0 ] || fail "zskit-pageout on $z exited $rc"
    # Swap slots of the exited program may linger in the swap cache, and with them
    # their zswap entries: swapoff frees them all, so the next zpool starts empty.
    swapoff /dev/ram0 && swapon /dev/ram0 || fail "swapoff/swapon /dev/ram0"
    left=$(counter stored_pages)
    [ "$left" = 0 ] || fail "zswap still holds $left pages after swapoff"
done
cleanup
echo zswap-ok
