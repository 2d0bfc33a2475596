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
        # the runtime services: print() reaches nginx's error.log, and
        # starts are counted where nginx.conf has lua_shared_dict
        # ffi_examples (Lua: ngx.shared.ffi_examples:get("python_starts"))
        try:
            starts = resty_ffi.dict_incr("ffi_examples", "python_starts")
            print(f"ffi.greet: Greeter start number {starts:.0f}")
        except resty_ffi.DictError:
            print("ffi.greet: Greeter start")

    def __call__(self, req: bytes) -> str:
        if not req:
            raise ValueError("nobody to greet")
        return f"{self.greeting}, {req.decode()}!"

    def close(self):
        """Called once, when the runtime is unloaded."""
