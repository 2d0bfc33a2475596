/*
 * A runtime that answers once more after the worker's exit work is done:
 * from its destructor, a stray answer to a call long answered. Before
 * that it gives the number of the worker's eventfd, if nginx closed it,
 * to a file (cfg: its path), as any code of the process may by then.
 */

#include "mb.h"

#include <errno.h>
#include <fcntl.h>
#include <dirent.h>


#define MB_FDS  16

static int    mb_fds[MB_FDS];       /* the eventfds open at libffi_init */
static int    mb_nfds;
static char  *mb_witness;
static void  *mb_old;               /* the handle of an answered call */


static void
mb_find_eventfds(void)
{
    char            path[300], link[64];
    ssize_t         n;
    DIR            *dir;
    struct dirent  *de;

    dir = opendir("/proc/self/fd");
    if (dir == NULL) {
        return;
    }

    while ((de = readdir(dir)) != NULL && mb_nfds < MB_FDS) {
        snprintf(path, sizeof(path), "/proc/self/fd/%s", de->d_name);
        n = readlink(path, link, sizeof(link) - 1);

        if (n > 0) {
            link[n] = '\0';

            if (strcmp(link, "anon_inode:[eventfd]") == 0) {
                mb_fds[mb_nfds++] = atoi(de->d_name);
            }
        }
    }

    closedir(dir);
}


static void *
mb_late_fd_poll(void *tq)
{
    int    len;
    char  *req;
    void  *task;

    while ((task = ngx_http_lua_ffi_task_poll(tq)) != NULL) {
        req = mb_req(task, &len);
        mb_old = task;
        ngx_http_lua_ffi_respond(task, 0, req ? mb_dup(req, len) : NULL, 0);
        free(req);
    }

    return NULL;
}


int
libffi_init(char *cfg, void *tq)
{
    if (cfg == NULL) {
        return 1;
    }

    mb_witness = strdup(cfg);
    mb_find_eventfds();
    mb_log("mb_late_fd: %d eventfd(s) open", mb_nfds);

    return mb_spawn(mb_late_fd_poll, tq) == 0 ? 0 : 1;
}


__attribute__((destructor)) static void
mb_late_fd_fini(void)
{
    int  i, fd, reused;

    mb_join_all();

    if (mb_witness == NULL || mb_old == NULL) {
        return;
    }

    reused = 0;

    for (i = 0; i < mb_nfds; i++) {
        if (fcntl(mb_fds[i], F_GETFD) != -1 || errno != EBADF) {
            continue;
        }

        fd = open(mb_witness, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                  0644);
        if (fd == -1) {
            continue;
        }

        if (fd != mb_fds[i]) {
            (void) dup2(fd, mb_fds[i]);
            (void) close(fd);
        }

        reused++;
    }

    ngx_http_lua_ffi_respond(mb_old, 0, mb_dup("late", 4), 0);

    mb_log("mb_late_fd: answered late, %d closed eventfd(s) reused",
           reused);
}
