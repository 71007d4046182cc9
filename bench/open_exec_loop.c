// Times open()+close() of one file, or fork()+execve()+waitpid() of this
// program, N times in a row and prints the mean nanoseconds per operation.
// Usage: open_exec_loop open PATH N
//        open_exec_loop exec N      (runs `open_exec_loop noop` N times)
//        open_exec_loop noop        (exits at once)
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int open_loop(const char *path, long count)
{
	long long start = now_ns();

	for (long i = 0; i < count; i++) {
		int fd = open(path, O_RDONLY);

		if (fd < 0) {
			perror("open");
			return 1;
		}
		close(fd);
	}
	printf("%.1f\n", (double)(now_ns() - start) / count);
	return 0;
}

static int exec_loop(const char *self, long count)
{
	long long start = now_ns();

	for (long i = 0; i < count; i++) {
		int status = 0;
		pid_t child = fork();

		if (child < 0) {
			perror("fork");
			return 1;
		}
		if (child == 0) {
			execl(self, self, "noop", (char *)NULL);
			_exit(127);
		}
		if (waitpid(child, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			fprintf(stderr, "child %d failed with status %d\n", child, status);
			return 1;
		}
	}
	printf("%.1f\n", (double)(now_ns() - start) / count);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "noop") == 0)
		return 0;
	if (argc == 4 && strcmp(argv[1], "open") == 0)
		return open_loop(argv[2], atol(argv[3]));
	if (argc == 3 && strcmp(argv[1], "exec") == 0)
		return exec_loop("/proc/self/exe", atol(argv[2]));
	fprintf(stderr, "usage: %s open PATH N | exec N | noop\n", argv[0]);
	return 2;
}
