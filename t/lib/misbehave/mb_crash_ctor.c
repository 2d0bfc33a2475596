/*
 * A library whose ELF constructor crashes (SIGSEGV) as soon as it is
 * mapped: it must be refused without taking a worker down.
 */

#include <stddef.h>


int libffi_init(char *cfg, void *tq);


static volatile int *volatile  mb_nowhere = NULL;


__attribute__((constructor)) static void
mb_crash_ctor(void)
{
    *mb_nowhere = 1;
}


int
libffi_init(char *cfg, void *tq)
{
    (void) cfg;
    (void) tq;

    return 0;
}
