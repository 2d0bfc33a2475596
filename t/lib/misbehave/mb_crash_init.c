/*
 * A library that loads fine and whose libffi_init crashes (SIGSEGV): it
 * must be refused without taking a worker down.
 */

#include <stddef.h>


int libffi_init(char *cfg, void *tq);


/* volatile: the compiler may neither see the NULL nor turn it into a trap */
static volatile int *volatile  mb_nowhere = NULL;


int
libffi_init(char *cfg, void *tq)
{
    (void) cfg;
    (void) tq;

    *mb_nowhere = 1;

    return 0;
}
