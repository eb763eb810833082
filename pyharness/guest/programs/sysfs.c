// SPDX-License-Identifier: GPL-2.0
/*
 * zskit-sysfs: read one sysfs attribute while another process rewrites it.
 *
 * A static program of the guest image (built by pyharness/guest/programs)
 * for the zram-sysfs-race scenario: the attribute's show and store
 * callbacks run at the same moment on different CPUs, so a show that reads
 * state outside the lock the store holds meets the store's writes (KCSAN
 * reports such a pair; a show that follows a pointer the store freed is a
 * use after free).
 *
 * Usage: zskit-sysfs FILE SECONDS WRITES VALUE...
 * One child, bound to CPU 0, writes the VALUEs to FILE in turn, WRITES
 * times or for SECONDS; the other CPUs each get a child that reads FILE from
 * offset 0 (every read is a new show) without pause until the writer is
 * done. A write may fail (the attribute refuses a value in some states):
 * failures are counted, as are the reads whose text was none of the VALUEs
 * nor "none".
 *
 * Output, one fact a line (parsed by pyharness/check/scenarios/zram_sysfs.py):
 *   sysfs cpus C
 *   sysfs writes W failed F
 *   sysfs reads R odd O        (one line per reader)
 *   sysfs-ok, or sysfs-fail: what (exit status 1)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_VALUES 8
#define MAX_CPUS 64

static volatile int *done;	/* shared: the writer has finished */

static void fail(const char *what)
{
	printf("sysfs-fail: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void bind_to(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		fail("sched_setaffinity");
}

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static int known(const char *text, char **values, int n)
{
	int i;

	if (!strcmp(text, "none"))
		return 1;
	for (i = 0; i < n; i++)
		if (!strcmp(text, values[i]))
			return 1;
	return 0;
}

/* The writer: VALUEs in turn, `max` writes or until the deadline; prints its counts. */
static void writer(const char *file, double end, unsigned long max, char **values, int n)
{
	unsigned long writes = 0, failed = 0;
	int fd, i = 0;

	bind_to(0);
	while (writes < max && now() < end) {
		fd = open(file, O_WRONLY);
		if (fd < 0)
			fail("open for writing");
		if (write(fd, values[i], strlen(values[i])) < 0)
			failed++;
		close(fd);
		writes++;
		i = (i + 1) % n;
	}
	*done = 1;
	printf("sysfs writes %lu failed %lu\n", writes, failed);
	exit(0);
}

/* A reader on `cpu`: reads from offset 0 until the writer is done; prints its counts. */
static void reader(const char *file, int cpu, double end, char **values, int n)
{
	unsigned long reads = 0, odd = 0;
	char buf[4096];
	ssize_t len;
	int fd;

	bind_to(cpu);
	fd = open(file, O_RDONLY);
	if (fd < 0)
		fail("open for reading");
	while (!*done && now() < end + 5) {
		len = pread(fd, buf, sizeof(buf) - 1, 0);
		if (len < 0)
			fail("pread");
		buf[len] = '\0';
		if (len && buf[len - 1] == '\n')
			buf[len - 1] = '\0';
		odd += !known(buf, values, n);
		reads++;
	}
	printf("sysfs reads %lu odd %lu\n", reads, odd);
	exit(0);
}

int main(int argc, char **argv)
{
	int cpus, n, cpu, status, bad = 0;
	unsigned long max;
	double end;
	pid_t pid;

	if (argc < 5 || argc - 4 > MAX_VALUES) {
		fprintf(stderr, "usage: zskit-sysfs FILE SECONDS WRITES VALUE... (1-%d values)\n",
			MAX_VALUES);
		return 2;
	}
	n = argc - 4;
	end = now() + atof(argv[2]);
	max = strtoul(argv[3], NULL, 10);
	done = mmap(NULL, sizeof(*done), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		    -1, 0);
	if (done == MAP_FAILED)
		fail("mmap");
	cpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (cpus < 2 || cpus > MAX_CPUS) {
		printf("sysfs-fail: %d CPUs online: the race needs 2 to %d\n", cpus, MAX_CPUS);
		return 1;
	}
	printf("sysfs cpus %d\n", cpus);
	fflush(stdout);
	for (cpu = 0; cpu < cpus; cpu++) {
		pid = fork();
		if (pid < 0)
			fail("fork");
		if (pid == 0) {
			if (cpu == 0)
				writer(argv[1], end, max, argv + 4, n);
			reader(argv[1], cpu, end, argv + 4, n);
		}
	}
	while (wait(&status) > 0)
		bad |= !WIFEXITED(status) || WEXITSTATUS(status);
	if (bad) {
		printf("sysfs-fail: a child did not exit cleanly\n");
		return 1;
	}
	printf("sysfs-ok\n");
	return 0;
}
