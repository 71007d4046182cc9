// Calls getppid() at a steady rate, to drive bench/event-generator.bpf.c.
// Usage: getppid_driver CALLS_PER_SECOND SECONDS
// It waits for one line on stdin before it starts, so the bench can fill the
// generator's template with this process's pid first, then prints the number of calls
// and the elapsed nanoseconds as one line of JSON.
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	char line[16];
	long long rate, seconds, total, calls = 0, start, end, elapsed;
	struct timespec tick = { 0, 200000 };

	if (argc != 3) {
		fprintf(stderr, "usage: getppid_driver CALLS_PER_SECOND SECONDS\n");
		return 2;
	}
	rate = atoll(argv[1]);
	seconds = atoll(argv[2]);
	if (rate <= 0 || seconds <= 0) {
		fprintf(stderr, "getppid_driver: rate and seconds must be positive integers\n");
		return 2;
	}
	if (!fgets(line, sizeof(line), stdin))
		return 1;

	total = rate * seconds;
	start = now_ns();
	/* Every 0.2 ms, make the calls due by now, so the rate is steady over any interval longer than that. */
	while (calls < total) {
		elapsed = now_ns() - start;
		long long due = (long long)((double)elapsed * rate / 1e9);

		if (due > total)
			due = total;
		for (; calls < due; calls++)
			syscall(SYS_getppid); /* enters the kernel on every call, whatever libc does */
		nanosleep(&tick, NULL);
	}
	end = now_ns();
	printf("{\"calls\":%lld,\"ns\":%lld}\n", calls, end - start);
	return 0;
}
