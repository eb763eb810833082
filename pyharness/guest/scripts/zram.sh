#!/bin/sh
# The zram round trip (clients.run_zram, for zskit validate and compare): send a
# data set through /dev/zram0 on the loaded zsmalloc and read it back identical,
# before and after discarding half of it and compacting the pool.
#
# zram must be loaded (the caller loads it, and unloads it afterwards). The data
# set is made once per boot and kept in FILE, so every allocator of the boot gets
# the same bytes. It is written to the device and read back; then every other
# chunk of CHUNK_PAGES pages, from the second, is discarded (this frees objects
# all over the zspages, so compaction has pages to free), the pool compacted,
# and the device read back against the set with those chunks zeroed. With
# BACKING (a block device) and a zram built with writeback, the device writes
# every page back to BACKING (`idle` writeback of all pages marked idle) and is
# read back once more, from there (when BACKING holds the whole set). The
# device is reset at the end, also after a failure, so that zram can unload.
#
# Output: `set pages N`; `mm_stat written|discarded|compacted|writeback <mm_stat
# fields>` after each step; `bd_stat <fields>` after the writeback; `zram-ok`
# at the end, or `zram-fail: what` (exit status 1).
#
# Usage: DATA=pages|image FILE=PATH DISKSIZE=SIZE CHUNK_PAGES=N PAGE=PAGE_SIZE
#        [BACKING=DEV] [COMP=ALGORITHM] [VAR=N of the set...] sh zram.sh
#   FILE        the set: made once (DATA says how) unless it exists, as the
#               bench's corpora do
#   COMP        zram's comp_algorithm (default: the kernel's)
#   DATA=pages  generated pages, in this order (the zero pages stay in the first
#               chunk, which is kept): ZERO_PAGES zero pages (zram keeps
#               same-filled pages out of zsmalloc), TEXT_PAGES of text,
#               MIXED_PAGES whose i-th (from 1) has i * MIXED_STEP random bytes
#               then zeros, RANDOM_PAGES random (incompressible: zsmalloc's huge
#               class)
#   DATA=image  the guest image's binaries (busybox, the modules under MODULES_DIR),
#               text (every applet's help, /init), and pages of known
#               compressibility: k/16 of each page random, the rest zero,
#               k = 0..16, 8 pages each (k = 0 is a zero page); padded to a page
#   DISKSIZE    zram's disksize (at least the set's size)
set -u
dev=/dev/zram0 sys=/sys/block/zram0
fail() {
    echo "zram-fail: $*"
    echo 1 > $sys/reset 2>/dev/null
    exit 1
}
: "$DATA" "$FILE" "$DISKSIZE" "$CHUNK_PAGES" "$PAGE"

pages_set() {
    : "$ZERO_PAGES" "$TEXT_PAGES" "$MIXED_PAGES" "$MIXED_STEP" "$RANDOM_PAGES"
    dd if=/dev/zero bs="$PAGE" count="$ZERO_PAGES" 2>/dev/null
    seq 1 10000000 | head -c $((TEXT_PAGES * PAGE))
    i=1
    while [ $i -le "$MIXED_PAGES" ]; do
        n=$((i * MIXED_STEP))
        dd if=/dev/urandom bs=$n count=1 2>/dev/null
        dd if=/dev/zero bs=$((PAGE - n)) count=1 2>/dev/null
        i=$((i + 1))
    done
    dd if=/dev/urandom bs="$PAGE" count="$RANDOM_PAGES" 2>/dev/null
}

image_set() {
    : "$MODULES_DIR"
    cat /bin/busybox $(find "$MODULES_DIR" -name '*.ko' | sort) /init
    for a in $(busybox --list); do busybox $a --help 2>&1; done
    k=0
    while [ $k -le 16 ]; do
        i=0
        while [ $i -lt 8 ]; do
            [ $k -gt 0 ] && dd if=/dev/urandom bs=$((k * PAGE / 16)) count=1 2>/dev/null
            [ $k -lt 16 ] && dd if=/dev/zero bs=$((PAGE - k * PAGE / 16)) count=1 2>/dev/null
            i=$((i + 1))
        done
        k=$((k + 1))
    done
}

if [ ! -s "$FILE" ]; then
    case $DATA in
    pages)
        pages_set > "$FILE.tmp" || fail "making the data set"
        # Generated to the byte: a short write must not hide in the padding.
        want=$(((ZERO_PAGES + TEXT_PAGES + MIXED_PAGES + RANDOM_PAGES) * PAGE))
        got=$(stat -c %s "$FILE.tmp")
        test "$got" -eq $want || fail "the test data has $got bytes, not $want"
        ;;
    image)
        image_set > "$FILE.tmp" || fail "making the data set"
        ;;
    *)
        fail "unknown data set DATA=$DATA"
        ;;
    esac
    pad=$(( (PAGE - $(stat -c %s "$FILE.tmp") % PAGE) % PAGE ))
    [ $pad -gt 0 ] && dd if=/dev/zero bs=$pad count=1 2>/dev/null >> "$FILE.tmp"
    mv "$FILE.tmp" "$FILE"
fi
pages=$(( $(stat -c %s "$FILE") / PAGE ))
echo "set pages $pages"

test -b $dev || fail "no $dev after loading zram"
wb=
room=$(blockdev --getsize64 "${BACKING:-/nonexistent}" 2>/dev/null || echo 0)
if [ -n "${BACKING:-}" ] && [ -e $sys/backing_dev ] && [ "$room" -ge $((pages * PAGE)) ]; then
    echo "$BACKING" > $sys/backing_dev || fail "setting backing_dev to $BACKING"
    wb=1
fi
if [ -n "${COMP:-}" ]; then
    echo "$COMP" > $sys/comp_algorithm || fail "zram has no compressor $COMP"
fi
echo "$DISKSIZE" > $sys/disksize || fail "setting disksize"
dd if="$FILE" of=$dev bs="$PAGE" 2>/dev/null || fail "writing $dev"
sync
blockdev --flushbufs $dev || fail "blockdev --flushbufs"
dd if=$dev bs="$PAGE" count=$pages 2>/dev/null | cmp - "$FILE" || fail "read back differs"
echo "mm_stat written $(cat $sys/mm_stat)"

exp=$FILE.expected
cp "$FILE" "$exp" || fail "no room for a copy of the set in the guest's memory"
chunk=$((CHUNK_PAGES * PAGE))
c=1
while [ $(((c + 1) * CHUNK_PAGES)) -le $pages ]; do
    blkdiscard -o $((c * chunk)) -l $chunk $dev || fail "blkdiscard"
    dd if=/dev/zero of="$exp" bs=$chunk seek=$c count=1 conv=notrunc 2>/dev/null
    c=$((c + 2))
done
echo "mm_stat discarded $(cat $sys/mm_stat)"
echo 1 > $sys/compact || fail "compact"
echo "mm_stat compacted $(cat $sys/mm_stat)"
blockdev --flushbufs $dev || fail "blockdev --flushbufs"
dd if=$dev bs="$PAGE" count=$pages 2>/dev/null | cmp - "$exp" \
    || fail "read back after discard and compaction differs"
if [ -n "$wb" ]; then
    echo all > $sys/idle || fail "marking every page idle"
    # A write() answered with 0 bytes is retried by the shell without end.
    timeout 20 sh -c "echo idle > $sys/writeback"
    rc=$?
    case $rc in
    0) ;;
    124|143) fail "writing idle to $sys/writeback did not return in 20 s" \
        "(a write answered with 0 bytes written is retried forever)" ;;
    *) fail "writing idle to $sys/writeback failed (exit status $rc)" ;;
    esac
    echo "bd_stat $(cat $sys/bd_stat)"
    echo "mm_stat writeback $(cat $sys/mm_stat)"
    blockdev --flushbufs $dev || fail "blockdev --flushbufs"
    dd if=$dev bs="$PAGE" count=$pages 2>/dev/null | cmp - "$exp" \
        || fail "read back after writeback to $BACKING differs"
fi
rm -f "$exp"
echo 1 > $sys/reset || fail "reset"
echo zram-ok
