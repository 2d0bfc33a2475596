module ffi_go_echo

go 1.19
