// SPDX-License-Identifier: GPL-2.0
/*
 * zskit-agent: carry zstest batches and their results over a virtio-serial
 * port, the guest's fast channel (pyharness/guest/channel.py is the host's
 * half). One process for the whole run: no shell round trip and no fork per
 * batch, and no tty between the harness and the driver.
 *
 * Usage: zskit-agent PORT CTL CLASSES_DIR
 *
 * Requests, from the host:
 *   b LEN\n + LEN bytes   one batch: a single write() of the bytes to CTL,
 *                         then CTL read back from offset 0
 *   c POOL\n              CLASSES_DIR/POOL/classes, read whole
 *   d NAME\n              the file NAME beside CTL (zstest's pages), read
 *                         whole
 *   f NAME LEN\n + LEN bytes
 *                         a file, written whole to UPLOADS/NAME (a name of
 *                         letters, digits, '.', '_' and '-', not starting
 *                         with '.'), replacing it only once complete:
 *                         `zskit dev` brings rebuilt modules this way
 *   p\n                   ping
 * Answers:
 *   r LEN\n + LEN bytes   what was read (nothing for a ping or a file)
 *   x ERRNO\n             the write, the open or the read failed with ERRNO
 * The harness checks every byte of a result as it checks one read over the
 * shell; the agent only moves them. A request it cannot parse ends it (exit
 * status 2): the host then sees the port close.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_REQUEST (8 << 20)	/* above the driver's 4 MiB batch limit */
#define MAX_ANSWER (32 << 20)	/* above its 16 MiB result limit */
#define MAX_HEADER 128
#define UPLOADS "/lib/modules/zskit/dev"
#define NAME_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"

static int port;
static char *buf, *answer;

static void put_all(const char *data, size_t len)
{
	while (len) {
		ssize_t n = write(port, data, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			exit(3);
		data += n;
		len -= n;
	}
}

/*
 * A port whose host end is not connected reads as end of file: the agent
 * starts at boot, before the harness connects, so it waits for it.
 */
static void get_all(char *data, size_t len)
{
	while (len) {
		ssize_t n = read(port, data, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0) {
			usleep(10000);
			continue;
		}
		if (n < 0)
			exit(3);
		data += n;
		len -= n;
	}
}

/* One header line, without its newline; exits on a line that never ends. */
static void get_line(char *line)
{
	size_t i;

	for (i = 0; i < MAX_HEADER - 1; i++) {
		get_all(&line[i], 1);
		if (line[i] == '\n') {
			line[i] = '\0';
			return;
		}
	}
	exit(2);
}

static void reply_errno(int err)
{
	char head[32];

	put_all(head, snprintf(head, sizeof(head), "x %d\n", err));
}

/* The whole file from offset 0, as one answer. */
static void reply_file(int fd)
{
	char head[32];
	size_t len = 0;
	ssize_t n;

	while ((n = pread(fd, answer + len, MAX_ANSWER - len, len)) > 0)
		len += n;
	if (n < 0) {
		reply_errno(errno);
		return;
	}
	put_all(head, snprintf(head, sizeof(head), "r %zu\n", len));
	put_all(answer, len);
}

static void batch(const char *ctl, size_t len)
{
	int fd;

	get_all(buf, len);
	fd = open(ctl, O_RDWR);
	if (fd < 0) {
		reply_errno(errno);
		return;
	}
	if (write(fd, buf, len) != (ssize_t)len)
		reply_errno(errno ? errno : EIO);
	else
		reply_file(fd);
	close(fd);
}

static void reply_path(const char *path)
{
	int fd = open(path, O_RDONLY);

	if (fd < 0) {
		reply_errno(errno);
		return;
	}
	reply_file(fd);
	close(fd);
}

static void classes(const char *dir, const char *pool)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/%s/classes", dir, pool);
	reply_path(path);
}

/* The file NAME in the directory of CTL. */
static void beside(const char *ctl, const char *name)
{
	const char *slash = strrchr(ctl, '/');
	char path[256];

	snprintf(path, sizeof(path), "%.*s/%s", (int)(slash ? slash - ctl : 1), ctl, name);
	reply_path(path);
}

static int write_whole(const char *path, const char *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	if (fd < 0)
		return -errno;
	while (len) {
		ssize_t n = write(fd, data, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int err = n < 0 ? -errno : -EIO;

			close(fd);
			return err;
		}
		data += n;
		len -= n;
	}
	return close(fd) ? -errno : 0;
}

/*
 * NAME LEN: the bytes are read before the name is judged, so that a refused
 * name keeps the framing; a header that does not parse ends the agent.
 */
static int upload(const char *args)
{
	char name[MAX_HEADER], path[MAX_HEADER + 32], tmp[MAX_HEADER + 40];
	unsigned long len;
	char end;
	int err;

	if (sscanf(args, "%127s %lu%c", name, &len, &end) != 2 || len > MAX_REQUEST)
		exit(2);
	get_all(buf, len);
	if (name[0] == '.' || strspn(name, NAME_CHARS) != strlen(name))
		return -EINVAL;
	if (mkdir(UPLOADS, 0755) && errno != EEXIST)
		return -errno;
	snprintf(path, sizeof(path), UPLOADS "/%s", name);
	snprintf(tmp, sizeof(tmp), "%s.part", path);
	err = write_whole(tmp, buf, len);
	if (!err && rename(tmp, path))
		err = -errno;
	if (err)
		unlink(tmp);
	return err;
}

int main(int argc, char **argv)
{
	char line[MAX_HEADER], *end;
	unsigned long len;

	if (argc != 4) {
		fprintf(stderr, "usage: zskit-agent PORT CTL CLASSES_DIR\n");
		return 2;
	}
	port = open(argv[1], O_RDWR);
	buf = malloc(MAX_REQUEST);
	answer = malloc(MAX_ANSWER);
	if (port < 0 || !buf || !answer) {
		perror("zskit-agent");
		return 1;
	}
	for (;;) {
		get_line(line);
		if (!strcmp(line, "p")) {
			put_all("r 0\n", 4);
		} else if (!strncmp(line, "b ", 2)) {
			errno = 0;
			len = strtoul(line + 2, &end, 10);
			if (errno || *end || end == line + 2 || len > MAX_REQUEST)
				return 2;
			batch(argv[2], len);
		} else if (!strncmp(line, "c ", 2) && line[2] && !strchr(line + 2, '/')) {
			classes(argv[3], line + 2);
		} else if (!strncmp(line, "d ", 2) && line[2] &&
			   strspn(line + 2, NAME_CHARS) == strlen(line + 2) && line[2] != '.') {
			beside(argv[2], line + 2);
		} else if (!strncmp(line, "f ", 2)) {
			int err = upload(line + 2);

			if (err)
				reply_errno(-err);
			else
				put_all("r 0\n", 4);
		} else {
			return 2;
		}
	}
}
