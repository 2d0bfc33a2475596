/*
 * A stub library that mb_needs_gone is linked against and that is deleted
 * right after: loading mb_needs_gone then fails on a missing DT_NEEDED.
 */

int
mb_gone_answer(void)
{
    return 42;
}
