// SPDX-License-Identifier: GPL-2.0
/*
 * zskit-swapper: dirty anonymous memory, push it to swap, read it back.
 *
 * A static program of the guest image (built by pyharness/guest/programs):
 * the zram-swap and pressure scenarios run it with a zram device as the
 * guest's swap, so every page it swaps out is an object of the allocator
 * under test and every page it reads back was decompressed from it.
 *
 * The parent forks PROCS processes, bound round-robin to the first CPUS
 * CPUs; with -H it then locks HOG MiB of its own memory (a hog, so that the
 * processes' pages exceed what is left and reclaim runs), and lets them
 * start. Each maps PAGES anonymous pages of its own and, every round:
 *   1. fills each page with a pattern of (SEED, process, round, page) of a
 *      known compressibility: zero (zram keeps same-filled pages out of
 *      zsmalloc), text-like (compressible), mixed (a random head of some
 *      length, then zeros: one size class or another) or random
 *      (incompressible: zsmalloc's huge class), drawn with the weights of -k;
 *   2. reads its VmSwap from /proc/self/status (pages reclaim took while it
 *      filled), madvise(MADV_PAGEOUT)s the whole mapping (reclaim writes it
 *      to swap) and reads VmSwap again;
 *   3. waits at a barrier until every process has paged out (the parent
 *      then reads zram's mm_stat, -m), reads every page back and compares.
 * Rounds go on until ROUNDS are done or SECONDS have passed (a round always
 * completes). At the end every process pages out once more, waits at a
 * last barrier and then all of them unmap at once: the frees of their swap
 * entries, hence of zsmalloc objects, race on every CPU (the pattern behind
 * the 2026 zs_free lock-contention work).
 *
 * Output, one fact a line (parsed by pyharness/check/scenarios/zram_swap.py):
 *   swapper procs P pages N cpus C rounds R seed S
 *   swapper hog MIB                   (with -H: locked)
 *   swapper round R reclaimed K       (pages, the sum of VmSwap before pageout)
 *   swapper round R swapped K         (pages, the sum of VmSwap after pageout)
 *   mm_stat round-R <mm_stat fields>  (all processes paged out)
 *   swapper round R verified V mismatches M
 *   swapper mismatch proc I round R page G offset O kind K  (the first few)
 *   swapper final swapped K
 *   mm_stat final <mm_stat fields>
 *   swapper unmap_us U                (from the last barrier to the last exit)
 *   swapper summary written W verified V mismatches M swapped S rounds R seconds X
 *   swapper-ok, or swapper-fail: what (exit status 1)
 *
 * Test-only: with ZSKIT_SWAPPER_CORRUPT=1 in its environment, process 0 flips
 * one byte of one page after reading it back in round 0, before comparing, so
 * a test can prove that a mismatch is reported. Nothing in zskit sets it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif

#define PAGE 4096
#define MAX_PROCS 64
#define MAX_REPORTED 8 /* mismatches printed per process and round */
#define TEXT_LEN (4 * PAGE)

enum kind { ZERO, TEXT, MIXED, RANDOM, KINDS };
static const char *const kind_name[KINDS] = { "zero", "text", "mixed", "random" };

enum msg_type { MSG_SWAPPED, MSG_VERIFIED, MSG_MISMATCH };

struct msg {
	int type;
	int proc;
	int round;
	long value;		/* swapped pages or verified pages */
	long before;		/* MSG_SWAPPED: swapped pages before the pageout */
	long mismatches;
	long page;		/* MSG_MISMATCH: where */
	long offset;
	int kind;
};

struct options {
	int procs;
	long pages;
	int rounds;
	int cpus;
	int seconds;
	uint64_t seed;
	unsigned int weight[KINDS];
	const char *mm_stat;
	int corrupt;
	long hog;		/* MiB */
};

static struct options opt = {
	.procs = 2, .pages = 256, .rounds = 1, .cpus = 1, .seconds = 30,
	.seed = 1, .weight = { 1, 5, 2, 2 },
};

static char text[TEXT_LEN];

static void die(const char *fmt, ...)
{
	va_list ap;

	printf("swapper-fail: ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	exit(1);
}

static uint64_t mix(uint64_t x)
{
	/* splitmix64's finalizer */
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static uint64_t page_key(int proc, int round, long page)
{
	return mix(opt.seed ^ mix(((uint64_t)proc << 48) ^ ((uint64_t)round << 32) ^
				  (uint64_t)page));
}

static enum kind kind_of(uint64_t key)
{
	unsigned int total = 0, pick, k;

	for (k = 0; k < KINDS; k++)
		total += opt.weight[k];
	pick = (unsigned int)(key % total);
	for (k = 0; k < KINDS; k++) {
		if (pick < opt.weight[k])
			return (enum kind)k;
		pick -= opt.weight[k];
	}
	return TEXT;
}

static void random_bytes(unsigned char *p, size_t len, uint64_t state)
{
	size_t i;

	for (i = 0; i < len; i += 8) {
		uint64_t v;

		state = mix(state);
		v = state;
		memcpy(p + i, &v, len - i < 8 ? len - i : 8);
	}
}

/* The page's content: what fill() writes and verify() expects. */
static enum kind pattern(unsigned char *p, int proc, int round, long page)
{
	uint64_t key = page_key(proc, round, page);
	enum kind kind = kind_of(key);
	size_t head;

	switch (kind) {
	case ZERO:
		memset(p, 0, PAGE);
		break;
	case TEXT:
		memcpy(p, text + (key >> 20) % (TEXT_LEN - PAGE), PAGE);
		/* A stamp, so that no two text pages are the same and none is stale. */
		snprintf((char *)p, 64, "<%d %d %ld %016llx>", proc, round, page,
			 (unsigned long long)key);
		break;
	case MIXED:
		head = 64 + (key >> 24) % (PAGE - 128);
		random_bytes(p, head, key);
		memset(p + head, 0, PAGE - head);
		break;
	default:
		random_bytes(p, PAGE, key);
		break;
	}
	return kind;
}

static void make_text(void)
{
	static const char *const words[] = {
		"zsmalloc", "zspage", "class", "object", "handle", "compaction", "the",
		"of", "a", "page", "swap", "zram", "memory", "pool", "free", "map",
		"migrate", "lock", "size", "huge", "and", "to", "in", "is",
	};
	uint64_t state = mix(opt.seed ^ 0x74657874);
	size_t n = 0;

	while (n < TEXT_LEN - 1) {
		const char *w;
		size_t len;

		state = mix(state);
		w = words[state % (sizeof(words) / sizeof(words[0]))];
		len = strlen(w);
		if (n + len + 1 >= TEXT_LEN)
			break;
		memcpy(text + n, w, len);
		n += len;
		text[n++] = (state >> 40) % 11 ? ' ' : '\n';
	}
	memset(text + n, '.', TEXT_LEN - n);
}

static long vm_swap_pages(void)
{
	char line[256];
	long kb = -1;
	FILE *f = fopen("/proc/self/status", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmSwap: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb < 0 ? -1 : kb / (PAGE / 1024);
}

static void write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			_exit(3);
		p += n;
		len -= (size_t)n;
	}
}

/* 1 when all of buf was read, 0 at end of file. */
static int read_all(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len) {
		ssize_t n = read(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return 0;
		p += n;
		len -= (size_t)n;
	}
	return 1;
}

static void send_msg(int fd, int type, int proc, int round, long value, long mismatches,
		     long before)
{
	struct msg m = { .type = type, .proc = proc, .round = round, .value = value,
			 .mismatches = mismatches, .before = before };

	write_all(fd, &m, sizeof(m));
}

static void pageout(unsigned char *mem, long pages)
{
	if (madvise(mem, (size_t)pages * PAGE, MADV_PAGEOUT))
		_exit(4);
}

/* One process: returns only through _exit (0: done, 2: told to stop). */
static void child(int proc, int up, int down)
{
	unsigned char expect[PAGE];
	unsigned char *mem;
	cpu_set_t set;
	char cmd;
	int round;
	long page;

	CPU_ZERO(&set);
	CPU_SET(proc % opt.cpus, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		_exit(5);
	if (!read_all(down, &cmd, 1) || cmd != 'g')
		_exit(2);
	mem = mmap(NULL, (size_t)opt.pages * PAGE, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		_exit(6);
	for (round = 0;; round++) {
		long mismatches = 0, reclaimed;

		for (page = 0; page < opt.pages; page++)
			pattern(mem + page * PAGE, proc, round, page);
		reclaimed = vm_swap_pages();
		pageout(mem, opt.pages);
		send_msg(up, MSG_SWAPPED, proc, round, vm_swap_pages(), 0, reclaimed);
		if (!read_all(down, &cmd, 1) || cmd != 'v')
			_exit(2);
		for (page = 0; page < opt.pages; page++) {
			unsigned char *p = mem + page * PAGE;
			enum kind kind;
			long off;

			kind = pattern(expect, proc, round, page);
			/* Test-only (see the top of the file): one byte of one page flipped. */
			if (opt.corrupt && proc == 0 && round == 0 && page == opt.pages / 2)
				p[PAGE / 3] ^= 0x5a;
			if (!memcmp(p, expect, PAGE))
				continue;
			for (off = 0; off < PAGE && p[off] == expect[off]; off++)
				;
			if (mismatches++ < MAX_REPORTED) {
				struct msg m = { .type = MSG_MISMATCH, .proc = proc,
						 .round = round, .page = page, .offset = off,
						 .kind = kind };

				write_all(up, &m, sizeof(m));
			}
		}
		send_msg(up, MSG_VERIFIED, proc, round, opt.pages, mismatches, 0);
		if (!read_all(down, &cmd, 1))
			_exit(2);
		if (cmd == 'e')
			break;
		if (cmd != 'n')
			_exit(2);
	}
	/* The last pageout, then the barrier: all processes unmap at once. */
	pageout(mem, opt.pages);
	send_msg(up, MSG_SWAPPED, proc, -1, vm_swap_pages(), 0, 0);
	if (!read_all(down, &cmd, 1) || cmd != 'u')
		_exit(2);
	if (munmap(mem, (size_t)opt.pages * PAGE))
		_exit(7);
	_exit(0);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void print_mm_stat(const char *moment)
{
	char buf[512];
	size_t n;
	FILE *f;

	if (!opt.mm_stat)
		return;
	f = fopen(opt.mm_stat, "r");
	if (!f)
		die("cannot open %s: %s", opt.mm_stat, strerror(errno));
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	buf[strcspn(buf, "\n")] = 0;
	printf("mm_stat %s %s\n", moment, buf);
}

static pid_t pids[MAX_PROCS];
static int ups[MAX_PROCS], downs[MAX_PROCS];

static void kill_all(void)
{
	int i;

	for (i = 0; i < opt.procs; i++)
		if (pids[i] > 0)
			kill(pids[i], SIGKILL);
	while (wait(NULL) > 0)
		;
}

/* Why process i is gone, once its pipe ended early. */
static void lost(int i)
{
	int status = 0;

	waitpid(pids[i], &status, 0);
	pids[i] = 0;
	kill_all();
	if (WIFSIGNALED(status))
		die("process %d killed by signal %d (%s)%s", i, WTERMSIG(status),
		    strsignal(WTERMSIG(status)),
		    WTERMSIG(status) == SIGKILL ? ": the OOM killer? see dmesg" : "");
	die("process %d exited %d before the end (3: pipe, 4: madvise, 5: affinity, "
	    "6: mmap, 7: munmap)", i, WEXITSTATUS(status));
}

static void tell_all(char cmd)
{
	int i;

	for (i = 0; i < opt.procs; i++)
		write_all(downs[i], &cmd, 1);
}

/* A message of type `want` from every process; mismatch reports on the way. */
static long gather(int want, int round, long *mismatches, long *before)
{
	long total = 0;
	struct msg m;
	int i;

	for (i = 0; i < opt.procs; i++) {
		for (;;) {
			if (!read_all(ups[i], &m, sizeof(m)))
				lost(i);
			if (m.type != MSG_MISMATCH)
				break;
			printf("swapper mismatch proc %d round %d page %ld offset %ld kind %s\n",
			       m.proc, m.round, m.page, m.offset, kind_name[m.kind]);
		}
		if (m.type != want || m.round != round) {
			kill_all();
			die("process %d out of step: message %d of round %d, expected %d of %d",
			    i, m.type, m.round, want, round);
		}
		total += m.value;
		if (mismatches)
			*mismatches += m.mismatches;
		if (before)
			*before += m.before;
	}
	return total;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: zskit-swapper [-p PROCS] [-n PAGES] [-r ROUNDS] [-c CPUS] [-t SECONDS]\n"
		"                     [-s SEED] [-k ZERO:TEXT:MIXED:RANDOM] [-m MM_STAT] [-H MIB]\n"
		"  PAGES per process; weights of the page kinds (default 1:5:2:2)\n");
	exit(2);
}

/* long long: a seed takes 63 bits on 32-bit machines too. */
static long long number(const char *s, long long lo, long long hi, const char *what)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 0);
	if (errno || *end || v < lo || v > hi)
		die("%s must be a number in %lld..%lld, not %s", what, lo, hi, s);
	return v;
}

static void parse(int argc, char **argv)
{
	const char *env = getenv("ZSKIT_SWAPPER_CORRUPT");
	unsigned int w[KINDS];
	int c;

	while ((c = getopt(argc, argv, "p:n:r:c:t:s:k:m:H:")) != -1) {
		switch (c) {
		case 'p':
			opt.procs = (int)number(optarg, 1, MAX_PROCS, "PROCS");
			break;
		case 'n':
			opt.pages = (long)number(optarg, 1, 1L << 24, "PAGES");
			break;
		case 'r':
			opt.rounds = (int)number(optarg, 1, 100000, "ROUNDS");
			break;
		case 'c':
			opt.cpus = (int)number(optarg, 1, CPU_SETSIZE, "CPUS");
			break;
		case 't':
			opt.seconds = (int)number(optarg, 1, 3600, "SECONDS");
			break;
		case 's':
			opt.seed = (uint64_t)number(optarg, 0, 0x7fffffffffffffffLL, "SEED");
			break;
		case 'k':
			if (sscanf(optarg, "%u:%u:%u:%u", &w[0], &w[1], &w[2], &w[3]) != 4 ||
			    !(w[0] + w[1] + w[2] + w[3]))
				die("-k takes four weights ZERO:TEXT:MIXED:RANDOM, not %s", optarg);
			memcpy(opt.weight, w, sizeof(w));
			break;
		case 'm':
			opt.mm_stat = optarg;
			break;
		case 'H':
			opt.hog = (long)number(optarg, 0, 1L << 20, "HOG");
			break;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
	opt.corrupt = env && !strcmp(env, "1");
}

int main(int argc, char **argv)
{
	long written = 0, verified = 0, mismatches = 0, swapped = 0, k;
	double start, deadline, barrier;
	int i, round;

	parse(argc, argv);
	setvbuf(stdout, NULL, _IOLBF, 0);
	make_text();
	printf("swapper procs %d pages %ld cpus %d rounds %d seed %llu\n", opt.procs,
	       opt.pages, opt.cpus, opt.rounds, (unsigned long long)opt.seed);
	start = now();
	deadline = start + opt.seconds;
	for (i = 0; i < opt.procs; i++) {
		int up[2], down[2];

		if (pipe(up) || pipe(down))
			die("pipe: %s", strerror(errno));
		pids[i] = fork();
		if (pids[i] < 0) {
			kill_all();
			die("fork: %s", strerror(errno));
		}
		if (pids[i] == 0) {
			int j;

			for (j = 0; j < i; j++) {
				close(ups[j]);
				close(downs[j]);
			}
			close(up[0]);
			close(down[1]);
			child(i, up[1], down[0]);
		}
		close(up[1]);
		close(down[0]);
		ups[i] = up[0];
		downs[i] = down[1];
	}
	if (opt.hog) {
		size_t len = (size_t)opt.hog << 20;
		void *hog = mmap(NULL, len, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

		if (hog == MAP_FAILED || mlock(hog, len)) {
			kill_all();
			die("cannot lock %ld MiB: %s", opt.hog, strerror(errno));
		}
		printf("swapper hog %ld\n", opt.hog);
	}
	tell_all('g');
	for (round = 0;; round++) {
		long bad = 0, reclaimed = 0;

		k = gather(MSG_SWAPPED, round, NULL, &reclaimed);
		written += opt.procs * opt.pages;
		swapped += k;
		printf("swapper round %d reclaimed %ld\n", round, reclaimed);
		printf("swapper round %d swapped %ld\n", round, k);
		{
			char moment[32];

			snprintf(moment, sizeof(moment), "round-%d", round);
			print_mm_stat(moment);
		}
		tell_all('v');
		k = gather(MSG_VERIFIED, round, &bad, NULL);
		verified += k;
		mismatches += bad;
		printf("swapper round %d verified %ld mismatches %ld\n", round, k, bad);
		if (round + 1 >= opt.rounds || now() >= deadline) {
			tell_all('e');
			break;
		}
		tell_all('n');
	}
	k = gather(MSG_SWAPPED, -1, NULL, NULL);
	printf("swapper final swapped %ld\n", k);
	print_mm_stat("final");
	barrier = now();
	tell_all('u');
	for (i = 0; i < opt.procs; i++) {
		int status;

		if (waitpid(pids[i], &status, 0) < 0 || !WIFEXITED(status) ||
		    WEXITSTATUS(status)) {
			pids[i] = 0;
			kill_all();
			die("process %d did not unmap and exit cleanly (status 0x%x)", i, status);
		}
		pids[i] = 0;
	}
	printf("swapper unmap_us %ld\n", (long)((now() - barrier) * 1e6));
	printf("swapper summary written %ld verified %ld mismatches %ld swapped %ld rounds %d "
	       "seconds %.3f\n", written, verified, mismatches, swapped, round + 1,
	       now() - start);
	if (mismatches)
		die("%ld of %ld pages read back differ from what was written", mismatches,
		    verified);
	printf("swapper-ok\n");
	return 0;
}
