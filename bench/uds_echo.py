# The Python unix-socket echo server the benchmark compares the Python
# runtime through ffi with, the way a plugin server talks to nginx: each
# frame is a 4-byte big-endian length and that many bytes, sent back as is;
# asyncio from the standard library, a task per connection.

import asyncio
import os
import signal
import struct
import sys

# a frame larger than this is a client bug: drop the connection
MAX_FRAME = 64 * 1024 * 1024


async def serve(reader, writer):
    try:
        while True:
            hdr = await reader.readexactly(4)
            (n,) = struct.unpack(">I", hdr)
            if n > MAX_FRAME:
                break
            body = await reader.readexactly(n) if n else b""
            writer.write(hdr + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(path):
    if os.path.exists(path):
        os.unlink(path)
    # a backlog like bench/uds_echo.c's: nginx opens up to 256 at once
    server = await asyncio.start_unix_server(serve, path, limit=1 << 20,
                                             backlog=1024)

    # the socket file goes with the server
    stop = asyncio.get_running_loop().create_future()
    for signo in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        asyncio.get_running_loop().add_signal_handler(
            signo, lambda: stop.done() or stop.set_result(None))
    async with server:
        await stop
    if os.path.exists(path):
        os.unlink(path)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.stderr.write("usage: %s SOCKET_PATH\n" % sys.argv[0])
        sys.exit(2)
    asyncio.run(main(sys.argv[1]))
