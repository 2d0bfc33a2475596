-- lua-resty-ffi for nginx: `require "resty_ffi"` installs ngx.load_ffi.
-- The Lua side only checks arguments and yields; the work is in C.

local ffi = require "ffi"
local base = require "resty.core.base"

local C = ffi.C
local ffi_gc = ffi.gc
local ffi_new = ffi.new
local ffi_str = ffi.string
local get_request = base.get_request
local co_yield = coroutine._yield
local setmetatable = setmetatable
local tonumber = tonumber
local error = error
local floor = math.floor
local type = type

ffi.cdef[[
void *ngx_http_lua_ffi_rt_load(const char *lib, size_t lib_len,
    const char *cfg, size_t cfg_len, int max_queue, int flags,
    int timeout_ms, int *rc, unsigned char *err, size_t *errlen);
int ngx_http_lua_ffi_rt_call(ngx_http_request_t *r, void *h,
    const char *req, int req_len, int timeout_ms, int *anchor,
    const char **err);
void ngx_http_lua_ffi_rt_unload(void *h);
void ngx_http_lua_ffi_rt_release(void *h);
]]

local ERRLEN = 512
local LOAD_GLOBAL = 1
local LOAD_UNPIN = 2
local LOAD_NO_TRIAL = 4
local DEFAULT_MAX_QUEUE = 65536

local errp = ffi_new("const char *[1]")
local anchorp = ffi_new("int[1]")
local rcp = ffi_new("int[1]")
local errlenp = ffi_new("size_t[1]")
local errbuf = ffi_new("unsigned char[?]", ERRLEN)

-- runtimes of this Lua VM by key; the C registry keeps them across VMs
local runtimes = {}

-- requests a runtime reads in place (16 KB and more), by task index: kept
-- alive until the task is freed, when C removes them (also after Lua
-- stopped waiting); C finds the table in the registry under this name
local anchors
do
    local registry = debug.getregistry()
    anchors = registry.ngx_http_lua_ffi_anchors or {}
    registry.ngx_http_lua_ffi_anchors = anchors
end

-- the longest timer nginx keeps (ms in an int); longer means "no timeout"
local MAX_MS = 2147483647

-- nil: no timeout of its own (-1); 0: none (a call's 0 overrides the
-- runtime's); any other number: at least 1 ms, so that a tiny timeout is
-- the shortest one and never rounds to 0
local function seconds_to_ms(t, what)
    if t == nil then
        return -1
    end

    if type(t) ~= "number" or not (t >= 0) then
        error("bad " .. what .. ": non-negative number of seconds expected",
              3)
    end

    if t == 0 then
        return 0
    end

    local ms = floor(t * 1000 + 0.5)
    if ms < 1 then
        return 1
    end

    if ms > MAX_MS then
        return MAX_MS
    end

    return ms
end


local function call(self, req, timeout)
    local r = get_request()
    if not r then
        return false, "no request found"
    end

    local len = 0
    if req ~= nil then
        if type(req) ~= "string" then
            error("bad request: string or nil expected, got " .. type(req), 2)
        end
        len = #req
    end

    local ms = seconds_to_ms(timeout, "timeout")

    if C.ngx_http_lua_ffi_rt_call(r, self._h, req, len, ms, anchorp, errp)
       == 0
    then
        local anchor = anchorp[0]
        if anchor >= 0 then
            anchors[anchor] = req
        end

        return co_yield()
    end

    return false, ffi_str(errp[0])
end


local function unload(self)
    if self._unloaded then
        return true
    end

    self._unloaded = true
    C.ngx_http_lua_ffi_rt_unload(self._h)

    if runtimes[self._key] == self then
        runtimes[self._key] = nil
    end

    return true
end


local mt = {
    __index = function(_, name)
        if name == "__unload" then
            return unload
        end

        -- every other method name is a call: the name only documents it
        return call
    end,

    __tostring = function(self)
        return "ffi runtime " .. self._name
    end,
}


local function load_ffi(lib, cfg, opts)
    if type(lib) ~= "string" or lib == "" then
        error("bad lib: non-empty string expected", 2)
    end

    if cfg ~= nil and type(cfg) ~= "string" then
        error("bad cfg: string or nil expected", 2)
    end

    -- lib's length first: no (lib, cfg) pair can spell another's key
    local key = #lib .. ":" .. lib .. (cfg and "&" .. cfg or "")
    local rt = runtimes[key]
    if rt then
        return rt
    end

    if opts ~= nil and type(opts) ~= "table" then
        error("bad opts: table or nil expected", 2)
    end

    opts = opts or {}

    local max_queue = opts.max_queue or DEFAULT_MAX_QUEUE
    if type(max_queue) ~= "number" or max_queue < 1
       or max_queue ~= floor(max_queue) or max_queue > 2147483647
    then
        error("bad opts.max_queue: positive integer expected", 2)
    end

    local flags = 0
    if opts.is_global then
        flags = flags + LOAD_GLOBAL
    end
    if opts.unpin then
        flags = flags + LOAD_UNPIN
    end
    -- libffi_init with side effects (ports, connections): no trial run
    if opts.trial == false then
        flags = flags + LOAD_NO_TRIAL
    end

    local timeout = seconds_to_ms(opts.timeout, "opts.timeout")

    rcp[0] = 0
    errlenp[0] = ERRLEN

    local h = C.ngx_http_lua_ffi_rt_load(lib, #lib, cfg, cfg and #cfg or 0,
                                         max_queue, flags, timeout, rcp,
                                         errbuf, errlenp)
    if h == nil then
        if rcp[0] ~= 0 then
            return nil, tonumber(rcp[0])
        end

        return nil, ffi_str(errbuf, errlenp[0])
    end

    rt = setmetatable({
        _h = ffi_gc(h, C.ngx_http_lua_ffi_rt_release),
        _key = key,
        _name = cfg and lib .. "&" .. cfg or lib,
        -- present from the start: a missing field would reach __index
        _unloaded = false,
    }, mt)

    runtimes[key] = rt

    return rt
end


ngx.load_ffi = load_ffi

return {
    version = "0.1.0",
    load_ffi = load_ffi,
}
