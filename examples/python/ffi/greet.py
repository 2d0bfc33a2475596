# Runtimes for lua-resty-ffi's Python loader written the simple way: the
# loader polls; each request's bytes go to a handler marked resty_ffi.handler.

import resty_ffi


@resty_ffi.handler
def upper(req: bytes) -> bytes:
    """ngx.load_ffi("ffi_python3", "ffi.greet,upper", ...)"""
    return req.upper()


@resty_ffi.handler
class Greeter:
    """ngx.load_ffi("ffi_python3", "ffi.greet,Greeter,Hello", ...)

    One instance per runtime, made with the text after the function name
    (None when there is none); each request calls it.
    """

    def __init__(self, cfg):
        self.greeting = cfg or "Hi"

    def __call__(self, req: bytes) -> str:
        if not req:
            raise ValueError("nobody to greet")
        return f"{self.greeting}, {req.decode()}!"

    def close(self):
        """Called once, when the runtime is unloaded."""
