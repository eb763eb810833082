#!/bin/sh
# A tree's kselftest programs, run the way kselftest's runner runs them, with
# its TAP output: a `# selftests: NAME: PROG` line, the program's output with
# "# " before each line, then `ok N ...`, `ok N ... # SKIP` (exit status 4,
# kselftest's skip), `not ok N ... # TIMEOUT T seconds` or `not ok N ... #
# exit=RC`. Each program runs from its directory in a session of its own, so
# that a timeout ends what it started too (its scripts and their dd).
#
# Usage: DIR=PATH NAME=NAME TIMEOUT=SECONDS sh kselftest.sh PROGRAM...
set -u
cd "$DIR" || exit 1
out=/tmp/zskit-kselftest.out expired=/tmp/zskit-kselftest.expired
echo "TAP version 13"
echo "1..$#"
n=0
for prog in "$@"; do
	n=$((n + 1))
	what="selftests: $NAME: $prog"
	echo "# $what"
	rm -f "$expired"
	# Not a group leader, so setsid execs: $! is the session's process group.
	setsid "./$prog" > "$out" 2>&1 < /dev/null &
	pid=$!
	(sleep "$TIMEOUT"; touch "$expired"; kill -TERM -"$pid"; sleep 2; kill -KILL -"$pid") \
		> /dev/null 2>&1 &
	watchdog=$!
	wait "$pid"
	rc=$?
	kill "$watchdog" 2> /dev/null
	sed 's/^/# /' "$out"
	if [ -e "$expired" ]; then
		echo "not ok $n $what # TIMEOUT $TIMEOUT seconds"
	elif [ $rc -eq 0 ]; then
		echo "ok $n $what"
	elif [ $rc -eq 4 ]; then
		echo "ok $n $what # SKIP"
	else
		echo "not ok $n $what # exit=$rc"
	fi
done
