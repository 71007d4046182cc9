// Connects to a listener of its own on 127.0.0.1:PORT and accepts the
// connection, N times. Prints the mean wall-clock nanoseconds and the mean
// CPU nanoseconds of this process per socket()+connect()+accept()+close()
// of both ends, then the number of failures. On a loaded machine the CPU time
// is the steadier figure: it leaves out the time spent waiting for a CPU. One process does both
// ends, so the time includes the programs on the client's TCP state changes
// and on the server's accept().
// Usage: accept_loop PORT N
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long clock_ns(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	struct sockaddr_in addr = { .sin_family = AF_INET };
	struct linger reset = { .l_onoff = 1, .l_linger = 0 };
	int enable = 1, listener, n, failures = 0;
	long long start, cpu_start;

	if (argc != 3) {
		fprintf(stderr, "usage: accept_loop PORT N\n");
		return 2;
	}
	addr.sin_port = htons(atoi(argv[1]));
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	n = atoi(argv[2]);
	listener = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &enable, sizeof(enable));
	if (bind(listener, (struct sockaddr *)&addr, sizeof(addr)) != 0 || listen(listener, 64) != 0) {
		perror("listen");
		return 1;
	}

	start = clock_ns(CLOCK_MONOTONIC);
	cpu_start = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
	for (int i = 0; i < n; i++) {
		int client = socket(AF_INET, SOCK_STREAM, 0);
		int server;

		if (connect(client, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
			failures++;
			close(client);
			continue;
		}
		/* a loopback connect() returns after the handshake, so the connection is waiting */
		server = accept(listener, NULL, NULL);
		if (server < 0)
			failures++;
		/* close with a reset, so no TIME_WAIT state piles up on the ephemeral ports */
		setsockopt(client, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
		close(client);
		if (server >= 0)
			close(server);
	}
	printf("%.1f %.1f %d\n", (double)(clock_ns(CLOCK_MONOTONIC) - start) / n,
	       (double)(clock_ns(CLOCK_PROCESS_CPUTIME_ID) - cpu_start) / n, failures);
	return 0;
}
