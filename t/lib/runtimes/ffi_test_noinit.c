/*
 * libffi_test_noinit: a well-formed shared object that lacks libffi_init,
 * so the tests can check that loading it is refused cleanly.
 */


int ffi_test_noinit_marker(void);


int
ffi_test_noinit_marker(void)
{
    return 42;
}
