/*
 * The unix-domain-socket echo server the benchmark compares ffi with: each
 * frame is a 4-byte big-endian length and that many bytes, sent back as is.
 */

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>


/* a frame larger than this is a client bug: drop the connection */
#define UDS_ECHO_MAX_FRAME  (64 * 1024 * 1024)


static int uds_echo_read_full(int fd, void *buf, size_t len);
static int uds_echo_write_full(int fd, struct iovec *iov, int iovcnt);
static void *uds_echo_serve(void *arg);


static const char  *uds_echo_path;


static void
uds_echo_on_signal(int signo)
{
    (void) signo;

    /* only async-signal-safe calls here: the socket file goes, then we */
    (void) unlink(uds_echo_path);
    _exit(0);
}


int
main(int argc, char **argv)
{
    int                  lfd, cfd;
    long                 fd;
    pthread_t            tid;
    pthread_attr_t       attr;
    struct sigaction     sa;
    struct sockaddr_un   sun;

    if (argc != 2 || strlen(argv[1]) >= sizeof(sun.sun_path)) {
        fprintf(stderr, "usage: %s SOCKET_PATH (at most %zu bytes)\n",
                argv[0], sizeof(sun.sun_path) - 1);
        return 2;
    }

    uds_echo_path = argv[1];

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = uds_echo_on_signal;
    (void) sigaction(SIGTERM, &sa, NULL);
    (void) sigaction(SIGINT, &sa, NULL);

    /* a client gone mid-write must cost that connection, not the server */
    sa.sa_handler = SIG_IGN;
    (void) sigaction(SIGPIPE, &sa, NULL);

    lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (lfd == -1) {
        perror("socket");
        return 1;
    }

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    strcpy(sun.sun_path, uds_echo_path);

    (void) unlink(uds_echo_path);

    if (bind(lfd, (struct sockaddr *) &sun, sizeof(sun)) == -1) {
        perror("bind");
        return 1;
    }

    /* nginx's workers may run as another user */
    (void) chmod(uds_echo_path, 0666);

    if (listen(lfd, 1024) == -1) {
        perror("listen");
        return 1;
    }

    (void) pthread_attr_init(&attr);
    (void) pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    (void) pthread_attr_setstacksize(&attr, 256 * 1024);

    /*
     * A thread per connection, blocking I/O: nginx keeps a small pool of
     * connections per worker, and both cores serve them in parallel.
     */
    for ( ;; ) {
        cfd = accept(lfd, NULL, NULL);
        if (cfd == -1) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }

            perror("accept");
            return 1;
        }

        fd = cfd;

        if (pthread_create(&tid, &attr, uds_echo_serve, (void *) fd) != 0) {
            fprintf(stderr, "uds_echo: pthread_create failed\n");
            (void) close(cfd);
        }
    }
}


static void *
uds_echo_serve(void *arg)
{
    int            fd = (int) (long) arg;
    char          *buf, *p;
    size_t         cap;
    uint32_t       len;
    unsigned char  hdr[4];
    struct iovec   iov[2];

    buf = NULL;
    cap = 0;

    while (uds_echo_read_full(fd, hdr, 4) == 0) {
        len = ((uint32_t) hdr[0] << 24) | ((uint32_t) hdr[1] << 16)
              | ((uint32_t) hdr[2] << 8) | hdr[3];

        if (len > UDS_ECHO_MAX_FRAME) {
            break;
        }

        if (len > cap) {
            p = realloc(buf, len);
            if (p == NULL) {
                break;
            }

            buf = p;
            cap = len;
        }

        if (len && uds_echo_read_full(fd, buf, len) != 0) {
            break;
        }

        iov[0].iov_base = hdr;
        iov[0].iov_len = 4;
        iov[1].iov_base = buf;
        iov[1].iov_len = len;

        if (uds_echo_write_full(fd, iov, 2) != 0) {
            break;
        }
    }

    free(buf);
    (void) close(fd);

    return NULL;
}


/* 0: got len bytes; -1: end of stream or error */

static int
uds_echo_read_full(int fd, void *buf, size_t len)
{
    char     *p = buf;
    ssize_t   n;

    while (len) {
        n = read(fd, p, len);

        if (n > 0) {
            p += n;
            len -= n;
            continue;
        }

        if (n == -1 && errno == EINTR) {
            continue;
        }

        return -1;
    }

    return 0;
}


static int
uds_echo_write_full(int fd, struct iovec *iov, int iovcnt)
{
    size_t   n;
    ssize_t  sent;

    while (iovcnt) {
        sent = writev(fd, iov, iovcnt);

        if (sent == -1) {
            if (errno == EINTR) {
                continue;
            }

            return -1;
        }

        n = sent;

        /* skip what went out; a partial write leaves the rest in place */
        while (iovcnt && n >= iov->iov_len) {
            n -= iov->iov_len;
            iov++;
            iovcnt--;
        }

        if (iovcnt) {
            iov->iov_base = (char *) iov->iov_base + n;
            iov->iov_len -= n;
        }
    }

    return 0;
}
