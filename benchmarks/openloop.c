/*
 * openloop: the benchmarks' open-loop HTTP client, as a process of its own.
 *
 * It does what benchmarks/load.py's OpenLoopLoad does (one GET per 1/RATE
 * seconds, each on a new connection, due at ORIGIN + k/RATE whatever became of
 * the ones before), in one thread of C with epoll.  The Python client shares a
 * core and a GIL with the runner; at 1000 requests/s its own lag (1-5 ms while
 * a new generation boots beside it) was counted as the server's latency.  This
 * one costs a few microseconds a request and is scheduled by the kernel as a
 * process of its own.
 *
 *   openloop HOST PORT PATH RATE TIMEOUT MAX_DURATION
 *
 * Its first line on stdout is "S ORIGIN_NS": the CLOCK_MONOTONIC time (ns) of
 * the load's zero, when the first request is due.  That is the clock of
 * Python's time.monotonic(), so the runner's marks and these records share one
 * clock.  Then every request ends as one line:
 *
 *   R scheduled started ended kind status generation error...
 *
 * times in seconds since the origin, status and generation "-" when there is
 * none.  The kinds are load.py's: ok, refused, reset, timeout, http_error,
 * error.  A line on stdin, or its end, stops the scheduling; the requests in
 * flight then get TIMEOUT + 5 s to end, and the last line is "E".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_RESPONSE (1 << 20)
#define MAX_EVENTS 256

enum state { CONNECTING, READING };

struct request {
    int fd;
    enum state state;
    double scheduled, started;
    char *buf;
    size_t len, cap;
    struct request *prev, *next; /* in flight, oldest first: timeouts pop the head */
};

static struct sockaddr_in target;
static char request_bytes[1024];
static size_t request_len;
static int64_t origin_ns;
static struct request *oldest, *newest;
static long in_flight;

static int64_t monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Seconds since the origin. */
static double now(void)
{
    return (double)(monotonic_ns() - origin_ns) / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "openloop: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void unlink_request(struct request *r)
{
    if (r->prev) r->prev->next = r->next; else oldest = r->next;
    if (r->next) r->next->prev = r->prev; else newest = r->prev;
    in_flight--;
}

/* One record line; the request is closed and freed. */
static void finish(struct request *r, const char *kind, int status, const char *generation,
                   const char *error)
{
    double ended = now();
    char code[16] = "-";
    if (status > 0) snprintf(code, sizeof code, "%d", status);
    printf("R %.6f %.6f %.6f %s %s %s %s\n", r->scheduled, r->started, ended, kind, code,
           generation && *generation ? generation : "-", error ? error : "");
    if (r->fd >= 0) close(r->fd);
    unlink_request(r);
    free(r->buf);
    free(r);
}

/* The outcome kind of a failed socket call, by errno: load.classify's rule in C. */
static const char *errno_kind(int err)
{
    switch (err) {
    case ECONNREFUSED: return "refused";
    case ECONNRESET: case EPIPE: case ECONNABORTED: return "reset";
    case ETIMEDOUT: return "timeout";
    default: return "error";
    }
}

static void fail_errno(struct request *r, const char *call, int err)
{
    char text[160];
    snprintf(text, sizeof text, "%s: [Errno %d] %s", call, err, strerror(err));
    finish(r, errno_kind(err), 0, NULL, text);
}

/* Case-insensitive header value of NAME in the header block (NUL-ended copy in OUT). */
static int header(const char *head, size_t head_len, const char *name, char *out, size_t size)
{
    size_t n = strlen(name);
    const char *line = memchr(head, '\n', head_len); /* skip the status line */
    const char *end = head + head_len;
    while (line && line + 1 < end) {
        line++;
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol) eol = end;
        if ((size_t)(eol - line) > n && strncasecmp(line, name, n) == 0 && line[n] == ':') {
            const char *v = line + n + 1;
            while (v < eol && (*v == ' ' || *v == '\t')) v++;
            const char *w = eol;
            while (w > v && (w[-1] == '\r' || w[-1] == ' ' || w[-1] == '\t')) w--;
            size_t len = (size_t)(w - v) < size - 1 ? (size_t)(w - v) : size - 1;
            memcpy(out, v, len);
            out[len] = '\0';
            for (size_t i = 0; i < len; i++)
                if (out[i] == ' ') out[i] = '_'; /* one word in the record line */
            return 1;
        }
        line = eol < end ? eol : NULL;
    }
    return 0;
}

/* Where the line starting at POS ends (just past its '\n'), or 0 if it has not all come. */
static size_t line_end(const char *buf, size_t len, size_t pos)
{
    const char *nl = pos < len ? memchr(buf + pos, '\n', len - pos) : NULL;
    return nl ? (size_t)(nl - buf) + 1 : 0;
}

/*
 * Whether the chunked body from POS is whole: 1 yes, 0 not yet, -1 it cannot be
 * (a chunk size that is no hex number).  As load.read_response: each chunk is
 * a size line (extensions after ';' ignored), the data and CRLF; after the
 * size-0 chunk one more line (the empty trailer), or the end of the stream.
 */
static int chunked_whole(const char *buf, size_t len, size_t pos, int eof)
{
    for (;;) {
        size_t end = line_end(buf, len, pos);
        if (!end) return 0;
        char *stop;
        unsigned long long size = strtoull(buf + pos, &stop, 16);
        if (stop == buf + pos && *stop != ';' && *stop != '\r' && *stop != '\n') return -1;
        if (size == 0) return line_end(buf, len, end) != 0 || eof;
        if (size > MAX_RESPONSE) return -1;
        pos = end + (size_t)size + 2;
        if (pos > len) return 0;
    }
}

/* Whether TEXT is all decimal digits (and not empty), as Python's str.isdigit for ASCII. */
static int all_digits(const char *text)
{
    if (!*text) return 0;
    for (; *text; text++)
        if (*text < '0' || *text > '9') return 0;
    return 1;
}

/*
 * Whether the response in R's buffer is whole, read as load.read_response
 * reads it: by Content-Length, by chunked encoding's last chunk, or (neither)
 * up to the end of the stream.  At EOF an incomplete one is a reset.
 */
static void consider(struct request *r, int eof)
{
    char *blank = memmem(r->buf, r->len, "\r\n\r\n", 4);
    size_t head_len = blank ? (size_t)(blank - r->buf) + 4 : 0;
    if (r->len >= 5 && memcmp(r->buf, "HTTP/", 5) != 0) {
        finish(r, "error", 0, NULL, "BadResponse: not an HTTP status line");
        return;
    }
    if (!blank) {
        if (eof)
            finish(r, "reset", 0, NULL,
                   r->len ? "ClosedEarly: connection closed in the response headers"
                          : "ClosedEarly: connection closed before a status line");
        return;
    }
    /* "HTTP/1.1 200 OK": the second word must be all digits. */
    char code[8] = "";
    const char *sp = memchr(r->buf, ' ', head_len);
    if (sp) {
        size_t n = strcspn(sp + 1, " \r\n");
        if (n < sizeof code) memcpy(code, sp + 1, n), code[n] = '\0';
    }
    if (!all_digits(code)) {
        finish(r, "error", 0, NULL, "BadResponse: not an HTTP status line");
        return;
    }
    int status = atoi(code);
    char generation[64] = "", value[64] = "";
    header(r->buf, head_len, "x-generation", generation, sizeof generation);
    int whole;
    if (header(r->buf, head_len, "transfer-encoding", value, sizeof value) &&
        strcasestr(value, "chunked")) {
        whole = chunked_whole(r->buf, r->len, head_len, eof);
        if (whole < 0) {
            finish(r, "error", 0, NULL, "ValueError: not a chunk size");
            return;
        }
    } else if (header(r->buf, head_len, "content-length", value, sizeof value)) {
        if (!all_digits(value)) {
            finish(r, "error", 0, NULL, "ValueError: not a Content-Length");
            return;
        }
        whole = r->len - head_len >= (size_t)strtoull(value, NULL, 10);
    } else {
        whole = eof;
    }
    if (whole)
        finish(r, status >= 200 && status < 400 ? "ok" : "http_error", status, generation, "");
    else if (eof)
        finish(r, "reset", 0, NULL, "ClosedEarly: connection closed in the body");
}

static void on_readable(struct request *r)
{
    for (;;) {
        if (r->cap - r->len < 4096) {
            if (r->cap >= MAX_RESPONSE) {
                finish(r, "error", 0, NULL, "response larger than 1 MiB");
                return;
            }
            r->cap = r->cap ? r->cap * 2 : 8192;
            r->buf = realloc(r->buf, r->cap);
            if (!r->buf) die("realloc");
        }
        ssize_t n = read(r->fd, r->buf + r->len, r->cap - r->len);
        if (n > 0) {
            r->len += (size_t)n;
            continue;
        }
        if (n == 0) {
            consider(r, 1);
            return;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN) {
            consider(r, 0);
            return;
        }
        fail_errno(r, "read", errno);
        return;
    }
}

static void on_connected(struct request *r, int epfd)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(r->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    if (err) {
        fail_errno(r, "connect", err);
        return;
    }
    /* A request of a few dozen bytes fits any empty send buffer: one write. */
    ssize_t n = send(r->fd, request_bytes, request_len, MSG_NOSIGNAL);
    if (n != (ssize_t)request_len) {
        fail_errno(r, "send", n < 0 ? errno : EPIPE);
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = r};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, r->fd, &ev) < 0) die("epoll_ctl");
    r->state = READING;
}

static void begin(double scheduled, int epfd)
{
    struct request *r = calloc(1, sizeof *r);
    if (!r) die("calloc");
    r->scheduled = scheduled;
    r->started = now();
    r->prev = newest;
    if (newest) newest->next = r; else oldest = r;
    newest = r;
    in_flight++;
    r->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (r->fd < 0) {
        fail_errno(r, "socket", errno);
        return;
    }
    if (connect(r->fd, (struct sockaddr *)&target, sizeof target) < 0 && errno != EINPROGRESS) {
        fail_errno(r, "connect", errno);
        return;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = r};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, r->fd, &ev) < 0) die("epoll_ctl");
    r->state = CONNECTING;
}

static void arm(int tfd, double due)
{
    int64_t at = origin_ns + (int64_t)(due * 1e9);
    struct itimerspec spec = {.it_value = {.tv_sec = at / 1000000000LL,
                                           .tv_nsec = at % 1000000000LL}};
    if (spec.it_value.tv_sec == 0 && spec.it_value.tv_nsec == 0) spec.it_value.tv_nsec = 1;
    if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &spec, NULL) < 0) die("timerfd_settime");
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: openloop HOST PORT PATH RATE TIMEOUT MAX_DURATION\n");
        return 2;
    }
    const char *host = argv[1], *path = argv[3];
    int port = atoi(argv[2]);
    double rate = atof(argv[4]), timeout = atof(argv[5]), max_duration = atof(argv[6]);
    if (port <= 0 || port > 65535 || rate <= 0 || timeout <= 0 || max_duration <= 0) {
        fprintf(stderr, "openloop: port, rate, timeout and max duration must be positive\n");
        return 2;
    }
    target.sin_family = AF_INET;
    target.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &target.sin_addr) != 1) {
        fprintf(stderr, "openloop: not an IPv4 address: %s\n", host);
        return 2;
    }
    int n = snprintf(request_bytes, sizeof request_bytes,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: zocket-bench\r\n"
                     "Connection: close\r\n\r\n", path, host, port);
    if (n < 0 || (size_t)n >= sizeof request_bytes) {
        fprintf(stderr, "openloop: path too long\n");
        return 2;
    }
    request_len = (size_t)n;
    /* A stall of seconds at 1000/s holds thousands of connections open. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    int epfd = epoll_create1(EPOLL_CLOEXEC);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (epfd < 0 || tfd < 0) die("epoll_create1/timerfd_create");
    /* The two fixed sources are told from requests by these addresses. */
    static char timer_tag, stdin_tag;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &timer_tag};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &ev) < 0) die("epoll_ctl timer");
    ev.data.ptr = &stdin_tag;
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, STDIN_FILENO, &ev) < 0) die("epoll_ctl stdin");

    origin_ns = monotonic_ns();
    printf("S %lld\n", (long long)origin_ns);
    fflush(stdout);

    long long limit = (long long)(rate * max_duration) + 1, k = 0;
    int scheduling = 1;
    double drain_until = 0;
    arm(tfd, 0.0);
    struct epoll_event events[MAX_EVENTS];
    while (scheduling || in_flight > 0) {
        double t = now();
        if (!scheduling && t >= drain_until) break;
        /* Timeouts: every request has the same one, so the oldest goes first. */
        while (oldest && t - oldest->started >= timeout)
            finish(oldest, "timeout", 0, NULL, "TimeoutError: no whole response in time");
        int wait_ms = scheduling ? 100 : 50;
        if (oldest) {
            double left = oldest->started + timeout - t;
            if (left * 1000 < wait_ms) wait_ms = left > 0 ? (int)(left * 1000) + 1 : 0;
        }
        fflush(stdout);
        int ready = epoll_wait(epfd, events, MAX_EVENTS, wait_ms);
        if (ready < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < ready; i++) {
            void *tag = events[i].data.ptr;
            if (tag == &timer_tag) {
                uint64_t ticks;
                if (read(tfd, &ticks, sizeof ticks) < 0 && errno != EAGAIN) die("read timer");
                if (!scheduling) continue;
                double t_now = now();
                while (k < limit && (double)k / rate <= t_now) begin((double)k++ / rate, epfd);
                if (k >= limit) {
                    scheduling = 0;
                    drain_until = now() + timeout + 5.0;
                } else {
                    arm(tfd, (double)k / rate);
                }
            } else if (tag == &stdin_tag) {
                char line[64];
                ssize_t got = read(STDIN_FILENO, line, sizeof line);
                (void)got; /* a line or the end: either way, stop */
                epoll_ctl(epfd, EPOLL_CTL_DEL, STDIN_FILENO, NULL);
                if (scheduling) {
                    scheduling = 0;
                    drain_until = now() + timeout + 5.0;
                }
            } else {
                struct request *r = tag;
                if (r->state == CONNECTING)
                    on_connected(r, epfd);
                else
                    on_readable(r);
            }
        }
    }
    while (oldest) finish(oldest, "error", 0, NULL, "cancelled when the load stopped");
    printf("E\n");
    fflush(stdout);
    return 0;
}
