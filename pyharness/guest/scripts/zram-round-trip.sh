#!/bin/sh
# zram round trip (clients.zram_round_trip, run by zskit validate and compare):
# load zram on the loaded zsmalloc, write generated pages through /dev/zram0,
# read them back, discard the first DISCARDED pages, compact, read back again.
# A failure prints `zram-fail: what` and exits 1; `mm_stat <moment> <fields>` is
# printed after the write, after the discard and after compaction; `zram-ok` ends
# a good run.
#
# Usage: TEXT_PAGES=N MIXED_PAGES=N MIXED_STEP=BYTES ZERO_PAGES=N RANDOM_PAGES=N \
#        DISCARDED=N sh zram-round-trip.sh ZRAM_KO
#   TEXT_PAGES    pages of text (compressible)
#   MIXED_PAGES   pages whose i-th has i * MIXED_STEP random bytes, then zeros
#   ZERO_PAGES    zero pages (zram keeps same-filled pages out of zsmalloc)
#   RANDOM_PAGES  random pages (incompressible: zsmalloc's huge class)
#   DISCARDED     pages discarded from the start before compaction
#   ZRAM_KO       the zram module to load
set -u
fail() { echo "zram-fail: $*"; exit 1; }
: "$TEXT_PAGES" "$MIXED_PAGES" "$MIXED_STEP" "$ZERO_PAGES" "$RANDOM_PAGES" "$DISCARDED"
pages=$((TEXT_PAGES + MIXED_PAGES + ZERO_PAGES + RANDOM_PAGES))
f=/tmp/zram.in z=/tmp/zram.zero dev=/dev/zram0 sys=/sys/block/zram0
insmod "$1" || fail "insmod $1"
test -b $dev || fail "no $dev after loading zram"
seq 1 100000 | head -c $((TEXT_PAGES * 4096)) > $f
i=1
while [ $i -le "$MIXED_PAGES" ]; do
    n=$((i * MIXED_STEP))
    dd if=/dev/urandom bs=$n count=1 2>/dev/null
    dd if=/dev/zero bs=$((4096 - n)) count=1 2>/dev/null
    i=$((i + 1))
done >> $f
dd if=/dev/zero bs=4096 count="$ZERO_PAGES" 2>/dev/null >> $f
dd if=/dev/urandom bs=4096 count="$RANDOM_PAGES" 2>/dev/null >> $f
test $(stat -c %s $f) -eq $((pages * 4096)) || fail "the test data has $(stat -c %s $f) bytes"
dd if=/dev/zero of=$z bs=4096 count="$DISCARDED" 2>/dev/null
echo 8M > $sys/disksize || fail "setting disksize"
dd if=$f of=$dev bs=4096 2>/dev/null || fail "writing $dev"
sync
blockdev --flushbufs $dev || fail "blockdev --flushbufs"
dd if=$dev bs=4096 count=$pages 2>/dev/null | cmp - $f || fail "read back differs"
echo "mm_stat written $(cat $sys/mm_stat)"
blkdiscard -o 0 -l $((DISCARDED * 4096)) $dev || fail "blkdiscard"
echo "mm_stat discarded $(cat $sys/mm_stat)"
echo 1 > $sys/compact || fail "compact"
echo "mm_stat compacted $(cat $sys/mm_stat)"
blockdev --flushbufs $dev || fail "blockdev --flushbufs"
dd if=$dev bs=4096 count="$DISCARDED" 2>/dev/null | cmp - $z || fail "discarded pages not zero"
dd if=$dev bs=4096 skip="$DISCARDED" count=$((pages - DISCARDED)) 2>/dev/null \
    | cmp - $f 0 $((DISCARDED * 4096)) || fail "read back after compaction differs"
echo 1 > $sys/reset || fail "reset"
rmmod zram || fail "rmmod zram"
rm -f $f $z
echo zram-ok
