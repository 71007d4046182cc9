// Times N open()+close() of a file, or N fork()+execve()+wait() of a program,
// and prints the mean nanoseconds per operation and the number of failures.
// Usage: lsm_loop open PATH N
//        lsm_loop exec PATH N   (PATH must exit 0 at once, like true)
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

static int open_once(const char *path)
{
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		return 1;
	close(fd);
	return 0;
}

static int exec_once(const char *path)
{
	char *const argv[] = { (char *)path, NULL };
	char *const envp[] = { NULL };
	int status;
	pid_t pid = fork();

	if (pid < 0)
		return 1;
	if (pid == 0) {
		execve(path, argv, envp);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) != pid)
		return 1;
	return !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int main(int argc, char **argv)
{
	int (*operation)(const char *);
	int n, failures = 0;
	long long start;

	if (argc != 4 || (strcmp(argv[1], "open") != 0 && strcmp(argv[1], "exec") != 0)) {
		fprintf(stderr, "usage: lsm_loop open|exec PATH N\n");
		return 2;
	}
	operation = strcmp(argv[1], "open") == 0 ? open_once : exec_once;
	n = atoi(argv[3]);
	start = now_ns();
	for (int i = 0; i < n; i++)
		failures += operation(argv[2]);
	printf("%.1f %d\n", (double)(now_ns() - start) / n, failures);
	return 0;
}
