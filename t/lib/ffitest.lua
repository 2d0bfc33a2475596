-- Lua helpers for the tests (t/lib is on lua_package_path in FFITest.pm).

local _M = {}


-- echo_check(label, runtimes, n, width, maxlen): n calls, width at a time,
-- spread over the runtimes ({rt, right(req, res)} pairs), with payloads of
-- every byte value and sizes up to n (or maxlen); logs how many were right
function _M.echo_check(label, runtimes, n, width, maxlen)
    local good = 0

    local function caller(first)
        for i = first, n, width do
            local r = runtimes[i % #runtimes + 1]
            local size = maxlen and i % maxlen or i
            local req = string.rep(string.char(i % 256), size) .. i
            local ok, res = r[1]:call(req)
            if ok and r[2](req, res) then
                good = good + 1
            end
        end
    end

    local threads = {}
    for t = 1, width do
        threads[t] = ngx.thread.spawn(caller, t)
    end
    for t = 1, width do
        ngx.thread.wait(threads[t])
    end

    ngx.log(ngx.NOTICE, label, ": ", good, " of ", n, " calls right")
end


return _M
