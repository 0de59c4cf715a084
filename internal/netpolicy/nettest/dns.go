package nettest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// ErrNotFound is what Lookup returns for a name the server does not know.
var ErrNotFound = errors.New("name not found")

// answerDNS answers a DNS query: TestName has one A record, PublicAddr;
// every other name is NXDOMAIN. It returns nil for what is not a query.
func answerDNS(query []byte) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil || h.Response {
		return nil
	}
	q, err := p.Question()
	if err != nil {
		return nil
	}
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired}
	known := strings.EqualFold(q.Name.String(), TestName)
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	if b.StartQuestions() != nil || b.Question(q) != nil || b.StartAnswers() != nil {
		return nil
	}
	if known && q.Type == dnsmessage.TypeA {
		err := b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60},
			dnsmessage.AResource{A: PublicAddr.As4()})
		if err != nil {
			return nil
		}
	}
	out, err := b.Finish()
	if err != nil {
		return nil
	}
	return out
}

// serveDNSStream answers DNS over TCP: messages with a two-byte length.
func serveDNSStream(c net.Conn) {
	for {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		q, err := readFramed(c)
		if err != nil {
			return
		}
		a := answerDNS(q)
		if a == nil {
			return
		}
		if _, err := c.Write(binary.BigEndian.AppendUint16(nil, uint16(len(a)))); err != nil {
			return
		}
		if _, err := c.Write(a); err != nil {
			return
		}
	}
}

func readFramed(r io.Reader) ([]byte, error) {
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint16(n[:]))
	_, err := io.ReadFull(r, b)
	return b, err
}

// Lookup asks the DNS server at server, from inside n, over network ("udp"
// or "tcp"), for the A records of name.
func (n Netns) Lookup(ctx context.Context, network string, server netip.AddrPort, name string) ([]netip.Addr, error) {
	qname, err := dnsmessage.NewName(name)
	if err != nil {
		return nil, err
	}
	id := uint16(rand.Uint32())
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	b.StartQuestions()
	b.Question(dnsmessage.Question{Name: qname, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	query, err := b.Finish()
	if err != nil {
		return nil, err
	}

	c, err := n.Dial(ctx, network+"4", server.String())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	var answer []byte
	if network == "tcp" {
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(query))), query...)); err != nil {
			return nil, err
		}
		if answer, err = readFramed(c); err != nil {
			return nil, err
		}
	} else {
		if _, err := c.Write(query); err != nil {
			return nil, err
		}
		buf := make([]byte, 64<<10)
		m, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		answer = buf[:m]
	}

	var p dnsmessage.Parser
	h, err := p.Start(answer)
	if err != nil {
		return nil, fmt.Errorf("parsing the answer of %s: %w", server, err)
	}
	if h.ID != id || !h.Response {
		return nil, fmt.Errorf("answer of %s does not match the query", server)
	}
	if h.RCode == dnsmessage.RCodeNameError {
		return nil, fmt.Errorf("%s from %s: %w", name, server, ErrNotFound)
	}
	if h.RCode != dnsmessage.RCodeSuccess {
		return nil, fmt.Errorf("%s from %s: %v", name, server, h.RCode)
	}
	if err := p.SkipAllQuestions(); err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	for {
		rh, err := p.AnswerHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			return addrs, nil
		}
		if err != nil {
			return nil, err
		}
		if rh.Type != dnsmessage.TypeA {
			if err := p.SkipAnswer(); err != nil {
				return nil, err
			}
			continue
		}
		a, err := p.AResource()
		if err != nil {
			return nil, err
		}
		addrs = append(addrs, netip.AddrFrom4(a.A))
	}
}
