#!/bin/sh
# zram data set (compare.zram_set, run by zskit compare on each allocator):
# make the data set once per boot (so every allocator gets the same bytes), load
# zram and what it needs, write the set through /dev/zram0, read it back, discard
# every other chunk (freeing objects all over the zspages), compact, and read the
# device back against the set with those chunks zeroed.
# The set: the guest image's binaries (busybox, the modules under MODULES_DIR),
# text (every applet's help, /init), and pages of known compressibility: k/16 of
# each page random, the rest zero, k = 0..16, 8 pages each (k = 0 is a zero page,
# which zram keeps out of zsmalloc).
# A failure prints `zram-fail: what`, resets and unloads zram (the allocator under
# it must unload) and exits 1; `set pages N` gives the set's size, `mm_stat
# <moment> <fields>` is printed after the write, the discard and compaction;
# `zram-ok` ends a good run.
#
# Usage: SET=FILE MODULES_DIR=DIR CHUNK_PAGES=N sh zram-set.sh MODULE...
#   SET          where the data set is kept (made when absent)
#   MODULES_DIR  the modules of the guest image, part of the set
#   CHUNK_PAGES  pages per discarded chunk
#   MODULE...    zram's dependencies, then zram, loaded in this order
set -u
# A failure leaves no zram behind: the allocator under it must unload.
fail() {
    echo "zram-fail: $*"
    echo 1 > /sys/block/zram0/reset 2>/dev/null
    rmmod zram 2>/dev/null
    exit 1
}
: "$SET" "$MODULES_DIR" "$CHUNK_PAGES"
set=$SET exp=$SET.expected dev=/dev/zram0 sys=/sys/block/zram0
if [ ! -s $set ]; then
    {
        cat /bin/busybox $(find "$MODULES_DIR" -name '*.ko' | sort) /init
        for a in $(busybox --list); do busybox $a --help 2>&1; done
        k=0
        while [ $k -le 16 ]; do
            i=0
            while [ $i -lt 8 ]; do
                [ $k -gt 0 ] && dd if=/dev/urandom bs=$((k * 256)) count=1 2>/dev/null
                [ $k -lt 16 ] && dd if=/dev/zero bs=$((4096 - k * 256)) count=1 2>/dev/null
                i=$((i + 1))
            done
            k=$((k + 1))
        done
    } > $set.tmp || fail "making the data set"
    pad=$(( (4096 - $(stat -c %s $set.tmp) % 4096) % 4096 ))
    [ $pad -gt 0 ] && dd if=/dev/zero bs=$pad count=1 2>/dev/null >> $set.tmp
    mv $set.tmp $set
fi
pages=$(( $(stat -c %s $set) / 4096 ))
echo "set pages $pages"
for m in "$@"; do insmod $m || fail "insmod $m"; done
test -b $dev || fail "no $dev after loading zram"
echo 64M > $sys/disksize || fail "setting disksize"
dd if=$set of=$dev bs=4096 2>/dev/null || fail "writing $dev"
sync
blockdev --flushbufs $dev || fail "blockdev --flushbufs"
dd if=$dev bs=4096 count=$pages 2>/dev/null | cmp - $set || fail "read back differs"
echo "mm_stat written $(cat $sys/mm_stat)"
cp $set $exp
chunk=$((CHUNK_PAGES * 4096))
c=1
while [ $(((c + 1) * CHUNK_PAGES)) -le $pages ]; do
    blkdiscard -o $((c * chunk)) -l $chunk $dev || fail "blkdiscard"
    dd if=/dev/zero of=$exp bs=$chunk seek=$c count=1 conv=notrunc 2>/dev/null
    c=$((c + 2))
done
echo "mm_stat discarded $(cat $sys/mm_stat)"
echo 1 > $sys/compact || fail "compact"
echo "mm_stat compacted $(cat $sys/mm_stat)"
blockdev --flushbufs $dev || fail "blockdev --flushbufs"
dd if=$dev bs=4096 count=$pages 2>/dev/null | cmp - $exp || fail "compacted read back differs"
rm -f $exp
echo 1 > $sys/reset || fail "reset"
rmmod zram || fail "rmmod zram"
echo zram-ok
