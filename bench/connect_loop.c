// Opens and connects N sockets to 127.0.0.1:PORT one after another and
// prints the mean nanoseconds per socket()+connect()+close().
// Usage: connect_loop tcp|udp PORT N
//        connect_loop listen PORT   (accepts and closes TCP connections until killed)
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Accepts and closes connections in a tight loop, with a backlog of 4096, so the TCP loop rarely waits. */
static int listen_loop(int port)
{
	struct sockaddr_in addr = { .sin_family = AF_INET };
	int enable = 1;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	addr.sin_port = htons(port);
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &enable, sizeof(enable));
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 || listen(fd, 4096) != 0) {
		perror("listen");
		return 1;
	}
	printf("listening %d\n", port);
	fflush(stdout);
	for (;;) {
		int client = accept(fd, NULL, NULL);

		if (client >= 0)
			close(client);
	}
}

int main(int argc, char **argv)
{
	struct sockaddr_in addr = { .sin_family = AF_INET };
	struct linger reset = { .l_onoff = 1, .l_linger = 0 };
	int tcp, n, failures = 0;
	long long start;

	if (argc == 3 && strcmp(argv[1], "listen") == 0)
		return listen_loop(atoi(argv[2]));
	if (argc != 4) {
		fprintf(stderr, "usage: connect_loop tcp|udp PORT N\n");
		return 2;
	}
	tcp = strcmp(argv[1], "tcp") == 0;
	addr.sin_port = htons(atoi(argv[2]));
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	n = atoi(argv[3]);

	start = now_ns();
	for (int i = 0; i < n; i++) {
		int fd = socket(AF_INET, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);

		if (fd < 0) {
			perror("socket");
			return 1;
		}
		if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0)
			failures++;
		/* close with a reset, so no TIME_WAIT state piles up on the ephemeral ports */
		if (tcp)
			setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
		close(fd);
	}
	printf("%.1f %d\n", (double)(now_ns() - start) / n, failures);
	return 0;
}
