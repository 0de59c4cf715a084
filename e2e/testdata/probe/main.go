// Command probe is run inside sandboxes by the adversarial end-to-end tests:
// each subcommand tries one thing a sandboxed step must not be able to do and
// prints "ESCAPED: ..." when it succeeds, "CONTAINED: ..." when the kernel
// (or gVisor) refuses. It is built statically and put into the test image.
package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: probe ptrace PID | raw | packet | mount | module | setuid | tcp ADDR | udp ADDR | ping IP | uid")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "ptrace":
		pid, _ := strconv.Atoi(os.Args[2])
		report("ptrace attach to pid "+os.Args[2], unix.PtraceAttach(pid))
	case "raw":
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP)
		if err == nil {
			unix.Close(fd)
		}
		report("raw socket", err)
	case "packet":
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0x0300)
		if err == nil {
			unix.Close(fd)
		}
		report("packet socket", err)
	case "mount":
		os.MkdirAll("/tmp/m", 0o755)
		report("mount tmpfs", unix.Mount("none", "/tmp/m", "tmpfs", 0, ""))
	case "module":
		// A module image that is not one: only the permission check matters.
		report("init_module", unix.InitModule([]byte("\x7fELF-not-a-module"), ""))
	case "setuid":
		report("setuid(0)", unix.Setuid(0))
	case "ping":
		ping(os.Args[2])
	case "uid":
		fmt.Printf("uid=%d euid=%d\n", os.Getuid(), os.Geteuid())
	case "tcp", "udp":
		// Reachability: a TCP connect, or a UDP datagram that an echo
		// server answers.
		c, err := net.DialTimeout(os.Args[1], os.Args[2], 2*time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(2 * time.Second))
			_, err = c.Write([]byte("ping\n"))
			if err == nil {
				buf := make([]byte, 64)
				_, err = c.Read(buf)
			}
			c.Close()
		}
		if err == nil {
			fmt.Printf("REACHED: %s %s\n", os.Args[1], os.Args[2])
		} else {
			fmt.Printf("UNREACHABLE: %s %s: %v\n", os.Args[1], os.Args[2], err)
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown probe", os.Args[1])
		os.Exit(2)
	}
}

func report(what string, err error) {
	if err == nil {
		fmt.Printf("ESCAPED: %s succeeded\n", what)
		return
	}
	fmt.Printf("CONTAINED: %s: %v\n", what, err)
}

// ping sends one ICMP echo request from an unprivileged ICMP socket (what
// ping uses without NET_RAW) and waits 2 s for the reply.
func ping(ip string) {
	addr := net.ParseIP(ip).To4()
	err := func() error {
		if addr == nil {
			return fmt.Errorf("not an IPv4 address")
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_ICMP)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		tv := unix.NsecToTimeval(int64(2 * time.Second))
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		msg := []byte{8, 0, 0, 0, 0, 0, 0, 1, 'a', 'i', 'r', 'l', 'o', 'c', 'k'} // the kernel sets the ID and checksum
		to := &unix.SockaddrInet4{}
		copy(to.Addr[:], addr)
		if err := unix.Sendto(fd, msg, 0, to); err != nil {
			return err
		}
		buf := make([]byte, 1500)
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return err
		}
		if n < 8 || buf[0] != 0 {
			return fmt.Errorf("not an echo reply (type %d)", buf[0])
		}
		return nil
	}()
	if err == nil {
		fmt.Printf("REACHED: ping %s\n", ip)
	} else {
		fmt.Printf("UNREACHABLE: ping %s: %v\n", ip, err)
	}
}
