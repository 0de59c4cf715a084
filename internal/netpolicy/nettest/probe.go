package nettest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"time"
)

// Silent reports whether a probe's error means that nothing answered at all
// before its context's deadline: the mark of a dropped packet. A refusal (a
// TCP reset, an ICMP error) or a wrong answer is not silent.
func Silent(err error) bool {
	if err == nil {
		return false
	}
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// TCPEcho connects to an echo service at dst from inside n and checks that
// what it sends comes back.
func (n Netns) TCPEcho(ctx context.Context, dst netip.AddrPort) error {
	c, err := n.Dial(ctx, "tcp4", dst.String())
	if err != nil {
		return err
	}
	defer c.Close()
	return roundTrip(ctx, c)
}

// UDPEcho sends a datagram to an echo service at dst from inside n and
// waits for it to come back.
func (n Netns) UDPEcho(ctx context.Context, dst netip.AddrPort) error {
	return n.UDPEchoFrom(ctx, netip.AddrPort{}, dst)
}

// UDPEchoFrom is UDPEcho from the local address from (which must be on an
// interface of n).
func (n Netns) UDPEchoFrom(ctx context.Context, from, dst netip.AddrPort) error {
	var c net.Conn
	err := n.Do(func() error {
		d := net.Dialer{}
		if from.IsValid() {
			d.LocalAddr = net.UDPAddrFromAddrPort(from)
		}
		var err error
		c, err = d.DialContext(ctx, "udp4", dst.String())
		return err
	})
	if err != nil {
		return err
	}
	defer c.Close()
	return roundTrip(ctx, c)
}

func roundTrip(ctx context.Context, c net.Conn) error {
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	msg := fmt.Appendf(nil, "probe %d\n", rand.Uint64())
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo from %s: got %q, want %q", c.RemoteAddr(), got, msg)
	}
	return nil
}

// Ping sends an ICMP echo request to dst from inside n and waits for the
// reply. An ICMP error in return is an error, not silence.
func (n Netns) Ping(ctx context.Context, dst netip.Addr) error {
	var c net.PacketConn
	err := n.Do(func() error {
		var err error
		c, err = net.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	})
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()

	id := uint16(rand.Uint32())
	req := []byte{8, 0, 0, 0, byte(id >> 8), byte(id), 0, 1, 'a', 'i', 'r', 'l', 'o', 'c', 'k'}
	binary.BigEndian.PutUint16(req[2:], checksum(req))
	if _, err := c.WriteTo(req, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	for {
		// The socket sees every ICMP message the namespace receives.
		m, from, err := c.ReadFrom(buf)
		if err != nil {
			return err
		}
		msg := buf[:m]
		if len(msg) < 8 {
			continue
		}
		switch msg[0] {
		case 0: // echo reply
			if binary.BigEndian.Uint16(msg[4:]) == id {
				return nil
			}
		case 3, 11: // unreachable, time exceeded: about our request?
			// The quoted packet: IPv4 header, then our request's first 8 bytes.
			inner := msg[8:]
			if len(inner) >= 20 {
				ihl := int(inner[0]&0x0f) * 4
				if len(inner) >= ihl+8 && binary.BigEndian.Uint16(inner[ihl+4:]) == id {
					return fmt.Errorf("ping %s: ICMP type %d code %d from %s", dst, msg[0], msg[1], from)
				}
			}
		}
	}
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// HTTPGet fetches url from inside n and returns the body.
func (n Netns) HTTPGet(ctx context.Context, url string) (string, error) {
	client := &http.Client{Transport: &http.Transport{DialContext: n.Dial, DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), nil
}
