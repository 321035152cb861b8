/*
 * LD_PRELOAD shim for the benchmark (bench/run.sh builds it into
 * bench/.cache/listen-backlog.so and runs OpenSMTPD with it).
 *
 * listen(): OpenSMTPD calls listen(fd, 5): SMTPD_BACKLOG is a compile-time
 * constant, not a setting. With 200 clients connecting at once, five
 * pending connections overflow, the kernel drops the other SYNs and the
 * clients retry after 1, 3, 7... s. The shim raises every listen backlog
 * to $BENCH_LISTEN_BACKLOG (rsmtpd listens with 1024).
 *
 * connect(): only with BENCH_TCP_NODELAY=1 (not in the default run), sets
 * TCP_NODELAY on OpenSMTPD's outgoing TCP connections, as rsmtpd does on
 * its own: to see how much of OpenSMTPD's relay rate Nagle's algorithm
 * costs (see docs/performance.md).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

int
listen(int fd, int backlog)
{
	static int (*real_listen)(int, int);
	const char *want = getenv("BENCH_LISTEN_BACKLOG");

	if (real_listen == NULL)
		real_listen = (int (*)(int, int))dlsym(RTLD_NEXT, "listen");
	if (want != NULL && atoi(want) > backlog)
		backlog = atoi(want);
	return real_listen(fd, backlog);
}

int
connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	static int (*real_connect)(int, const struct sockaddr *, socklen_t);
	const char *nodelay = getenv("BENCH_TCP_NODELAY");
	int one = 1;

	if (real_connect == NULL)
		real_connect = (int (*)(int, const struct sockaddr *, socklen_t))
		    dlsym(RTLD_NEXT, "connect");
	if (nodelay != NULL && strcmp(nodelay, "1") == 0 && addr != NULL &&
	    (addr->sa_family == AF_INET || addr->sa_family == AF_INET6))
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return real_connect(fd, addr, len);
}
