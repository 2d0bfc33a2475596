// The Go unix-socket echo server the benchmark compares the Go runtime
// through ffi with, written the way a plugin server (Kong's, APISIX's
// runner) talks to nginx: each frame is a 4-byte big-endian length and
// that many bytes, sent back as is; a goroutine per connection. Standard
// library only, built in GOPATH mode (bench/run.sh): no module download.
package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
)

// a frame larger than this is a client bug: drop the connection
const maxFrame = 64 * 1024 * 1024

func serve(c net.Conn) {
	defer c.Close()

	r := bufio.NewReaderSize(c, 64*1024)
	hdr := make([]byte, 4)
	var buf []byte

	for {
		if _, err := io.ReadFull(r, hdr); err != nil {
			return
		}

		n := binary.BigEndian.Uint32(hdr)
		if n > maxFrame {
			return
		}

		// one buffer for the header and the body: one write per answer
		if cap(buf) < int(n)+4 {
			buf = make([]byte, int(n)+4)
		}
		buf = buf[:int(n)+4]
		copy(buf, hdr)

		if _, err := io.ReadFull(r, buf[4:]); err != nil {
			return
		}

		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintf(os.Stderr, "usage: %s SOCKET_PATH\n", os.Args[0])
		os.Exit(2)
	}

	path := os.Args[1]
	os.Remove(path)

	l, err := net.Listen("unix", path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "uds_echo_go:", err)
		os.Exit(1)
	}

	// the socket file goes with the server
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	go func() {
		<-sig
		l.Close()
		os.Remove(path)
		os.Exit(0)
	}()

	for {
		c, err := l.Accept()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Temporary() {
				continue
			}
			return
		}
		go serve(c)
	}
}
