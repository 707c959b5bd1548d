/*
 * Linux's side of `cargo xtask bench --vs linux`: the counterparts of
 * Wyvern's benchmarks, run as /init of an initramfs under the same QEMU.
 *
 * It mounts /sys and /proc, brings CPUs 1..N-1 online (Linux boots with
 * `maxcpus=1`: QEMU 7.2's icount livelocks on the spin-wait of Linux's SMP
 * bring-up, and a running Linux pauses in its waits), runs each benchmark
 * at the CPU counts Wyvern's does, and prints the lines Wyvern's kernel
 * prints in bench mode (kernel/src/bench/mod.rs):
 *
 *   BENCH {"type":"header","version":…,"ncpus":N,"tsc_hz":…,"hz":…,"set":…,"reps":R,"count":C}
 *   BENCH {"type":"result","name":…,"cpus":K,"unit":…,"ops":OPS,"tsc":[T1,…],"counters":{…}}
 *   BENCH {"type":"end","count":C}
 *
 * then powers the machine off. As in Wyvern, a repetition's figure is the
 * TSC from the earliest measured start to the latest measured end over all
 * parties, and its operations the sum of theirs: under `-icount shift=S`
 * the TSC advances 2^S per guest instruction of any CPU, so a figure is
 * the instructions of the whole machine per operation. Each benchmark runs
 * one warm-up repetition, then R measured ones. Parties are threads pinned
 * with sched_setaffinity where Wyvern places its threads; they meet at a
 * pthread barrier (a futex: waiting CPUs sleep, as at Wyvern's gates).
 *
 * Counters, deltas over the measured repetitions, summed over all CPUs:
 * `switches` (/proc/stat ctxt), `ticks` (LOC in /proc/interrupts: local
 * timer interrupts) and `ipis` (RES + CAL: reschedule and function-call
 * IPIs).
 *
 * Options come as init's environment from the kernel command line:
 * wyvern_reps=R, wyvern_percent=P (operations as a percentage of each
 * benchmark's default), wyvern_hz=HZ (CONFIG_HZ, for the header).
 *
 * Run as `true` (argv[0]), it exits at once: the program
 * process-spawn-exit starts.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_CPUS 64
#define MAX_REPS 64

static int reps = 5;
static int percent = 100;
static int ncpus = 1;

static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}

static void die(const char *what)
{
	printf("bench: FAILED: %s: %s\n", what, strerror(errno));
	fflush(stdout);
	reboot(RB_POWER_OFF);
	_exit(1);
}

static void pin(int cpu)
{
	cpu_set_t s;
	CPU_ZERO(&s);
	CPU_SET(cpu, &s);
	if (sched_setaffinity(0, sizeof s, &s))
		die("sched_setaffinity");
}

/* ---- counters ---- */

struct counters {
	uint64_t switches, ticks, ipis;
};

static uint64_t sum_line(const char *text, const char *label)
{
	const char *p = strstr(text, label);
	uint64_t sum = 0;
	if (!p)
		return 0;
	p += strlen(label);
	for (int cpu = 0; cpu < ncpus; cpu++) {
		char *end;
		unsigned long long v = strtoull(p, &end, 10);
		if (end == p)
			break;
		sum += v;
		p = end;
	}
	return sum;
}

static void read_counters(struct counters *c)
{
	static char buf[1 << 16];
	int fd = open("/proc/stat", O_RDONLY);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
	if (fd >= 0)
		close(fd);
	buf[n > 0 ? n : 0] = 0;
	const char *p = strstr(buf, "\nctxt ");
	c->switches = p ? strtoull(p + 6, NULL, 10) : 0;
	fd = open("/proc/interrupts", O_RDONLY);
	n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
	if (fd >= 0)
		close(fd);
	buf[n > 0 ? n : 0] = 0;
	c->ticks = sum_line(buf, "LOC:");
	c->ipis = sum_line(buf, "RES:") + sum_line(buf, "CAL:");
}

/* ---- parties ---- */

struct span {
	uint64_t start, end, ops;
};

/* A party's body: returns 1 and fills `span` if it measured. */
typedef int (*body_fn)(int party, void *arg, struct span *span);

struct party {
	pthread_t thread;
	int index, cpu, measured;
	body_fn body;
	void *arg;
	struct span span;
	pthread_barrier_t *start, *end;
};

/* Between the start barrier and the body's first timestamp: so that a
 * body can do its unmeasured set-up first, it calls gate() itself. */
static __thread pthread_barrier_t *my_gate;

static void gate(void)
{
	pthread_barrier_wait(my_gate);
}

static void *party_main(void *p)
{
	struct party *me = p;
	pin(me->cpu);
	my_gate = me->start;
	me->measured = me->body(me->index, me->arg, &me->span);
	pthread_barrier_wait(me->end);
	return NULL;
}

struct rep {
	uint64_t tsc, ops;
};

/* Runs body(i) in a thread on cpus[i] for every party; folds the spans. */
static struct rep run_parties(int n, const int *cpus, body_fn body, void *arg)
{
	struct party parties[2 * MAX_CPUS];
	pthread_barrier_t start, end;
	pthread_barrier_init(&start, NULL, n);
	pthread_barrier_init(&end, NULL, n);
	for (int i = 0; i < n; i++) {
		parties[i] = (struct party){ .index = i, .cpu = cpus[i], .body = body,
					     .arg = arg, .start = &start, .end = &end };
		if (pthread_create(&parties[i].thread, NULL, party_main, &parties[i]))
			die("pthread_create");
	}
	uint64_t first = UINT64_MAX, last = 0, ops = 0;
	for (int i = 0; i < n; i++) {
		pthread_join(parties[i].thread, NULL);
		if (!parties[i].measured)
			continue;
		if (parties[i].span.start < first)
			first = parties[i].span.start;
		if (parties[i].span.end > last)
			last = parties[i].span.end;
		ops += parties[i].span.ops;
	}
	pthread_barrier_destroy(&start);
	pthread_barrier_destroy(&end);
	return (struct rep){ .tsc = last - first, .ops = ops };
}

/* ---- workloads: each runs one repetition of n operations per party on k CPUs ---- */

static long iters;

/* null-syscall: getppid() through syscall(2). */
static int null_body(int p, void *a, struct span *s)
{
	(void)p, (void)a;
	gate();
	s->start = rdtsc();
	for (long i = 0; i < iters; i++)
		syscall(SYS_getppid);
	s->end = rdtsc();
	s->ops = iters;
	return 1;
}

static struct rep null_syscall(int k)
{
	(void)k;
	int cpus[] = { 0 };
	return run_parties(1, cpus, null_body, NULL);
}

/* switch: two threads of one process on each CPU yield to each other;
 * each sched_yield is a system call and a switch. */
struct flag {
	_Alignas(64) atomic_int v;
};
static struct flag stop[MAX_CPUS];

static int switch_body(int p, void *a, struct span *s)
{
	(void)a;
	atomic_int *done = &stop[p / 2].v;
	gate();
	if (p % 2) {
		while (!atomic_load(done))
			sched_yield();
		return 0;
	}
	s->start = rdtsc();
	for (long i = 0; i < iters; i++)
		sched_yield();
	s->end = rdtsc();
	/* Each yield is two switches: to the partner and back. */
	s->ops = 2 * iters;
	atomic_store(done, 1);
	return 1;
}

static struct rep yield_switch(int k)
{
	int cpus[2 * MAX_CPUS];
	for (int c = 0; c < k; c++) {
		cpus[2 * c] = cpus[2 * c + 1] = c;
		atomic_store(&stop[c].v, 0);
	}
	return run_parties(2 * k, cpus, switch_body, NULL);
}

/* wakeup-*: FUTEX_WAKE / FUTEX_WAIT ping-pong between the two parties of
 * a pair; an operation is one wakeup with its sleep and switch. */
static struct flag baton[MAX_CPUS];

static void futex_wait(atomic_int *w, int val)
{
	syscall(SYS_futex, w, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(atomic_int *w)
{
	syscall(SYS_futex, w, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static int pingpong_body(int p, void *a, struct span *s)
{
	(void)a;
	atomic_int *b = &baton[p / 2].v;
	gate();
	if (p % 2) {
		for (long i = 0; i < iters; i++) {
			while (atomic_load(b) != 1)
				futex_wait(b, 0);
			atomic_store(b, 0);
			futex_wake(b);
		}
		return 0;
	}
	s->start = rdtsc();
	for (long i = 0; i < iters; i++) {
		atomic_store(b, 1);
		futex_wake(b);
		while (atomic_load(b) != 0)
			futex_wait(b, 1);
	}
	s->end = rdtsc();
	s->ops = 2 * iters;
	return 1;
}

static struct rep ping_pong(int pairs, const int *cpus)
{
	for (int i = 0; i < pairs; i++)
		atomic_store(&baton[i].v, 0);
	return run_parties(2 * pairs, cpus, pingpong_body, NULL);
}

static struct rep wakeup_local(int k)
{
	int cpus[2 * MAX_CPUS];
	for (int c = 0; c < k; c++)
		cpus[2 * c] = cpus[2 * c + 1] = c;
	return ping_pong(k, cpus);
}

static struct rep wakeup_cross_near(int k)
{
	(void)k;
	int cpus[] = { 0, 1 };
	return ping_pong(1, cpus);
}

static struct rep wakeup_cross_far(int k)
{
	(void)k;
	int cpus[] = { 0, ncpus - 1 };
	return ping_pong(1, cpus);
}

/* user-thread-create-exit: pthread_create of a thread that returns at
 * once (on the creator's CPU: it inherits the affinity), pthread_join. */
static void *nothing(void *arg)
{
	return arg;
}

static int thread_body(int p, void *a, struct span *s)
{
	(void)p, (void)a;
	gate();
	s->start = rdtsc();
	for (long i = 0; i < iters; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, nothing, NULL))
			die("pthread_create");
		pthread_join(t, NULL);
	}
	s->end = rdtsc();
	s->ops = iters;
	return 1;
}

static struct rep thread_create_exit(int k)
{
	(void)k;
	int cpus[] = { 0 };
	return run_parties(1, cpus, thread_body, NULL);
}

/* process-spawn-exit: fork; the child pins itself to the next CPU and
 * execs /init as `true`, which exits at once; waitpid. */
static int spawn_body(int p, void *a, struct span *s)
{
	(void)p, (void)a;
	char *argv[] = { "true", NULL };
	char *envp[] = { NULL };
	gate();
	s->start = rdtsc();
	for (long i = 0; i < iters; i++) {
		pid_t child = fork();
		if (child < 0)
			die("fork");
		if (child == 0) {
			pin(1 % ncpus);
			execve("/init", argv, envp);
			_exit(127);
		}
		int status;
		if (waitpid(child, &status, 0) != child || status != 0)
			die("waitpid");
	}
	s->end = rdtsc();
	s->ops = iters;
	return 1;
}

static struct rep process_spawn_exit(int k)
{
	(void)k;
	int cpus[] = { 0 };
	return run_parties(1, cpus, spawn_body, NULL);
}

/* ipc-*: one byte to a server process and one byte back, through a pair of
 * pipes (or one socketpair); the server, a child process, answers each. */
struct channel {
	int to_server[2], to_client[2];
};
static struct channel chans[MAX_CPUS];

static void open_channel(struct channel *c, int socket)
{
	if (socket) {
		int sv[2];
		if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv))
			die("socketpair");
		/* The client writes and reads sv[0], the server sv[1]. */
		c->to_server[1] = c->to_client[0] = sv[0];
		c->to_server[0] = c->to_client[1] = sv[1];
	} else if (pipe(c->to_server) || pipe(c->to_client)) {
		die("pipe");
	}
}

static void serve(const struct channel *c)
{
	char b;
	while (read(c->to_server[0], &b, 1) == 1)
		if (write(c->to_client[1], &b, 1) != 1)
			break;
}

static int round_trip(const struct channel *c)
{
	char b = 0;
	return write(c->to_server[1], &b, 1) == 1 && read(c->to_client[0], &b, 1) == 1;
}

static int client_body(int p, void *a, struct span *s)
{
	(void)a;
	const struct channel *c = &chans[p];
	/* The server's first wakeup, unmeasured. */
	if (!round_trip(c))
		die("the first round trip");
	gate();
	s->start = rdtsc();
	for (long i = 0; i < iters; i++)
		if (!round_trip(c))
			die("a round trip");
	s->end = rdtsc();
	s->ops = iters;
	return 1;
}

static void *server_thread(void *arg)
{
	long i = (long)arg;
	pin((int)i);
	serve(&chans[i]);
	return NULL;
}

/* k clients, threads of this process on CPUs 0..k-1 (or one on CPU 0 when
 * server_cpu >= 0), and their servers, threads of one child process on the
 * same CPUs (or server_cpu). */
static struct rep ipc(int k, int server_cpu, int socket)
{
	for (int i = 0; i < k; i++)
		open_channel(&chans[i], socket);
	pid_t child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		/* Only the client's close may end a server's reads. */
		for (int i = 0; i < k; i++) {
			close(chans[i].to_server[1]);
			if (!socket)
				close(chans[i].to_client[0]);
		}
		pthread_t t[MAX_CPUS];
		for (long i = 0; i < k; i++) {
			if (server_cpu >= 0) {
				pin(server_cpu);
				serve(&chans[i]);
				_exit(0);
			}
			pthread_create(&t[i], NULL, server_thread, (void *)i);
		}
		for (int i = 0; i < k; i++)
			pthread_join(t[i], NULL);
		_exit(0);
	}
	int cpus[MAX_CPUS] = { 0 };
	for (int i = 0; i < k; i++) {
		cpus[i] = i;
		close(chans[i].to_server[0]);
		if (!socket)
			close(chans[i].to_client[1]);
	}
	struct rep r = run_parties(k, cpus, client_body, NULL);
	for (int i = 0; i < k; i++) {
		close(chans[i].to_server[1]);
		if (!socket)
			close(chans[i].to_client[0]);
	}
	waitpid(child, NULL, 0);
	return r;
}

static struct rep ipc_rtt_local(int k)
{
	(void)k;
	return ipc(1, 0, 0);
}

static struct rep ipc_rtt_local_unix(int k)
{
	(void)k;
	return ipc(1, 0, 1);
}

static struct rep ipc_rtt_cross(int k)
{
	(void)k;
	return ipc(1, 1, 0);
}

static struct rep ipc_null(int k)
{
	return ipc(k, -1, 0);
}

/* loop: a loop of exactly 2 instructions a turn: its cost over 2 is the
 * factor by which ticks and other interruptions inflate one CPU's work. */
static int loop_body(int p, void *a, struct span *s)
{
	(void)p, (void)a;
	long n = iters;
	gate();
	s->start = rdtsc();
	__asm__ volatile("1: dec %0; jnz 1b" : "+r"(n));
	s->end = rdtsc();
	s->ops = iters;
	return 1;
}

static struct rep loop(int k)
{
	(void)k;
	int cpus[] = { 0 };
	return run_parties(1, cpus, loop_body, NULL);
}

/* ---- the benchmarks, in the order of tests/src/linux.rs's ROWS ---- */

enum cpus { ONE, PAIR, ALL, SCALING };

static const struct bench {
	const char *name, *unit;
	enum cpus cpus;
	long iters;
	struct rep (*run)(int k);
} BENCHES[] = {
	{ "switch", "switch", SCALING, 1000, yield_switch },
	{ "wakeup-local", "wakeup", SCALING, 500, wakeup_local },
	{ "wakeup-cross-near", "wakeup", PAIR, 500, wakeup_cross_near },
	{ "wakeup-cross-far", "wakeup", PAIR, 500, wakeup_cross_far },
	{ "null-syscall", "syscall", ONE, 5000, null_syscall },
	{ "user-thread-create-exit", "thread", ONE, 100, thread_create_exit },
	{ "process-spawn-exit", "process", ALL, 20, process_spawn_exit },
	{ "ipc-rtt-local", "round trip", ONE, 500, ipc_rtt_local },
	{ "ipc-rtt-local-unix", "round trip", ONE, 500, ipc_rtt_local_unix },
	{ "ipc-rtt-cross", "round trip", PAIR, 500, ipc_rtt_cross },
	{ "ipc-null", "round trip", SCALING, 200, ipc_null },
	{ "loop", "turn", ONE, 1000000, loop },
};
#define NBENCH (int)(sizeof BENCHES / sizeof BENCHES[0])

/* The CPU counts of a benchmark on ncpus CPUs (wyvern_abi::bench::Cpus). */
static int counts(enum cpus c, int *out)
{
	int n = 0;
	switch (c) {
	case ONE:
		out[n++] = 1;
		break;
	case PAIR:
		if (ncpus >= 2)
			out[n++] = 2;
		break;
	case ALL:
		out[n++] = ncpus;
		break;
	case SCALING:
		for (int k = 1; k <= ncpus; k *= 2)
			out[n++] = k;
		break;
	}
	return n;
}

static void bring_cpus_online(void)
{
	char buf[64] = "0";
	int fd = open("/sys/devices/system/cpu/present", O_RDONLY);
	if (fd < 0 || read(fd, buf, sizeof buf - 1) < 0)
		die("reading /sys/devices/system/cpu/present");
	close(fd);
	/* "0" or "0-7". */
	char *dash = strchr(buf, '-');
	ncpus = dash ? atoi(dash + 1) + 1 : 1;
	if (ncpus > MAX_CPUS)
		ncpus = MAX_CPUS;
	for (int c = 1; c < ncpus; c++) {
		char path[64];
		snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/online", c);
		fd = open(path, O_WRONLY);
		if (fd < 0 || write(fd, "1", 1) != 1)
			die(path);
		close(fd);
	}
	long online = sysconf(_SC_NPROCESSORS_ONLN);
	if (online != ncpus) {
		printf("bench: FAILED: %ld CPUs online, %d present\n", online, ncpus);
		fflush(stdout);
		reboot(RB_POWER_OFF);
	}
}

static uint64_t tsc_hz(void)
{
	static char buf[1 << 14];
	int fd = open("/proc/cpuinfo", O_RDONLY);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
	if (fd >= 0)
		close(fd);
	buf[n > 0 ? n : 0] = 0;
	const char *p = strstr(buf, "cpu MHz");
	p = p ? strchr(p, ':') : NULL;
	return p ? (uint64_t)(strtod(p + 1, NULL) * 1e6) : 1;
}

static int env_int(const char *name, int dflt)
{
	const char *v = getenv(name);
	return v && atoi(v) > 0 ? atoi(v) : dflt;
}

int main(int argc, char **argv)
{
	(void)argc;
	if (strcmp(argv[0], "true") == 0)
		return 0;
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (mount("sysfs", "/sys", "sysfs", 0, NULL) || mount("proc", "/proc", "proc", 0, NULL))
		die("mounting /sys and /proc");
	reps = env_int("wyvern_reps", 5);
	if (reps > MAX_REPS)
		reps = MAX_REPS;
	percent = env_int("wyvern_percent", 100);
	bring_cpus_online();
	pin(0);

	int total = 0, k[8];
	for (int b = 0; b < NBENCH; b++)
		total += counts(BENCHES[b].cpus, k);
	struct utsname u;
	uname(&u);
	printf("BENCH {\"type\":\"header\",\"version\":\"%s\",\"ncpus\":%d,\"tsc_hz\":%llu,"
	       "\"hz\":%d,\"set\":\"linux\",\"reps\":%d,\"count\":%d}\n",
	       u.release, ncpus, (unsigned long long)tsc_hz(), env_int("wyvern_hz", 0), reps,
	       total);
	int done = 0;
	for (int b = 0; b < NBENCH; b++) {
		const struct bench *bench = &BENCHES[b];
		int nk = counts(bench->cpus, k);
		iters = bench->iters * percent / 100;
		if (iters < 1)
			iters = 1;
		for (int j = 0; j < nk; j++) {
			uint64_t tsc[MAX_REPS], ops = 0;
			struct counters before, after;
			printf("bench: [%d/%d] %s cpus=%d\n", ++done, total, bench->name, k[j]);
			bench->run(k[j]);
			read_counters(&before);
			for (int r = 0; r < reps; r++) {
				struct rep rep = bench->run(k[j]);
				tsc[r] = rep.tsc;
				ops = rep.ops;
			}
			read_counters(&after);
			printf("BENCH {\"type\":\"result\",\"name\":\"%s\",\"cpus\":%d,\"unit\":\"%s\","
			       "\"ops\":%llu,\"tsc\":[",
			       bench->name, k[j], bench->unit, (unsigned long long)ops);
			for (int r = 0; r < reps; r++)
				printf("%s%llu", r ? "," : "", (unsigned long long)tsc[r]);
			printf("],\"counters\":{\"ipis\":%llu,\"switches\":%llu,\"ticks\":%llu}}\n",
			       (unsigned long long)(after.ipis - before.ipis),
			       (unsigned long long)(after.switches - before.switches),
			       (unsigned long long)(after.ticks - before.ticks));
		}
	}
	printf("BENCH {\"type\":\"end\",\"count\":%d}\n", total);
	fflush(stdout);
	sync();
	reboot(RB_POWER_OFF);
	return 0;
}
