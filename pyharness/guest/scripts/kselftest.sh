#!/bin/sh
# A tree's kselftest programs, run the way kselftest's runner runs them, with
# its TAP output: a `# selftests: NAME: PROG` line, the program's output with
# "# " before each line, then `ok N ...`, `ok N ... # SKIP` (exit status 4,
# kselftest's skip), `not ok N ... # TIMEOUT T seconds` or `not ok N ... #
# exit=RC`. Each program runs from its directory under `timeout`.
#
# Usage: DIR=PATH NAME=NAME TIMEOUT=SECONDS sh kselftest.sh PROGRAM...
set -u
cd "$DIR" || exit 1
echo "TAP version 13"
echo "1..$#"
n=0
for prog in "$@"; do
	n=$((n + 1))
	what="selftests: $NAME: $prog"
	echo "# $what"
	timeout "$TIMEOUT" "./$prog" > /tmp/zskit-kselftest.out 2>&1 < /dev/null
	rc=$?
	sed 's/^/# /' /tmp/zskit-kselftest.out
	case $rc in
	0) echo "ok $n $what" ;;
	4) echo "ok $n $what # SKIP" ;;
	124|137|143) echo "not ok $n $what # TIMEOUT $TIMEOUT seconds" ;;
	*) echo "not ok $n $what # exit=$rc" ;;
	esac
done
