-- The benchmark's Lua handlers (bench/nginx.conf.in): the same echo through
-- ffi, through a cosocket to bench/uds_echo, and in pure Lua (the ceiling).

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

local uds_path
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


local function rt()
    return ngx.load_ffi("demo", nil, {unpin = true})
end


local function uds_connect()
    local sock = ngx.socket.tcp()
    sock:settimeouts(5000, 5000, 5000)

    local ok, err = sock:connect("unix:" .. uds_path,
                                 {pool = "uds_echo", pool_size = UDS_POOL})
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


function _M.init(path)
    uds_path = path
end


-- GET /ffi?size=N: the ffi echo of N bytes
function _M.ffi_echo()
    local req = payload(tonumber(ngx.var.arg_size) or 512)
    local demo, err = rt()
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


-- GET /uds?size=N: the same echo through a pooled unix-socket connection
function _M.uds_echo()
    local req = payload(tonumber(ngx.var.arg_size) or 512)
    local sock, err = uds_connect()
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
local function seq_ffi(req, n)
    local demo = rt()
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


local function seq_uds(req, n)
    local sock = uds_connect()
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


-- GET /seq?via=ffi|uds&size=N&n=N&conc=K: n calls of N bytes, from K
-- light threads (1: one coroutine, strictly sequential); JSON timing
function _M.seq()
    local args = ngx.req.get_uri_args()
    local via = args.via
    local size = tonumber(args.size) or 512
    local n = tonumber(args.n) or 1000
    local conc = tonumber(args.conc) or 1
    local f = (via == "uds") and seq_uds or seq_ffi
    local req = payload(size)

    -- warm both sides (connection, runtime, JIT) outside the timing
    f(req, 100)

    local t0 = now()
    local bad = 0

    if conc <= 1 then
        bad = f(req, n)

    else
        local threads = {}
        for i = 1, conc do
            local share = math.floor(n / conc)
            if i == conc then
                share = n - share * (conc - 1)
            end
            threads[i] = ngx.thread.spawn(f, req, share)
        end

        for i = 1, conc do
            local ok, b = ngx.thread.wait(threads[i])
            bad = bad + (ok and b or n)
        end
    end

    local secs = now() - t0

    ngx.header["Content-Type"] = "application/json"
    ngx.print(concat({
        '{"via":"', via == "uds" and "uds" or "ffi",
        '","size":', size, ',"n":', n, ',"conc":', conc,
        ',"errors":', bad, ',"secs":', string.format("%.6f", secs),
        ',"pid":', ngx.worker.pid(), '}\n'
    }))
end


return _M
