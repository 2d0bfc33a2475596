/*
 * A program, not a library, that still exports libffi_init (-rdynamic):
 * built as a PIE and as a plain executable, both must be refused.
 */

int libffi_init(char *cfg, void *tq);


int
libffi_init(char *cfg, void *tq)
{
    (void) cfg;
    (void) tq;

    return 0;
}


int
main(void)
{
    return libffi_init((char *) 0, (void *) 0);
}
