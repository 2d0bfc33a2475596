/*
 * A good runtime in every way but one: it needs libmb_gone.so, which does
 * not exist where the loader looks.
 */

int libffi_init(char *cfg, void *tq);
int mb_gone_answer(void);


int
libffi_init(char *cfg, void *tq)
{
    (void) cfg;
    (void) tq;

    return mb_gone_answer() == 42 ? 0 : 1;
}
