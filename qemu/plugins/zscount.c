// SPDX-License-Identifier: GPL-2.0
/*
 * zscount - a QEMU TCG plugin that counts the instructions the guest runs
 * in kernel module space, per guest address and per phase.
 *
 * The guest names the phase by running a marker: the 7-byte NOP
 * `nopl MAGIC+PHASE(%rax)` (0f 1f 80 and a 32-bit displacement), which
 * zstest places around each allocator call it measures. The plugin
 * recognises markers by their bytes when it translates them, so it needs
 * no address from the guest and no channel beyond its output file. Two
 * phases are orders: DUMP appends every non-zero count to the output file
 * and zeroes them, RESET zeroes them.
 *
 * QEMU 7.2's API cannot read registers or memory values, and its inline
 * counters are neither atomic nor per vCPU. So every instruction in range
 * gets an execution callback that adds one, atomically, to its address's
 * counter of the current phase, which is one for the whole machine: runs
 * that count do so on a guest where nothing else runs the allocator.
 *
 * Arguments: out=PATH (required), lo=ADDR and hi=ADDR (the counted range,
 * default the x86_64 module area).
 *
 * Output, one block per DUMP:
 *   dump SEQ
 *   PHASE ADDR COUNT      (ADDR in hex, one line per non-zero counter)
 *   end SEQ
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MARK_MAGIC	0x7a730000u	/* "zs" in the high half */
#define MARK_MASK	0xffff0000u
#define MAX_PHASES	32
#define PHASE_RESET	0xfffe
#define PHASE_DUMP	0xffff

struct site {
	uint64_t vaddr;
	uint64_t count[MAX_PHASES];
	struct site *next;	/* in its hash bucket */
	struct site *all;	/* in the list of every site */
};

#define BUCKETS		(1u << 16)

static struct site *buckets[BUCKETS];
static struct site *sites;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned int phase;	/* the current phase, for every vCPU */
static uint64_t lo = 0xffffffffa0000000ull, hi = 0xffffffffff000000ull;
static FILE *out;
static unsigned long dumps;

static struct site *site_of(uint64_t vaddr)
{
	unsigned int b = (unsigned int)((vaddr >> 0) ^ (vaddr >> 16)) & (BUCKETS - 1);
	struct site *s;

	for (s = buckets[b]; s; s = s->next)
		if (s->vaddr == vaddr)
			return s;
	s = calloc(1, sizeof(*s));
	if (!s)
		abort();
	s->vaddr = vaddr;
	s->next = buckets[b];
	buckets[b] = s;
	s->all = sites;
	sites = s;
	return s;
}

static void count(unsigned int vcpu, void *data)
{
	struct site *s = data;

	__atomic_fetch_add(&s->count[__atomic_load_n(&phase, __ATOMIC_RELAXED)], 1,
			   __ATOMIC_RELAXED);
}

/* Every counter to the file (DUMP) or nowhere (RESET), then zeroed. */
static void flush(int write)
{
	struct site *s;
	unsigned int p;

	pthread_mutex_lock(&lock);
	if (write)
		fprintf(out, "dump %lu\n", dumps);
	for (s = sites; s; s = s->all) {
		for (p = 0; p < MAX_PHASES; p++) {
			uint64_t n = __atomic_exchange_n(&s->count[p], 0, __ATOMIC_RELAXED);

			if (n && write)
				fprintf(out, "%u %" PRIx64 " %" PRIu64 "\n", p, s->vaddr, n);
		}
	}
	if (write) {
		fprintf(out, "end %lu\n", dumps++);
		fflush(out);
	}
	pthread_mutex_unlock(&lock);
}

static void mark(unsigned int vcpu, void *data)
{
	unsigned int code = (unsigned int)(uintptr_t)data;

	if (code == PHASE_DUMP)
		flush(1);
	else if (code == PHASE_RESET)
		flush(0);
	else
		__atomic_store_n(&phase, code, __ATOMIC_RELAXED);
}

/* The phase a marker sets, or -1 for any other instruction. */
static int marker(struct qemu_plugin_insn *insn)
{
	const uint8_t *bytes = qemu_plugin_insn_data(insn);
	uint32_t disp;
	unsigned int code;

	if (qemu_plugin_insn_size(insn) != 7 || bytes[0] != 0x0f || bytes[1] != 0x1f ||
	    bytes[2] != 0x80)
		return -1;
	memcpy(&disp, bytes + 3, sizeof(disp));	/* little endian, as the guest */
	if ((disp & MARK_MASK) != MARK_MAGIC)
		return -1;
	code = disp & ~MARK_MASK;
	if (code >= MAX_PHASES && code != PHASE_DUMP && code != PHASE_RESET)
		return -1;
	return (int)code;
}

static void translated(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
	size_t i, n = qemu_plugin_tb_n_insns(tb);

	if (qemu_plugin_tb_vaddr(tb) < lo || qemu_plugin_tb_vaddr(tb) >= hi)
		return;
	pthread_mutex_lock(&lock);
	for (i = 0; i < n; i++) {
		struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
		uint64_t vaddr = qemu_plugin_insn_vaddr(insn);
		int code = marker(insn);

		if (vaddr < lo || vaddr >= hi)
			continue;
		if (code >= 0)
			qemu_plugin_register_vcpu_insn_exec_cb(insn, mark, QEMU_PLUGIN_CB_NO_REGS,
							       (void *)(uintptr_t)code);
		else
			qemu_plugin_register_vcpu_insn_exec_cb(insn, count, QEMU_PLUGIN_CB_NO_REGS,
							       site_of(vaddr));
	}
	pthread_mutex_unlock(&lock);
}

static void finished(qemu_plugin_id_t id, void *data)
{
	if (out)
		fclose(out);
	out = NULL;
}

static int address(const char *text, uint64_t *value)
{
	char *end;

	*value = strtoull(text, &end, 0);
	return *text && !*end;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
					   int argc, char **argv)
{
	const char *path = NULL;
	int i;

	for (i = 0; i < argc; i++) {
		if (!strncmp(argv[i], "out=", 4)) {
			path = argv[i] + 4;
		} else if (!strncmp(argv[i], "lo=", 3) && address(argv[i] + 3, &lo)) {
			continue;
		} else if (!strncmp(argv[i], "hi=", 3) && address(argv[i] + 3, &hi)) {
			continue;
		} else {
			fprintf(stderr, "zscount: bad argument '%s' (out=PATH, lo=ADDR, hi=ADDR)\n",
				argv[i]);
			return -1;
		}
	}
	if (!path || !info->system_emulation || lo >= hi) {
		fprintf(stderr, "zscount: needs out=PATH, system emulation and lo < hi\n");
		return -1;
	}
	out = fopen(path, "w");
	if (!out) {
		perror(path);
		return -1;
	}
	qemu_plugin_register_vcpu_tb_trans_cb(id, translated);
	qemu_plugin_register_atexit_cb(id, finished, NULL);
	return 0;
}
