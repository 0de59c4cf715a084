package joblog

// Streaming redaction. A Redactor scans its input with the matcher once, byte
// by byte, carrying the automaton's state across Write calls, so a secret split
// over any number of writes is still found. It holds back only the bytes that
// could still begin a match — the automaton's hold for its current state,
// at most the longest pattern minus one — and releases everything before
// them: clean bytes verbatim, matched ranges as one Mask each.
//
// Matches are ranges [start, end) in absolute stream offsets. They arrive in
// order of their end; one that overlaps an earlier one (start < earlier end)
// merges with it, so overlapping secrets become a single Mask (the union is
// redacted). Ranges whose start is before the release point are written out
// whole, even when they end after it; a later match that starts inside an
// already-written Mask just extends it silently. Because a match's start is
// always at or after every release point computed while it was being read,
// clean bytes are never released that a later match would have covered.

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"net/url"
	"slices"
	"strings"
	"sync"
)

// Mask replaces every redacted range.
const Mask = "[REDACTED]"

var maskBytes = []byte(Mask)

// MinEncodedSecret is the shortest secret (in bytes) whose encoded forms —
// base64, hex — are redacted too. A shorter secret is redacted only as its
// exact bytes and URL-escaped forms: the base64 of two bytes is two or three
// characters that depend on the secret, which would match random base64 text
// everywhere. From four bytes up every base64 alignment variant is at least
// four characters long.
const MinEncodedSecret = 4

// ErrClosed is returned by Write after Close.
var ErrClosed = errors.New("joblog: write after close")

// outFlush is the size at which a Redactor passes its assembled output on,
// bounding its output buffer whatever the size of the writes.
const outFlush = 64 << 10

// Redactor is an io.WriteCloser that replaces secrets in the bytes written to
// it before passing them on to W. It is safe for concurrent use; when a step's
// stdout and stderr are one stream, give both the same Redactor so their
// relative order survives.
type Redactor struct {
	w io.Writer
	m *matcher // nil: pass through

	mu      sync.Mutex
	state   uint32  // encoded automaton state
	pos     int64   // bytes consumed
	emitted int64   // bytes resolved: released clean or covered by a Mask
	held    []byte  // input bytes [emitted, pos)
	spans   []span  // matches not yet released: sorted, disjoint, start ≥ emitted
	found   []found // scratch for matcher.scan
	out     []byte
	err     error
	closed  bool
}

type span struct{ start, end int64 }

// NewRedactor returns a Redactor writing to w that redacts each non-empty
// secret in the forms listed by SecretForms. With no non-empty secret it
// passes writes straight through.
func NewRedactor(w io.Writer, secrets []string) *Redactor {
	return newRedactor(w, secrets, defaultDenseBudget)
}

func newRedactor(w io.Writer, secrets []string, denseBudget int) *Redactor {
	return newRedactorMatcher(w, newMatcher(secretForms(secrets), denseBudget))
}

// newRedactorMatcher returns a Redactor using m, which is read-only and may
// be shared.
func newRedactorMatcher(w io.Writer, m *matcher) *Redactor {
	r := &Redactor{w: w, m: m}
	if m != nil {
		r.held = make([]byte, 0, m.maxLen)
	}
	return r
}

// SecretForms returns the strings redacted for secret, deduplicated:
//
//   - the exact value, and, when the value spans several lines, each line
//     (without surrounding white space) of at least MinEncodedSecret bytes;
//   - the value without surrounding white space, if that differs;
//   - url.QueryEscape and url.PathEscape of the value when they differ from it,
//     also with lower-case hex digits;
//   - for values of at least MinEncodedSecret bytes: base64 in the standard
//     and URL-safe alphabets, padded and unpadded; the three alignment variants
//     of each alphabet that find the value inside a longer base64 text (the
//     characters that depend only on the value when it starts 0, 1 or 2 bytes
//     past a 3-byte boundary); lower- and upper-case hex.
func SecretForms(secret string) []string {
	return secretForms([]string{secret})
}

func secretForms(secrets []string) []string {
	var forms []string
	add := func(s string) {
		if s != "" {
			forms = append(forms, s)
		}
	}
	for _, s := range secrets {
		if s == "" {
			continue
		}
		values := []string{s}
		if t := strings.TrimSpace(s); t != s && t != "" {
			values = append(values, t)
		}
		if strings.ContainsAny(s, "\r\n") {
			for line := range strings.Lines(s) {
				if t := strings.TrimSpace(line); len(t) >= MinEncodedSecret && t != s {
					add(t)
				}
			}
		}
		for _, v := range values {
			add(v)
			for _, e := range []string{url.QueryEscape(v), url.PathEscape(v)} {
				if e != v {
					add(e)
					add(lowerEscapes(e))
				}
			}
			if len(v) < MinEncodedSecret {
				continue
			}
			for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
				add(enc.EncodeToString([]byte(v)))
				add(enc.WithPadding(base64.NoPadding).EncodeToString([]byte(v)))
				for k := range 3 {
					add(base64Aligned(enc, v, k))
				}
			}
			add(hex.EncodeToString([]byte(v)))
			add(strings.ToUpper(hex.EncodeToString([]byte(v))))
		}
	}
	slices.Sort(forms)
	return slices.Compact(forms)
}

// base64Aligned returns the base64 characters that encode only bits of v when
// v starts k bytes past a 3-byte boundary of a longer encoded text: character
// i covers bits [6i, 6i+6) and v covers bits [8k, 8k+8·len(v)).
func base64Aligned(enc *base64.Encoding, v string, k int) string {
	full := enc.EncodeToString(append(make([]byte, k), v...))
	first := (8*k + 5) / 6
	last := (8*k+8*len(v))/6 - 1
	if last < first {
		return ""
	}
	return full[first : last+1]
}

// lowerEscapes lower-cases the hex digits of percent escapes.
func lowerEscapes(s string) string {
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			b[i+1] = lowerHex(b[i+1])
			b[i+2] = lowerHex(b[i+2])
			i += 2
		}
	}
	return string(b)
}

func lowerHex(c byte) byte {
	if 'A' <= c && c <= 'F' {
		return c + 'a' - 'A'
	}
	return c
}

// Write redacts p and passes on everything that can no longer be part of a
// secret. It returns len(p) on success; an error from the underlying writer
// is returned now and from every later Write.
func (r *Redactor) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, ErrClosed
	}
	if r.err != nil {
		return 0, r.err
	}
	if r.m == nil {
		n, err := r.w.Write(p)
		if err != nil {
			r.err = err
		}
		return n, err
	}

	n := len(p)
	for len(p) > 0 {
		k := min(len(p), scanBlock)
		if err := r.redact(p[:k]); err != nil {
			return 0, err
		}
		p = p[k:]
	}
	return n, nil
}

// scanBlock bounds the matches recorded by one scan, and so r.found.
const scanBlock = 64 << 10

// redact scans p (at most scanBlock bytes) and releases what it can.
func (r *Redactor) redact(p []byte) error {
	m := r.m
	pos0 := r.pos
	r.state, r.found = m.scan(p, r.state, r.found[:0])
	for _, f := range r.found {
		end := pos0 + int64(f.end)
		r.addSpan(end-int64(m.matchLen[m.id(f.state)]), end)
	}
	r.pos += int64(len(p))
	cut := r.pos - int64(m.hold[m.id(r.state)])

	if len(r.spans) == 0 && cut >= pos0 {
		// Fast path: no match to place; release the held bytes and p up to cut.
		if err := r.writeOut(r.held); err != nil {
			return err
		}
		if err := r.writeOut(p[:cut-pos0]); err != nil {
			return err
		}
		r.emitted = cut
		r.held = append(r.held[:0], p[cut-pos0:]...)
		return nil
	}
	return r.release(p, pos0, cut)
}

// addSpan records the match [start, end), merging it with the pending
// matches it overlaps.
func (r *Redactor) addSpan(start, end int64) {
	for n := len(r.spans); n > 0 && start < r.spans[n-1].end; n-- {
		start = min(start, r.spans[n-1].start)
		r.spans = r.spans[:n-1]
	}
	r.spans = append(r.spans, span{start, end})
}

// release writes out the stream up to cut, the input being r.held (offsets
// [r.emitted, pos0)) followed by p, and keeps the rest in r.held.
func (r *Redactor) release(p []byte, pos0, cut int64) error {
	base := r.emitted // offset of r.held[0]
	i := 0
	for ; i < len(r.spans) && r.spans[i].start < cut; i++ {
		sp := r.spans[i]
		if sp.start > r.emitted {
			r.appendRange(p, pos0, base, r.emitted, sp.start)
			r.emitted = sp.start
		}
		if sp.start == r.emitted {
			r.appendOut(maskBytes)
		} // else it extends the Mask just written
		r.emitted = max(r.emitted, sp.end)
	}
	r.spans = append(r.spans[:0], r.spans[i:]...)
	if cut > r.emitted {
		r.appendRange(p, pos0, base, r.emitted, cut)
		r.emitted = cut
	}
	// Keep [r.emitted, r.pos): at most hold bytes, so held never grows past
	// its capacity of the longest pattern.
	var kept []byte
	if r.emitted < pos0 {
		n := copy(r.held, r.held[r.emitted-base:])
		kept = append(r.held[:n], p...)
	} else {
		kept = append(r.held[:0], p[r.emitted-pos0:]...)
	}
	r.held = kept
	return r.flushOut()
}

// appendRange appends the input bytes [a, b) to the output; they lie in
// r.held, which starts at offset base, or in p, which starts at pos0.
func (r *Redactor) appendRange(p []byte, pos0, base, a, b int64) {
	if a < pos0 {
		r.appendOut(r.held[a-base : min(b, pos0)-base])
	}
	if b > pos0 {
		r.appendOut(p[max(a, pos0)-pos0 : b-pos0])
	}
}

func (r *Redactor) appendOut(b []byte) {
	if r.err != nil {
		return
	}
	if len(r.out)+len(b) > outFlush {
		if r.flushOut() != nil {
			return
		}
		if len(b) >= outFlush {
			r.writeOut(b)
			return
		}
	}
	r.out = append(r.out, b...)
}

func (r *Redactor) flushOut() error {
	if r.err != nil {
		return r.err
	}
	if len(r.out) == 0 {
		return nil
	}
	err := r.writeOut(r.out)
	r.out = r.out[:0]
	return err
}

func (r *Redactor) writeOut(b []byte) error {
	if r.err != nil {
		return r.err
	}
	if len(b) == 0 {
		return nil
	}
	if _, err := r.w.Write(b); err != nil {
		r.err = err
		return err
	}
	return nil
}

// Close releases the bytes held back — nothing can complete a secret any
// more — and makes later writes fail with ErrClosed. It does not close the
// underlying writer. Closing again does nothing.
func (r *Redactor) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	if r.m == nil || r.err != nil {
		return r.err
	}
	err := r.release(nil, r.pos, r.pos)
	r.held = nil
	return err
}
