// SPDX-License-Identifier: GPL-2.0
/*
 * zskit-pageout: push a file's pages out through swap, so through zswap,
 * and check them when they come back.
 *
 * Usage: zskit-pageout FILE DONE
 *
 * Maps anonymous memory of FILE's size (base pages, no THP), copies FILE
 * into it and madvise(MADV_PAGEOUT)s all of it: reclaim compresses every page into
 * zswap's pool (or writes it to the swap device when zswap refuses it).
 * It then prints how many pages are out (VmSwap) and creates the file DONE,
 * so that the caller reads zswap's counters while the pages are out, and
 * waits for SIGUSR1; then it reads every page back (each swap-in a
 * decompression) and compares it with FILE.
 *
 * Output:
 *   pageout pages N swapped K
 *   pageout verified N mismatches M
 * Exit status 0 when every page came back intact, 1 otherwise, 2 on a
 * usage or system error.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif

static volatile sig_atomic_t go;

static void on_usr1(int sig)
{
	(void)sig;
	go = 1;
}

static long vm_swap_kb(void)
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
	return kb;
}

static int fail(const char *what)
{
	perror(what);
	return 2;
}

int main(int argc, char **argv)
{
	long page = sysconf(_SC_PAGESIZE), pages, i, bad = 0;
	struct sigaction sa = { .sa_handler = on_usr1 };
	char *file, *mem;
	struct stat st;
	sigset_t mask, old;
	int fd;

	if (argc != 3) {
		fprintf(stderr, "usage: zskit-pageout FILE DONE\n");
		return 2;
	}
	fd = open(argv[1], O_RDONLY);
	if (fd < 0 || fstat(fd, &st))
		return fail(argv[1]);
	pages = st.st_size / page;
	file = mmap(NULL, pages * page, PROT_READ, MAP_PRIVATE, fd, 0);
	mem = mmap(NULL, pages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!pages || file == MAP_FAILED || mem == MAP_FAILED)
		return fail("mmap");
	/* zswap takes base pages only: 6.1's frontswap_store refuses a THP, which then
	 * goes to the swap device whole. */
	if (madvise(mem, pages * page, MADV_NOHUGEPAGE))
		return fail("madvise(MADV_NOHUGEPAGE)");
	memcpy(mem, file, pages * page);
	if (madvise(mem, pages * page, MADV_PAGEOUT))
		return fail("madvise(MADV_PAGEOUT)");
	printf("pageout pages %ld swapped %ld\n", pages, vm_swap_kb() * 1024 / page);
	fflush(stdout);

	sigemptyset(&mask);
	sigaddset(&mask, SIGUSR1);
	sigprocmask(SIG_BLOCK, &mask, &old);
	sigaction(SIGUSR1, &sa, NULL);
	close(open(argv[2], O_WRONLY | O_CREAT, 0644));
	while (!go)
		sigsuspend(&old);

	for (i = 0; i < pages; i++)
		bad += memcmp(mem + i * page, file + i * page, page) != 0;
	printf("pageout verified %ld mismatches %ld\n", pages, bad);
	return bad ? 1 : 0;
}
