/*
 * Linux anchor for docs/BENCHMARKS.md: the same kinds of operation as
 * Wyvern's benchmarks, measured by a static /init under the same QEMU with
 * -icount, where the TSC counts guest instructions. Run by run.sh.
 *
 * Prints one line per figure: `LINUX <name> <ops per rep> <tsc> <tsc> ...`.
 */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/reboot.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define REPS 5

static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}

static void report(const char *name, long ops, const uint64_t *tsc)
{
	printf("LINUX %s %ld", name, ops);
	for (int i = 0; i < REPS; i++)
		printf(" %llu", (unsigned long long)tsc[i]);
	printf("\n");
	fflush(stdout);
}

/* A null system call. */
static void null_syscall(long n)
{
	uint64_t tsc[REPS];
	for (int r = 0; r < REPS; r++) {
		uint64_t t0 = rdtsc();
		for (long i = 0; i < n; i++)
			syscall(SYS_getppid);
		tsc[r] = rdtsc() - t0;
	}
	report("null-syscall", n, tsc);
}

static atomic_int stop;

static void *yielder(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop))
		sched_yield();
	return NULL;
}

/* Two threads of one process on one CPU yield to each other: each
 * sched_yield is a system call and a switch. */
static void yield_switch(long n)
{
	uint64_t tsc[REPS];
	for (int r = 0; r < REPS; r++) {
		pthread_t t;
		atomic_store(&stop, 0);
		pthread_create(&t, NULL, yielder, NULL);
		sched_yield();
		uint64_t t0 = rdtsc();
		for (long i = 0; i < n; i++)
			sched_yield();
		tsc[r] = rdtsc() - t0;
		atomic_store(&stop, 1);
		pthread_join(t, NULL);
	}
	report("sched-yield-switch", 2 * n, tsc);
}

static atomic_int turn;

static void futex_wait(atomic_int *w, int val)
{
	syscall(SYS_futex, w, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(atomic_int *w)
{
	syscall(SYS_futex, w, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static long pp_n;

static void *ponger(void *arg)
{
	(void)arg;
	for (long i = 0; i < pp_n; i++) {
		while (atomic_load(&turn) != 1)
			futex_wait(&turn, 0);
		atomic_store(&turn, 0);
		futex_wake(&turn);
	}
	return NULL;
}

/* futex wait/wake ping-pong between two threads of one CPU: one
 * operation is one wakeup (with the sleep and the switch), as Wyvern's
 * wakeup-local. */
static void futex_pingpong(long n)
{
	uint64_t tsc[REPS];
	pp_n = n;
	for (int r = 0; r < REPS; r++) {
		pthread_t t;
		atomic_store(&turn, 0);
		pthread_create(&t, NULL, ponger, NULL);
		uint64_t t0 = rdtsc();
		for (long i = 0; i < n; i++) {
			atomic_store(&turn, 1);
			futex_wake(&turn);
			while (atomic_load(&turn) != 0)
				futex_wait(&turn, 1);
		}
		tsc[r] = rdtsc() - t0;
		pthread_join(t, NULL);
	}
	report("futex-wakeup", 2 * n, tsc);
}

static void *nothing(void *arg)
{
	return arg;
}

/* pthread_create of a thread that returns at once, and pthread_join. */
static void thread_create_exit(long n)
{
	uint64_t tsc[REPS];
	for (int r = 0; r < REPS; r++) {
		uint64_t t0 = rdtsc();
		for (long i = 0; i < n; i++) {
			pthread_t t;
			pthread_create(&t, NULL, nothing, NULL);
			pthread_join(t, NULL);
		}
		tsc[r] = rdtsc() - t0;
	}
	report("thread-create-exit", n, tsc);
}

/* A one-byte round trip through two pipes between two processes on one
 * CPU: the nearest thing Linux has to a message round trip between
 * address spaces (write, the reader woken, its read and write, our read). */
static void pipe_round_trip(long n)
{
	int ping[2], pong[2];
	char b = 0;
	uint64_t tsc[REPS];
	if (pipe(ping) || pipe(pong))
		return;
	pid_t child = fork();
	if (child == 0) {
		close(ping[1]);
		close(pong[0]);
		while (read(ping[0], &b, 1) == 1)
			if (write(pong[1], &b, 1) != 1)
				_exit(1);
		_exit(0);
	}
	close(ping[0]);
	close(pong[1]);
	for (int r = 0; r < REPS; r++) {
		uint64_t t0 = rdtsc();
		for (long i = 0; i < n; i++) {
			if (write(ping[1], &b, 1) != 1 || read(pong[0], &b, 1) != 1)
				return;
		}
		tsc[r] = rdtsc() - t0;
	}
	close(ping[1]);
	waitpid(child, NULL, 0);
	report("pipe-round-trip", n, tsc);
}

/* A loop of exactly 2 instructions a turn, to see what ticks and other
 * interruptions add: its TSC over 2 x turns is the overhead factor. */
static void calibration(long turns)
{
	uint64_t tsc[REPS];
	for (int r = 0; r < REPS; r++) {
		long n = turns;
		uint64_t t0 = rdtsc();
		__asm__ volatile("1: dec %0; jnz 1b" : "+r"(n));
		tsc[r] = rdtsc() - t0;
	}
	report("loop-2-instructions", turns, tsc);
}

int main(void)
{
	cpu_set_t one;
	CPU_ZERO(&one);
	CPU_SET(0, &one);
	sched_setaffinity(0, sizeof one, &one);
	printf("LINUX start\n");
	calibration(10000000);
	null_syscall(20000);
	yield_switch(20000);
	futex_pingpong(10000);
	thread_create_exit(2000);
	pipe_round_trip(5000);
	printf("LINUX end\n");
	fflush(stdout);
	reboot(RB_POWER_OFF);
	return 0;
}
