-- The benchmark's Lua handlers (bench/nginx.conf.in): the same echo through
-- ffi to each language's runtime, through a cosocket to each unix-socket
-- server (bench/uds_echo.c, .go, .py), and in pure Lua (the ceiling).

local ffi = require "ffi"
local bit = require "bit"

local ngx = ngx
local C = ffi.C
local ffi_new = ffi.new
local str_char = string.char
local str_byte = string.byte
local str_rep = string.rep
local band = bit.band
local rshift = bit.rshift
local lshift = bit.lshift
local bor = bit.bor
local tonumber = tonumber
local concat = table.concat

ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec_t;
int clock_gettime(int clk_id, bench_timespec_t *tp);
]]

local CLOCK_MONOTONIC = 1
local UDS_POOL = 512

local _M = {}

-- the echo runtimes of examples/ (CONTRACT.md, section 7): key -> how
-- Lua loads it. No trial process for the examples: on a busy machine a
-- JVM can take longer to start than the trial waits, and the trial costs
-- nothing per call; the demo keeps it (its reloads are measured)
local RUNTIMES = {
    c = {"demo", nil, {unpin = true}},
    go = {"ffi_go_echo", nil, {trial = false}},
    rust = {"ffi_rust_echo", nil, {trial = false}},
    python = {"ffi_python3", "ffi.echo?,init",
              {is_global = true, trial = false}},
    java = {"ffi_java", "demo.echo.App?,init,", {trial = false}},
    nodejs = {"ffi_nodejs", "demo/echo?,init",
              {is_global = true, trial = false}},
}

local RUNTIME_KEYS = {"c", "go", "rust", "python", "java", "nodejs"}

local uds_paths = {}
local payloads = {}
local ts = ffi_new("bench_timespec_t")


local function now()
    C.clock_gettime(CLOCK_MONOTONIC, ts)
    return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end


-- the same bytes for every handler and every run: a repeated pattern
local function payload(size)
    local p = payloads[size]
    if p then
        return p
    end

    local unit = "0123456789abcdefghijklmnopqrstuvwxyz"
                 .. "ABCDEFGHIJKLMNOPQRSTUVWXYZ-_"
    p = str_rep(unit, math.ceil(size / #unit)):sub(1, size)
    payloads[size] = p
    return p
end


local function frame_header(len)
    return str_char(band(rshift(len, 24), 255), band(rshift(len, 16), 255),
                    band(rshift(len, 8), 255), band(len, 255))
end


local function frame_len(hdr)
    local b1, b2, b3, b4 = str_byte(hdr, 1, 4)
    return bor(lshift(b1, 24), lshift(b2, 16), lshift(b3, 8), b4)
end


local function rt(key)
    local r = RUNTIMES[key]
    if not r then
        return nil, "no runtime " .. tostring(key)
    end

    return ngx.load_ffi(r[1], r[2], r[3])
end


local function uds_connect(key)
    local path = uds_paths[key]
    if not path then
        return nil, "no unix-socket server " .. tostring(key)
    end

    local sock = ngx.socket.tcp()
    sock:settimeouts(5000, 5000, 5000)

    local ok, err = sock:connect("unix:" .. path,
                                 {pool = "uds_" .. key, pool_size = UDS_POOL})
    if not ok then
        return nil, err
    end

    return sock
end


-- one round trip: the framed request out, the framed answer back
local function uds_call(sock, req)
    local ok, err = sock:send({frame_header(#req), req})
    if not ok then
        return nil, err
    end

    local hdr
    hdr, err = sock:receive(4)
    if not hdr then
        return nil, err
    end

    local len = frame_len(hdr)
    if len == 0 then
        return ""
    end

    return sock:receive(len)
end


-- paths: the unix-socket servers'; keys: the runtimes each worker starts
-- (nil: all; the metrics A/B starts only the C demo)
function _M.init(paths, keys)
    uds_paths = paths
    RUNTIME_KEYS = keys or RUNTIME_KEYS
end


-- each worker starts every runtime and makes one call to it, off the
-- request path; /ready counts the runtimes that answered
local function warm_up(premature)
    if premature then
        return
    end

    local dict = ngx.shared.bench
    for _, key in ipairs(RUNTIME_KEYS) do
        local r, err = rt(key)
        local ok, res
        if r then
            ok, res, err = r:echo("warm")
        end
        if ok and res == "warm" then
            dict:incr("ready", 1, 0)
        else
            dict:set("error:" .. key, tostring(err or res))
            ngx.log(ngx.ERR, "bench: runtime ", key, ": ",
                    tostring(err or res))
        end
    end
end


function _M.warm()
    local ok, err = ngx.timer.at(0, warm_up)
    if not ok then
        ngx.log(ngx.ERR, "bench: no timer: ", err)
    end
end


-- GET /ready: {"ready":N,"want":M,"errors":{...}}
function _M.ready()
    local dict = ngx.shared.bench
    local errors = {}
    for _, key in ipairs(RUNTIME_KEYS) do
        local e = dict:get("error:" .. key)
        if e then
            errors[#errors + 1] = '"' .. key .. '":"'
                                  .. e:gsub('[%c"\\]', "?") .. '"'
        end
    end

    ngx.header["Content-Type"] = "application/json"
    ngx.print('{"ready":', dict:get("ready") or 0, ',"want":',
              #RUNTIME_KEYS * ngx.worker.count(), ',"errors":{',
              concat(errors, ","), '}}\n')
end


-- GET /ffi-KEY?size=N: the echo of N bytes through ffi to runtime KEY
function _M.ffi_echo(key)
    local req = payload(tonumber(ngx.var.arg_size) or 512)
    local demo, err = rt(key)
    if not demo then
        ngx.status = 500
        ngx.say("load: ", err)
        return
    end

    local ok, res, rt_err = demo:echo(req)
    if not ok or res ~= req then
        ngx.status = 502
        ngx.say("echo: ", tostring(res), " ", tostring(rt_err))
        return
    end

    ngx.print(res)
end


-- GET /uds-KEY?size=N: the same echo through a pooled connection to the
-- unix-socket server KEY
function _M.uds_echo(key)
    local req = payload(tonumber(ngx.var.arg_size) or 512)
    local sock, err = uds_connect(key)
    if not sock then
        ngx.status = 502
        ngx.say("connect: ", err)
        return
    end

    local res
    res, err = uds_call(sock, req)
    if res ~= req then
        sock:close()
        ngx.status = 502
        ngx.say("echo: ", tostring(err))
        return
    end

    sock:setkeepalive(60000, UDS_POOL)
    ngx.print(res)
end


-- GET /lua?size=N: the same bytes with no round trip at all
function _M.lua_echo()
    ngx.print(payload(tonumber(ngx.var.arg_size) or 512))
end


-- n calls in a row from one coroutine; returns the number that failed
local function seq_ffi(key, req, n)
    local demo = rt(key)
    if not demo then
        return n
    end

    local bad = 0

    for _ = 1, n do
        local ok, res = demo:echo(req)
        -- strings are interned: == compares pointers, not bytes
        if not ok or res ~= req then
            bad = bad + 1
        end
    end

    return bad
end


local function seq_uds(key, req, n)
    local sock = uds_connect(key)
    if not sock then
        return n
    end

    local bad = 0

    for i = 1, n do
        local res = uds_call(sock, req)
        if res ~= req then
            bad = bad + (n - i + 1)
            sock:close()
            return bad
        end
    end

    sock:setkeepalive(60000, UDS_POOL)
    return bad
end


-- GET /seq?way=ffi-KEY|uds-KEY&size=N&n=N&conc=K: n calls of N bytes,
-- from K light threads (1: one coroutine, strictly sequential); JSON
function _M.seq()
    local args = ngx.req.get_uri_args()
    local way = args.way or "ffi-c"
    local via, key = way:match("^(%a+)%-(%w+)$")
    local size = tonumber(args.size) or 512
    local n = tonumber(args.n) or 1000
    local conc = tonumber(args.conc) or 1
    local f = (via == "uds") and seq_uds or seq_ffi
    local req = payload(size)

    if not key or (via ~= "uds" and via ~= "ffi") then
        ngx.status = 400
        ngx.say("way: ffi-KEY or uds-KEY")
        return
    end

    -- warm both sides (connection, runtime, JIT) outside the timing
    f(key, req, 100)

    local t0 = now()
    local bad = 0

    if conc <= 1 then
        bad = f(key, req, n)

    else
        local threads = {}
        for i = 1, conc do
            local share = math.floor(n / conc)
            if i == conc then
                share = n - share * (conc - 1)
            end
            threads[i] = ngx.thread.spawn(f, key, req, share)
        end

        for i = 1, conc do
            local ok, b = ngx.thread.wait(threads[i])
            bad = bad + (ok and b or n)
        end
    end

    local secs = now() - t0

    ngx.header["Content-Type"] = "application/json"
    ngx.print(concat({
        '{"way":"', way,
        '","size":', size, ',"n":', n, ',"conc":', conc,
        ',"errors":', bad, ',"secs":', string.format("%.6f", secs),
        ',"pid":', ngx.worker.pid(), '}\n'
    }))
end


return _M
