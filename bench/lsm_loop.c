// Times N open()+close() of a file, N open()+close() of N different files, or
// N fork()+execve()+wait() of a program, and prints the mean nanoseconds per
// operation and the number of failures.
// Usage: lsm_loop open PATH N
//        lsm_loop open-each DIRECTORY N   (opens DIRECTORY/0 to DIRECTORY/N-1 once each)
//        lsm_loop exec PATH N   (PATH must exit 0 at once, like true)
#include <fcntl.h>
#include <limits.h>
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

/* Builds the N paths before the clock starts, so that formatting them is not timed. */
static char **numbered_paths(const char *directory, int n)
{
	char **paths = calloc(n, sizeof(*paths));

	for (int i = 0; paths && i < n; i++) {
		paths[i] = malloc(PATH_MAX);
		if (!paths[i])
			return NULL;
		snprintf(paths[i], PATH_MAX, "%s/%d", directory, i);
	}
	return paths;
}

int main(int argc, char **argv)
{
	int (*operation)(const char *);
	int n, failures = 0;
	char **paths = NULL;
	long long start;

	if (argc != 4 || (strcmp(argv[1], "open") != 0 && strcmp(argv[1], "open-each") != 0 &&
			  strcmp(argv[1], "exec") != 0)) {
		fprintf(stderr, "usage: lsm_loop open|open-each|exec PATH N\n");
		return 2;
	}
	operation = strcmp(argv[1], "exec") == 0 ? exec_once : open_once;
	n = atoi(argv[3]);
	if (strcmp(argv[1], "open-each") == 0) {
		paths = numbered_paths(argv[2], n);
		if (!paths) {
			fprintf(stderr, "lsm_loop: out of memory for %d paths\n", n);
			return 1;
		}
	}
	start = now_ns();
	for (int i = 0; i < n; i++)
		failures += operation(paths ? paths[i] : argv[2]);
	printf("%.1f %d\n", (double)(now_ns() - start) / n, failures);
	return 0;
}
