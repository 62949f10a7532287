"""cffi builder for zocket's glibc bindings (API mode: compiled against the real headers).

Run at install time through setup.py's ``cffi_modules``; by hand with
``python zocket/_build_libc.py`` (writes the extension next to this file).

Declarations are kept by area, each a small record of the headers it needs,
the types, the functions and any C of our own. Every constant is declared as
``#define NAME ...`` so that the C compiler supplies its value: no number in
this package is copied from a header by hand.

Optional calls (newer syscalls) are wrapped in C that fails with ENOSYS when
the headers lack them, and are flagged ``HAS_<NAME>`` so the Python layer can
tell.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from cffi import FFI


# A NamedTuple, not a dataclass: cffi exec()s this file outside sys.modules.
class Area(NamedTuple):
    name: str
    includes: str
    cdef: str
    source: str = ""


SOCKET = Area(
    "socket",
    includes="""
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
""",
    cdef="""
#define AF_UNSPEC ...
#define AF_INET ...
#define AF_INET6 ...
#define AF_UNIX ...
#define SOCK_STREAM ...
#define SOCK_DGRAM ...
#define SOCK_SEQPACKET ...
#define SOCK_NONBLOCK ...
#define SOCK_CLOEXEC ...
#define SOL_SOCKET ...
#define SO_REUSEADDR ...
#define SO_REUSEPORT ...
#define SO_ACCEPTCONN ...
#define SO_TYPE ...
#define SO_DOMAIN ...
#define SO_PROTOCOL ...
#define SO_ERROR ...
#define SO_KEEPALIVE ...
#define SO_RCVBUF ...
#define SO_SNDBUF ...
#define SO_PASSCRED ...
#define SOMAXCONN ...
#define IPPROTO_TCP ...
#define IPPROTO_IPV6 ...
#define IPV6_V6ONLY ...
#define TCP_NODELAY ...
#define TCP_DEFER_ACCEPT ...
#define SCM_RIGHTS ...
#define MSG_CMSG_CLOEXEC ...
#define MSG_NOSIGNAL ...
#define MSG_DONTWAIT ...
#define MSG_CTRUNC ...
#define MSG_TRUNC ...
#define SHUT_RD ...
#define SHUT_WR ...
#define SHUT_RDWR ...

typedef int... socklen_t;
typedef int... sa_family_t;
typedef int... in_port_t;

struct sockaddr { sa_family_t sa_family; ...; };
struct sockaddr_storage { sa_family_t ss_family; ...; };
struct in_addr { uint32_t s_addr; };
struct sockaddr_in {
    sa_family_t sin_family;
    in_port_t sin_port;
    struct in_addr sin_addr;
    ...;
};
struct in6_addr { uint8_t s6_addr[16]; ...; };
struct sockaddr_in6 {
    sa_family_t sin6_family;
    in_port_t sin6_port;
    uint32_t sin6_flowinfo;
    struct in6_addr sin6_addr;
    uint32_t sin6_scope_id;
    ...;
};
struct sockaddr_un { sa_family_t sun_family; char sun_path[...]; ...; };
struct iovec { void *iov_base; size_t iov_len; };
struct msghdr {
    void *msg_name;
    socklen_t msg_namelen;
    struct iovec *msg_iov;
    size_t msg_iovlen;
    void *msg_control;
    size_t msg_controllen;
    int msg_flags;
    ...;
};
struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; ...; };

int socket(int domain, int type, int protocol);
int socketpair(int domain, int type, int protocol, int sv[2]);
int setsockopt(int fd, int level, int optname, const void *optval, socklen_t optlen);
int getsockopt(int fd, int level, int optname, void *optval, socklen_t *optlen);
int bind(int fd, const struct sockaddr *addr, socklen_t addrlen);
int listen(int fd, int backlog);
int accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags);
int connect(int fd, const struct sockaddr *addr, socklen_t addrlen);
int getsockname(int fd, struct sockaddr *addr, socklen_t *addrlen);
int getpeername(int fd, struct sockaddr *addr, socklen_t *addrlen);
int shutdown(int fd, int how);
ssize_t sendmsg(int fd, const struct msghdr *msg, int flags);
ssize_t recvmsg(int fd, struct msghdr *msg, int flags);

uint16_t htons(uint16_t);
uint16_t ntohs(uint16_t);

/* Macros, declared as functions: cffi compiles a call to each. */
size_t CMSG_SPACE(size_t);
size_t CMSG_LEN(size_t);
struct cmsghdr *CMSG_FIRSTHDR(struct msghdr *);
struct cmsghdr *CMSG_NXTHDR(struct msghdr *, struct cmsghdr *);
unsigned char *CMSG_DATA(struct cmsghdr *);
""",
)


FCNTL = Area(
    "fcntl",
    includes="""
#include <fcntl.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <sys/resource.h>
""",
    cdef="""
#define F_GETFD ...
#define F_SETFD ...
#define F_GETFL ...
#define F_SETFL ...
#define F_DUPFD ...
#define F_DUPFD_CLOEXEC ...
#define FD_CLOEXEC ...
#define O_RDONLY ...
#define O_WRONLY ...
#define O_RDWR ...
#define O_APPEND ...
#define O_NONBLOCK ...
#define O_CLOEXEC ...
#define O_DIRECT ...
#define O_ASYNC ...
#define O_NOATIME ...
#define CLOSE_RANGE_CLOEXEC ...

static const int HAS_CLOSE_RANGE;

int fcntl(int fd, int cmd, ...);
int dup(int fd);
int dup2(int oldfd, int newfd);
int dup3(int oldfd, int newfd, int flags);
int close(int fd);
int pipe2(int pipefd[2], int flags);
ssize_t read(int fd, void *buf, size_t count);
ssize_t write(int fd, const void *buf, size_t count);
int zocket_close_range(unsigned int first, unsigned int last, int flags);
""",
    source="""
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifdef SYS_close_range
static const int HAS_CLOSE_RANGE = 1;
#else
static const int HAS_CLOSE_RANGE = 0;
#endif

/* close_range(2) through syscall(): glibc only wraps it since 2.34. */
static int zocket_close_range(unsigned int first, unsigned int last, int flags)
{
#ifdef SYS_close_range
    return (int)syscall(SYS_close_range, first, last, flags);
#else
    errno = ENOSYS;
    return -1;
#endif
}
""",
)


SIGNAL = Area(
    "signal",
    includes="""
#include <signal.h>
""",
    cdef="""
#define SIGHUP ...
#define SIGINT ...
#define SIGQUIT ...
#define SIGKILL ...
#define SIGUSR1 ...
#define SIGUSR2 ...
#define SIGPIPE ...
#define SIGALRM ...
#define SIGTERM ...
#define SIGCHLD ...
#define SIGCONT ...
#define SIGSTOP ...
#define SIGTSTP ...
#define SIGWINCH ...
#define SIGXFSZ ...
""",
)


PROCESS = Area(
    "process",
    includes="""
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#ifndef SCHED_BATCH
#define SCHED_BATCH 3
#endif
#ifndef SCHED_FLAG_RESET_ON_FORK
#define SCHED_FLAG_RESET_ON_FORK 0x01
#endif
""",
    cdef="""
typedef int... pid_t;

#define WNOHANG ...
#define WUNTRACED ...
#define WCONTINUED ...
#define PR_SET_PDEATHSIG ...
#define PR_GET_PDEATHSIG ...
#define PR_SET_CHILD_SUBREAPER ...
#define PR_GET_CHILD_SUBREAPER ...
#define PR_SET_NAME ...

static const int HAS_PIDFD_OPEN;
static const int HAS_PIDFD_SEND_SIGNAL;

pid_t fork(void);
int execvp(const char *file, char *const argv[]);
int execve(const char *path, char *const argv[], char *const envp[]);
pid_t waitpid(pid_t pid, int *wstatus, int options);
int kill(pid_t pid, int sig);
int setpgid(pid_t pid, pid_t pgid);
pid_t getpgid(pid_t pid);
pid_t getpid(void);
pid_t getppid(void);
int prctl(int option, ...);
int zocket_pidfd_open(pid_t pid, unsigned int flags);
int zocket_pidfd_send_signal(int pidfd, int sig, unsigned int flags);
int zocket_tgkill(pid_t tgid, pid_t tid, int sig);

/* sched_setattr(2)'s struct sched_attr, its first version, by its own name (glibc
   declares it only from 2.41): defined in the source below; Python reads the slice. */
struct zocket_sched_attr {
    uint32_t sched_policy;
    uint64_t sched_runtime;
    ...;
};
int zocket_sched_getattr(pid_t tid, struct zocket_sched_attr *attr);
int zocket_sched_setattr(pid_t tid, const struct zocket_sched_attr *attr);
int zocket_set_slice(pid_t tid, uint64_t slice_ns);

int WIFEXITED(int);
int WEXITSTATUS(int);
int WIFSIGNALED(int);
int WTERMSIG(int);
int WIFSTOPPED(int);
int WSTOPSIG(int);

/* The fork-to-exec path, in C so that nothing between fork and exec
   allocates or takes a lock. See zocket_spawn in the source below. */
#define ZOCKET_SPAWN_MAX_FDS ...
#define ZOCKET_STAGE_EXEC ...
#define ZOCKET_STAGE_SETPGID ...
#define ZOCKET_STAGE_PDEATHSIG ...
#define ZOCKET_STAGE_FDS ...
#define ZOCKET_STAGE_CHDIR ...
#define ZOCKET_STAGE_ADOPT ...
#define ZOCKET_STAGE_ADOPT_LISTENER ...
#define ZOCKET_STAGE_ADOPT_UNAVAILABLE ...
struct sock_fprog;
pid_t zocket_spawn(char *const paths[], char *const argv[], char *envp[],
                   int listen_pid_slot, const int fds[], int nfds,
                   int errpipe, int new_group, int deathsig, const char *cwd,
                   const struct sock_fprog *filter, uint64_t slice_ns);
""",
    source=r"""
#ifdef SYS_pidfd_open
static const int HAS_PIDFD_OPEN = 1;
#else
static const int HAS_PIDFD_OPEN = 0;
#endif
#ifdef SYS_pidfd_send_signal
static const int HAS_PIDFD_SEND_SIGNAL = 1;
#else
static const int HAS_PIDFD_SEND_SIGNAL = 0;
#endif

static int zocket_pidfd_open(pid_t pid, unsigned int flags)
{
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, flags);
#else
    errno = ENOSYS;
    return -1;
#endif
}

static int zocket_tgkill(pid_t tgid, pid_t tid, int sig)
{
    return (int)syscall(SYS_tgkill, tgid, tid, sig);
}

struct zocket_sched_attr {
    uint32_t size;
    uint32_t sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime;
    uint64_t sched_deadline;
    uint64_t sched_period;
};

static int zocket_sched_getattr(pid_t tid, struct zocket_sched_attr *attr)
{
#ifdef SYS_sched_getattr
    return (int)syscall(SYS_sched_getattr, tid, attr, (unsigned int)sizeof *attr, 0U);
#else
    errno = ENOSYS;
    return -1;
#endif
}

static int zocket_sched_setattr(pid_t tid, const struct zocket_sched_attr *attr)
{
#ifdef SYS_sched_setattr
    return (int)syscall(SYS_sched_setattr, tid, attr, 0U);
#else
    errno = ENOSYS;
    return -1;
#endif
}

/* Give thread `tid` a time slice of `slice_ns` (0: the kernel's default), keeping
   its policy, nice value and reset-on-fork flag. Only the fair policies have a
   slice: a thread under another one is left alone and 1 is returned. Syscalls
   only, so that the child of a fork may call it before exec. */
static int zocket_set_slice(pid_t tid, uint64_t slice_ns)
{
    struct zocket_sched_attr attr;

    memset(&attr, 0, sizeof attr);
    if (zocket_sched_getattr(tid, &attr) < 0)
        return -1;
    if (attr.sched_policy != SCHED_OTHER && attr.sched_policy != SCHED_BATCH)
        return 1;
    attr.size = sizeof attr;
    attr.sched_flags &= SCHED_FLAG_RESET_ON_FORK;
    attr.sched_runtime = slice_ns;
    attr.sched_deadline = 0;
    attr.sched_period = 0;
    return zocket_sched_setattr(tid, &attr);
}

static int zocket_pidfd_send_signal(int pidfd, int sig, unsigned int flags)
{
#ifdef SYS_pidfd_send_signal
    return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, flags);
#else
    errno = ENOSYS;
    return -1;
#endif
}

#define ZOCKET_SPAWN_MAX_FDS 64
#define ZOCKET_STAGE_EXEC 0
#define ZOCKET_STAGE_SETPGID 1
#define ZOCKET_STAGE_PDEATHSIG 2
#define ZOCKET_STAGE_FDS 3
#define ZOCKET_STAGE_CHDIR 4
/* Sending the seccomp listener to the parent failed: fatal, since a filter
   nobody answers would leave the server's bind() waiting forever. */
#define ZOCKET_STAGE_ADOPT 5
/* Not failures: the listener fd rides along (SCM_RIGHTS), or why there is none. */
#define ZOCKET_STAGE_ADOPT_LISTENER 6
#define ZOCKET_STAGE_ADOPT_UNAVAILABLE 7

/* Tell the parent which step failed and why, then die. Only async-signal-safe
   calls from here on: the child of a threaded, allocating parent may not touch
   malloc or any lock. */
static void zocket_child_fail(int errpipe, int stage, int err)
{
    int report[2];
    report[0] = stage;
    report[1] = err;
    (void)!write(errpipe, report, sizeof report);
    _exit(127);
}

/* Write the decimal pid after "LISTEN_PID=" in a slot the parent sized for it. */
static void zocket_put_pid(char *slot, pid_t pid)
{
    char digits[24];
    int n = 0;
    char *p = strchr(slot, '=') + 1;
    do {
        digits[n++] = (char)('0' + pid % 10);
        pid /= 10;
    } while (pid > 0);
    while (n > 0)
        *p++ = digits[--n];
    *p = '\0';
}

/* Install the parent's seccomp filter with a notification listener and send
   the listener to the parent over the report channel (a socket then). A filter
   that cannot be installed is reported and is no failure: the server runs
   without adoption. Without CAP_SYS_ADMIN the kernel takes a filter only from
   a process with no_new_privs, so that is set only when the first try says
   EACCES: a holder with CAP_SYS_ADMIN leaves setuid programs working. */
static void zocket_child_adopt(int channel, const struct sock_fprog *filter)
{
    int report[2];
    int listener = -1;
    struct msghdr msg;
    struct iovec iov;
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct cmsghdr *cmsg;

#if ZOCKET_HAS_SECCOMP_ADOPT
    listener = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
                            SECCOMP_FILTER_FLAG_NEW_LISTENER, filter);
    if (listener < 0 && errno == EACCES
        && prctl(PR_SET_NO_NEW_PRIVS, 1UL, 0UL, 0UL, 0UL) == 0)
        listener = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
                                SECCOMP_FILTER_FLAG_NEW_LISTENER, filter);
#else
    (void)filter;
    errno = ENOSYS;
#endif
    if (listener < 0) {
        report[0] = ZOCKET_STAGE_ADOPT_UNAVAILABLE;
        report[1] = errno;
        (void)!write(channel, report, sizeof report);
        return;
    }
    report[0] = ZOCKET_STAGE_ADOPT_LISTENER;
    report[1] = 0;
    memset(&msg, 0, sizeof msg);
    memset(&control, 0, sizeof control);
    iov.iov_base = report;
    iov.iov_len = sizeof report;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof control.buf;
    cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &listener, sizeof(int));
    if (sendmsg(channel, &msg, MSG_NOSIGNAL) < 0)
        zocket_child_fail(channel, ZOCKET_STAGE_ADOPT, errno);
    (void)close(listener);
}

static void zocket_child(char *const paths[], char *const argv[], char *envp[],
                         int listen_pid_slot, const int fds[], int nfds,
                         int errpipe, int new_group, int deathsig,
                         const char *cwd, pid_t parent,
                         const struct sock_fprog *filter, uint64_t slice_ns)
{
    struct sigaction dfl;
    int high[ZOCKET_SPAWN_MAX_FDS];
    int first_free = 3 + nfds;
    int i, sig, saved = ENOENT;

    /* Dispositions the holder set (ignored SIGPIPE, its own handlers) must not
       reach the server: ignored signals survive exec. Signals are still
       blocked here, so no handler of the parent can run in this child. */
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    for (sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            (void)sigaction(sig, &dfl, NULL);

    if (new_group && setpgid(0, 0) < 0)
        zocket_child_fail(errpipe, ZOCKET_STAGE_SETPGID, errno);

    if (deathsig) {
        if (prctl(PR_SET_PDEATHSIG, (unsigned long)deathsig, 0UL, 0UL, 0UL) < 0)
            zocket_child_fail(errpipe, ZOCKET_STAGE_PDEATHSIG, errno);
        /* The holder may have died before prctl: then nobody will signal us. */
        if (getppid() != parent)
            _exit(128 + deathsig);
    }

    if (listen_pid_slot >= 0)
        zocket_put_pid(envp[listen_pid_slot], getpid());

    /* A preference, not a condition: a kernel without custom slices (before 6.12)
       takes the value and keeps its own. */
    if (slice_ns != 0)
        (void)zocket_set_slice(0, slice_ns);

    /* Move the error pipe and every held fd above the target range first, so
       that placing fd i on 3+i can never overwrite a source still needed. */
    if (errpipe < first_free) {
        errpipe = fcntl(errpipe, F_DUPFD_CLOEXEC, first_free);
        if (errpipe < 0)
            _exit(127);
    }
    for (i = 0; i < nfds; i++) {
        high[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, first_free);
        if (high[i] < 0)
            zocket_child_fail(errpipe, ZOCKET_STAGE_FDS, errno);
    }
    /* dup2 onto a different number clears close-on-exec on the target. */
    for (i = 0; i < nfds; i++)
        if (dup2(high[i], 3 + i) < 0)
            zocket_child_fail(errpipe, ZOCKET_STAGE_FDS, errno);

    /* Everything else of the holder's is closed by exec. */
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned int)first_free, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
#endif
    {
        struct rlimit rl;
        int fd, last = 65536;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
            last = (int)rl.rlim_cur;
        for (fd = first_free; fd < last; fd++)
            if (fd != errpipe)
                (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
    }

    if (cwd != NULL && chdir(cwd) < 0)
        zocket_child_fail(errpipe, ZOCKET_STAGE_CHDIR, errno);

    /* A server starts with no signal blocked, whatever the holder had. */
    {
        sigset_t none;
        sigemptyset(&none);
        (void)sigprocmask(SIG_SETMASK, &none, NULL);
    }

    /* Last before exec: from here on this process's bind() and listen() wait
       for the holder's answer. */
    if (filter != NULL)
        zocket_child_adopt(errpipe, filter);

    /* execvp's search, over candidates the parent built: keep looking past
       ENOENT/ENOTDIR, remember EACCES, stop at anything else. Unlike execvp, a
       file without a #! line is not handed to /bin/sh (ENOEXEC is reported). */
    for (i = 0; paths[i] != NULL; i++) {
        execve(paths[i], argv, envp);
        if (errno != ENOENT && errno != ENOTDIR) {
            saved = errno;
            if (errno != EACCES)
                break;
        }
    }
    zocket_child_fail(errpipe, ZOCKET_STAGE_EXEC, saved);
}

/* fork, then in the child: reset signals, own process group, parent-death
   signal, LISTEN_PID, held fds on 3.., close-on-exec everything else, the
   seccomp filter if one is given (see zocket_child_adopt), exec.
   Returns the child's pid, or -1 with errno set if fork failed. */
static pid_t zocket_spawn(char *const paths[], char *const argv[], char *envp[],
                          int listen_pid_slot, const int fds[], int nfds,
                          int errpipe, int new_group, int deathsig, const char *cwd,
                          const struct sock_fprog *filter, uint64_t slice_ns)
{
    sigset_t all, old;
    pid_t parent = getpid();
    pid_t pid;
    int err;

    if (nfds < 0 || nfds > ZOCKET_SPAWN_MAX_FDS) {
        errno = EINVAL;
        return -1;
    }
    /* Block every signal across fork so that no handler of ours runs in the
       child (it would write into the parent's wake-up pipe). */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid = fork();
    if (pid == 0)
        zocket_child(paths, argv, envp, listen_pid_slot, fds, nfds, errpipe,
                     new_group, deathsig, cwd, parent, filter, slice_ns);
    err = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = err;
    return pid;
}
""",
)


INOTIFY = Area(
    "inotify",
    includes="""
#include <sys/inotify.h>
""",
    cdef="""
#define IN_NONBLOCK ...
#define IN_CLOEXEC ...
#define IN_ACCESS ...
#define IN_MODIFY ...
#define IN_ATTRIB ...
#define IN_CLOSE_WRITE ...
#define IN_CLOSE_NOWRITE ...
#define IN_OPEN ...
#define IN_MOVED_FROM ...
#define IN_MOVED_TO ...
#define IN_CREATE ...
#define IN_DELETE ...
#define IN_DELETE_SELF ...
#define IN_MOVE_SELF ...
#define IN_UNMOUNT ...
#define IN_Q_OVERFLOW ...
#define IN_IGNORED ...
#define IN_ONLYDIR ...
#define IN_DONT_FOLLOW ...
#define IN_EXCL_UNLINK ...
#define IN_MASK_ADD ...
#define IN_ISDIR ...
#define IN_ONESHOT ...
#define IN_ALL_EVENTS ...

struct inotify_event { int wd; uint32_t mask; uint32_t cookie; uint32_t len; ...; };

int inotify_init1(int flags);
int inotify_add_watch(int fd, const char *pathname, uint32_t mask);
int inotify_rm_watch(int fd, int wd);
""",
)


# Seccomp user notification: a filter turns chosen syscalls of a process into
# messages on a listener fd; the holder reads them and answers each one (a
# return value, an fd installed into the caller, or "let the kernel do it").
# The rest is what an answer needs: the caller's socket (pidfd_getfd).
SECCOMP = Area(
    "seccomp",
    includes="""
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
""",
    cdef="""
#define SECCOMP_SET_MODE_FILTER ...
#define SECCOMP_FILTER_FLAG_NEW_LISTENER ...
#define SECCOMP_RET_ALLOW ...
#define SECCOMP_RET_ERRNO ...
#define SECCOMP_RET_USER_NOTIF ...
#define SECCOMP_RET_KILL_PROCESS ...
#define SECCOMP_USER_NOTIF_FLAG_CONTINUE ...
#define SECCOMP_ADDFD_FLAG_SETFD ...
#define SECCOMP_ADDFD_FLAG_SEND ...
#define PR_SET_NO_NEW_PRIVS ...
#define PR_GET_NO_NEW_PRIVS ...
#define BPF_LD ...
#define BPF_W ...
#define BPF_ABS ...
#define BPF_JMP ...
#define BPF_JEQ ...
#define BPF_K ...
#define BPF_RET ...

/* This architecture's AUDIT_ARCH_* (what seccomp_data.arch holds), 0 if unknown. */
static const unsigned int ZOCKET_AUDIT_ARCH;
static const long ZOCKET_SYS_bind;
static const long ZOCKET_SYS_listen;
static const long ZOCKET_SYS_shutdown;
static const long ZOCKET_SYS_seccomp;

/* 1 where the headers have user notification with ADDFD/SETFD (Linux 5.14). */
static const int HAS_SECCOMP_ADOPT;
static const int HAS_PIDFD_GETFD;

struct sock_filter { uint16_t code; uint8_t jt; uint8_t jf; uint32_t k; };
struct sock_fprog { unsigned short len; struct sock_filter *filter; ...; };
struct seccomp_data {
    int nr;
    uint32_t arch;
    uint64_t instruction_pointer;
    unsigned long long args[6];  /* __u64, which is not uint64_t on x86_64 */
};
struct seccomp_notif {
    uint64_t id;
    uint32_t pid;
    uint32_t flags;
    struct seccomp_data data;
};
struct seccomp_notif_resp { uint64_t id; int64_t val; int32_t error; uint32_t flags; };
struct seccomp_notif_addfd {
    uint64_t id;
    uint32_t flags;
    uint32_t srcfd;
    uint32_t newfd;
    uint32_t newfd_flags;
};

int zocket_seccomp_set_mode_filter(unsigned int flags, const struct sock_fprog *prog);
int zocket_notif_recv(int listener, struct seccomp_notif *notif);
int zocket_notif_send(int listener, struct seccomp_notif_resp *resp);
int zocket_notif_id_valid(int listener, uint64_t id);
int zocket_notif_addfd(int listener, struct seccomp_notif_addfd *addfd);
int zocket_pidfd_getfd(int pidfd, int targetfd, unsigned int flags);
""",
    source=r"""
#if defined(__x86_64__)
static const unsigned int ZOCKET_AUDIT_ARCH = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
static const unsigned int ZOCKET_AUDIT_ARCH = AUDIT_ARCH_AARCH64;
#else
static const unsigned int ZOCKET_AUDIT_ARCH = 0;
#endif
#ifndef SECCOMP_ADDFD_FLAG_SEND
#define SECCOMP_ADDFD_FLAG_SEND (1UL << 1)
#endif
#if defined(SYS_seccomp) && defined(SECCOMP_IOCTL_NOTIF_ADDFD) \
    && defined(SECCOMP_ADDFD_FLAG_SETFD) && defined(SECCOMP_USER_NOTIF_FLAG_CONTINUE)
#define ZOCKET_HAS_SECCOMP_ADOPT 1
#else
#define ZOCKET_HAS_SECCOMP_ADOPT 0
#endif
static const int HAS_SECCOMP_ADOPT = ZOCKET_HAS_SECCOMP_ADOPT;
#ifdef SYS_pidfd_getfd
static const int HAS_PIDFD_GETFD = 1;
#else
static const int HAS_PIDFD_GETFD = 0;
#endif
static const long ZOCKET_SYS_bind = SYS_bind;
static const long ZOCKET_SYS_listen = SYS_listen;
static const long ZOCKET_SYS_shutdown = SYS_shutdown;
#ifdef SYS_seccomp
static const long ZOCKET_SYS_seccomp = SYS_seccomp;
#else
static const long ZOCKET_SYS_seccomp = -1;
#endif

/* seccomp(2) and the notification ioctls: glibc wraps neither. */
static int zocket_seccomp_set_mode_filter(unsigned int flags, const struct sock_fprog *prog)
{
#ifdef SYS_seccomp
    return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, prog);
#else
    errno = ENOSYS;
    return -1;
#endif
}

#if ZOCKET_HAS_SECCOMP_ADOPT
static int zocket_notif_recv(int listener, struct seccomp_notif *notif)
{
    return ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, notif);
}
static int zocket_notif_send(int listener, struct seccomp_notif_resp *resp)
{
    return ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, resp);
}
static int zocket_notif_id_valid(int listener, uint64_t id)
{
    return ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id);
}
static int zocket_notif_addfd(int listener, struct seccomp_notif_addfd *addfd)
{
    return ioctl(listener, SECCOMP_IOCTL_NOTIF_ADDFD, addfd);
}
#else
static int zocket_notif_recv(int l, struct seccomp_notif *n) { errno = ENOSYS; return -1; }
static int zocket_notif_send(int l, struct seccomp_notif_resp *r) { errno = ENOSYS; return -1; }
static int zocket_notif_id_valid(int l, uint64_t id) { errno = ENOSYS; return -1; }
static int zocket_notif_addfd(int l, struct seccomp_notif_addfd *a) { errno = ENOSYS; return -1; }
#endif

static int zocket_pidfd_getfd(int pidfd, int targetfd, unsigned int flags)
{
#ifdef SYS_pidfd_getfd
    return (int)syscall(SYS_pidfd_getfd, pidfd, targetfd, flags);
#else
    errno = ENOSYS;
    return -1;
#endif
}
""",
)


# A process that outlives a SIGKILLed holder just long enough to stop what it ran.
SENTRY = Area(
    "sentry",
    includes="""
#include <signal.h>
#include <time.h>
#include <sys/prctl.h>
#include <unistd.h>
""",
    cdef="""
#define ZOCKET_SENTRY_MAX_GROUPS ...
pid_t zocket_sentry(int readfd, int deathsig, int timeout_ms);
""",
    source=r"""
#define ZOCKET_SENTRY_MAX_GROUPS 4096

/* The sentry's whole life, in the child of fork(): no allocation, no lock, no
   Python. It reads int32 records from readfd: a positive number is a process
   group to stop should the holder die, a negative one a group that is gone,
   0 "the holder is exiting cleanly". EOF without a 0 means the holder died
   (SIGKILL, OOM): every group still listed gets deathsig, then SIGKILL after
   timeout_ms. PR_SET_PDEATHSIG reaches only a generation's first process;
   this reaches its whole group (the server behind a --shell, workers that
   ignore SIGTERM). */
static void zocket_sentry_main(int readfd, int deathsig, int timeout_ms)
{
    static pid_t groups[ZOCKET_SENTRY_MAX_GROUPS];
    int count = 0, i, j, waited, alive;
    int record;
    ssize_t n;
    struct timespec tick = {0, 50 * 1000 * 1000};

    for (;;) {
        n = read(readfd, &record, sizeof record);
        if (n < 0 && errno == EINTR)
            continue;
        if (n != (ssize_t)sizeof record)
            break;  /* EOF (or a torn record): the holder is gone */
        if (record == 0)
            _exit(0);
        if (record > 0) {
            if (count < ZOCKET_SENTRY_MAX_GROUPS)
                groups[count++] = record;
        } else {
            for (i = 0; i < count; i++)
                if (groups[i] == -record) {
                    for (j = i + 1; j < count; j++)
                        groups[j - 1] = groups[j];
                    count--;
                    break;
                }
        }
    }
    for (i = 0; i < count; i++)
        (void)kill(-groups[i], deathsig);
    for (waited = 0; waited < timeout_ms; waited += 50) {
        alive = 0;
        for (i = 0; i < count; i++)
            if (kill(-groups[i], 0) == 0)
                alive = 1;
        if (!alive)
            _exit(0);
        (void)nanosleep(&tick, NULL);
    }
    for (i = 0; i < count; i++)
        (void)kill(-groups[i], SIGKILL);
    _exit(0);
}

/* fork the sentry: own process group (a terminal's ^C is the holder's to
   handle), every signal blocked (a `pkill -HUP -f zocket` meant for the holder
   must not end it), every fd but readfd closed (it must hold no socket). */
static pid_t zocket_sentry(int readfd, int deathsig, int timeout_ms)
{
    sigset_t all, old;
    pid_t pid;
    int err;

    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid = fork();
    if (pid == 0) {
        int fd;
        (void)setpgid(0, 0);
        (void)prctl(PR_SET_NAME, (unsigned long)"zocket-sentry", 0UL, 0UL, 0UL);
        for (fd = 0; fd < readfd; fd++)
            (void)close(fd);
#ifdef SYS_close_range
        (void)syscall(SYS_close_range, (unsigned int)readfd + 1, ~0U, 0);
#else
        for (fd = readfd + 1; fd < 65536; fd++)
            (void)close(fd);
#endif
        zocket_sentry_main(readfd, deathsig, timeout_ms);
    }
    err = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = err;
    return pid;
}
""",
)


# The syscalls a server can wait for connections in.
WAIT_SYSCALLS = (
    "accept",
    "accept4",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
)

# What /proc/PID/task/TID/syscall can show a server waiting in: readiness reads the
# syscall number and its arguments, and the structures they point to.
SYSCALLS = Area(
    "syscalls",
    includes="""
#include <poll.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/syscall.h>
""",
    cdef="""
#define POLLIN ...
#define EPOLLIN ...
#define FD_SETSIZE ...
struct pollfd { int fd; short events; short revents; };
/* -1 where this architecture has no such syscall. */
""" + "".join(f"static const long ZOCKET_SYS_{name};\n" for name in WAIT_SYSCALLS),
    source="".join(
        f"#ifdef SYS_{name}\nstatic const long ZOCKET_SYS_{name} = SYS_{name};\n"
        f"#else\nstatic const long ZOCKET_SYS_{name} = -1;\n#endif\n"
        for name in WAIT_SYSCALLS
    ),
)


VERSION = Area(
    "version",
    includes="",
    cdef="const char *zocket_build_version(void);",
    source="",  # filled in by make_ffi(): the package version the module was built for
)

# SECCOMP before PROCESS: the child path uses its headers and ZOCKET_HAS_SECCOMP_ADOPT.
AREAS = (SOCKET, FCNTL, SIGNAL, SECCOMP, PROCESS, INOTIFY, SYSCALLS, SENTRY)


# What a tool built on zocket.libc reaches for beyond zocket's own needs: who is at the
# other end of a Unix socket, waiting on fds, a session of its own, leaving a forked
# child without running the parent's clean-up, the thread's name, resumed children.
TOOLS = Area(
    "tools",
    includes="""
#include <poll.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
""",
    cdef="""
#define SO_PEERCRED ...
#define POLLPRI ...
#define POLLOUT ...
#define POLLERR ...
#define POLLHUP ...
#define POLLNVAL ...
#define PR_GET_NAME ...

typedef int... uid_t;
typedef int... gid_t;
typedef int... nfds_t;
/* Python.h, included first by cffi, defines _GNU_SOURCE, which glibc needs for ucred. */
struct ucred { pid_t pid; uid_t uid; gid_t gid; };

int poll(struct pollfd *fds, nfds_t nfds, int timeout);
pid_t setsid(void);
void _exit(int status);
int WIFCONTINUED(int);
""",
)
AREAS += (TOOLS,)


def _package_version() -> str:
    namespace: dict[str, str] = {}
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "_version.py"), encoding="utf-8") as f:
        exec(f.read(), namespace)
    return namespace["__version__"]


def make_ffi() -> FFI:
    ffi = FFI()
    for area in AREAS + (VERSION,):
        ffi.cdef(area.cdef)
    version = _package_version()
    source = "\n".join(
        ["#include <errno.h>", "#include <pthread.h>"]
        + [a.includes for a in AREAS]
        + [a.source for a in AREAS]
        + [f'static const char *zocket_build_version(void) {{ return "{version}"; }}']
    )
    ffi.set_source("zocket._libc_cffi", source)
    return ffi


ffibuilder = make_ffi()

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    ffibuilder.compile(tmpdir=os.path.dirname(here), verbose=True)
