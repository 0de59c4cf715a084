package joblog

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestRedactorForms(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		secrets []string
		in      string
		want    string
	}{
		{"exact", []string{"hunter2hunter2"}, "token=hunter2hunter2;", "token=[REDACTED];"},
		{"exact twice", []string{"hunter2hunter2"}, "hunter2hunter2 hunter2hunter2", "[REDACTED] [REDACTED]"},
		{"base64 padded", []string{"hunter2!"}, "auth: aHVudGVyMiE= .", "auth: [REDACTED] ."},
		{"base64 unpadded", []string{"hunter2!"}, "auth: aHVudGVyMiE .", "auth: [REDACTED] ."},
		{"base64 standard alphabet", []string{"??>>?>"}, "x Pz8+Pj8+ x", "x [REDACTED] x"},
		{"base64 URL alphabet", []string{"??>>?>"}, "x Pz8-Pj8- x", "x [REDACTED] x"},
		{"basic auth header", []string{"ci-bot:s3cr3t-pass"}, "Authorization: Basic Y2ktYm90OnMzY3IzdC1wYXNz\n", "Authorization: Basic [REDACTED]\n"},
		{"hex lower", []string{"hunter2!"}, "dump 68756e74657232210a", "dump [REDACTED]0a"},
		{"hex upper", []string{"hunter2!"}, "dump 68756E7465723221", "dump [REDACTED]"},
		{"query escape", []string{"p@ss w/rd&x=1"}, "GET /?pw=p%40ss+w%2Frd%26x%3D1 HTTP/1.1", "GET /?pw=[REDACTED] HTTP/1.1"},
		{"path escape", []string{"p@ss w/rd&x=1"}, "GET /p@ss%20w%2Frd&x=1/", "GET /[REDACTED]/"},
		{"lower-case escapes", []string{"p@ss w/rd&x=1"}, "pw=p%40ss+w%2frd%26x%3d1", "pw=[REDACTED]"},
		{"surrounding space trimmed", []string{"s3cr3tvalue\n"}, "v=s3cr3tvalue.", "v=[REDACTED]."},
		{"each line of a multi-line secret", []string{"-----BEGIN KEY-----\nMIIEvQIBADANBgkq\r\n-----END KEY-----\n"},
			"key line: MIIEvQIBADANBgkq\n", "key line: [REDACTED]\n"},
		{"short secret exact only", []string{"abc"}, "abc YWJj 616263", "[REDACTED] YWJj 616263"},
		{"short secret URL form", []string{"a b"}, "a b a+b a%20b", "[REDACTED] [REDACTED] [REDACTED]"},
		{"empty secret ignored", []string{"", "hunter2hunter2"}, "x hunter2hunter2 x", "x [REDACTED] x"},
		{"no secrets", nil, "anything at all", "anything at all"},
		{"only empty secrets", []string{""}, "anything at all", "anything at all"},
		{"overlapping secrets", []string{"abcdef", "defghi"}, "xxabcdefghixx", "xx[REDACTED]xx"},
		{"nested secrets", []string{"supersecret", "secret"}, "a supersecret b secret c", "a [REDACTED] b [REDACTED] c"},
		{"adjacent secrets", []string{"aaaa1111", "bbbb2222"}, "aaaa1111bbbb2222", "[REDACTED][REDACTED]"},
		{"self-overlapping repeats", []string{"abab"}, "xababababx", "x[REDACTED]x"},
		{"chain of overlaps", []string{"abcd", "cdef", "efgh"}, "abcdefgh", "[REDACTED]"},
		{"secret at the very end", []string{"hunter2hunter2"}, "hunter2hunter2", "[REDACTED]"},
		{"prefix only", []string{"hunter2hunter2"}, "hunter2hunter", "hunter2hunter"},
		{"different case", []string{"hunter2hunter2"}, "Hunter2hunter2 HUNTER2HUNTER2", "Hunter2hunter2 HUNTER2HUNTER2"},
		{"one byte off", []string{"hunter2hunter2"}, "hunter2_hunter2 hunter2hunter3", "hunter2_hunter2 hunter2hunter3"},
		{"base64 of a similar value", []string{"hunter2!"}, "aHVudGVyMj8= aHVudGVyM", "aHVudGVyMj8= aHVudGVyM"},
		{"secret inside longer base64", []string{"hunter2!"}, "aHVudGVyMiF4eHg=", "[REDACTED]F4eHg="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := redactAll(tt.secrets, defaultDenseBudget, []byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("redact(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// A secret inside a longer base64 text is encoded at one of three
// alignments, with characters at both ends shared with its neighbours.
func TestRedactorBase64InsideLongerBlob(t *testing.T) {
	t.Parallel()
	secrets := []string{"tok4", "hunter2!", "ghp_R4nd0mT0k3nV4lu3", "\x00\xff\xfe\xfd\x80secret"}
	rng := rand.New(rand.NewPCG(7, 7))
	for _, secret := range secrets {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding} {
			for pre := range 7 {
				for suf := range 4 {
					name := fmt.Sprintf("%q/%d/%d", secret, pre, suf)
					t.Run(name, func(t *testing.T) {
						prefix := make([]byte, pre)
						suffix := make([]byte, suf)
						for i := range prefix {
							prefix[i] = byte(rng.IntN(256))
						}
						for i := range suffix {
							suffix[i] = byte(rng.IntN(256))
						}
						blob := enc.EncodeToString(slices.Concat(prefix, []byte(secret), suffix))
						in := "value=" + blob + "\n"
						got, err := redactAll([]string{secret}, defaultDenseBudget, []byte(in))
						if err != nil {
							t.Fatal(err)
						}
						// The characters that depend only on the secret.
						first := (8*pre + 5) / 6
						last := (8*(pre+len(secret)))/6 - 1
						only := blob[first : last+1]
						if strings.Contains(string(got), only) {
							t.Fatalf("redact(%q) = %q, still holds %q", in, got, only)
						}
						// One Mask, over the secret's characters and at most
						// the shared and padding ones around them.
						before, after, ok := strings.Cut(string(got), Mask)
						if !ok {
							t.Fatalf("redact(%q) = %q, want a Mask", in, got)
						}
						a := len(before) - len("value=")
						b := len(in) - len("\n") - (len(after) - len("\n")) - len("value=")
						if before != in[:len(before)] || !strings.HasSuffix(in, after) || a > first || a < first-1 || b < last+1 || b > last+1+3 {
							t.Errorf("redact(%q) = %q: masked blob[%d:%d], want about blob[%d:%d]", in, got, a, b, first, last+1)
						}
					})
				}
			}
		}
	}
}

func TestSecretFormsThreshold(t *testing.T) {
	t.Parallel()
	for n := 1; n <= 12; n++ {
		secret := strings.Repeat("x", n)
		forms := SecretForms(secret)
		hasB64 := slices.Contains(forms, base64.StdEncoding.EncodeToString([]byte(secret)))
		if got, want := hasB64, n >= MinEncodedSecret; got != want {
			t.Errorf("SecretForms(%q) has base64 = %v, want %v", secret, got, want)
		}
		for _, f := range forms {
			if len(f) < min(n, MinEncodedSecret) {
				t.Errorf("SecretForms(%q) has %q, shorter than %d", secret, f, min(n, MinEncodedSecret))
			}
		}
	}
	if got := SecretForms(""); len(got) != 0 {
		t.Errorf("SecretForms(\"\") = %q, want none", got)
	}
}

// The text used by the split tests: every kind of form, overlaps, and
// near misses.
func splitCorpus() ([]string, []byte) {
	secrets := []string{"hunter2hunter2", "p@ss w/rd", "abab", "xyzxyzq"}
	in := []byte("a hunter2hunter2 b aHVudGVyMmh1bnRlcjI= c p%40ss+w%2Frd d abababx e xyzxyzxyzq f hunter2hunte g " +
		base64.StdEncoding.EncodeToString([]byte("..hunter2hunter2..")) + " h 68756e746572326875e746572")
	return secrets, in
}

func TestRedactorSplitAtEveryBoundary(t *testing.T) {
	t.Parallel()
	secrets, in := splitCorpus()
	want := referenceRedact(in, secrets)
	if bytes.Equal(want, in) || bytes.Count(want, []byte(Mask)) < 6 {
		t.Fatalf("corpus redacts to %q: the test needs several matches", want)
	}
	whole, err := redactAll(secrets, defaultDenseBudget, in)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(whole, want) {
		t.Fatalf("one write: got %q, want %q", whole, want)
	}
	for _, budget := range []int{defaultDenseBudget, 1} {
		for i := 0; i <= len(in); i++ {
			got, err := redactAll(secrets, budget, split(in, i)...)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("budget %d, split at %d: got %q, want %q", budget, i, got, want)
			}
		}
	}
	// Every pair of split points over a shorter stretch.
	short := in[:60]
	wantShort := referenceRedact(short, secrets)
	for i := 0; i <= len(short); i++ {
		for j := i; j <= len(short); j++ {
			got, err := redactAll(secrets, defaultDenseBudget, split(short, i, j)...)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, wantShort) {
				t.Fatalf("split at %d, %d: got %q, want %q", i, j, got, wantShort)
			}
		}
	}
	// One byte at a time.
	var pieces [][]byte
	for i := range in {
		pieces = append(pieces, in[i:i+1])
	}
	got, err := redactAll(secrets, defaultDenseBudget, pieces...)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("byte by byte: got %q, want %q", got, want)
	}
}

// Random secrets over a tiny alphabet overlap each other constantly; the
// streaming Redactor must agree with the whole-input reference for any
// split of the input, with dense and with mostly sparse automata.
func TestRedactorMatchesReference(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	word := func(alpha string, n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = alpha[rng.IntN(len(alpha))]
		}
		return string(b)
	}
	for round := range 300 {
		alpha := []string{"ab", "abc", "ab c%+/=", "abcdefgh"}[round%4]
		var secrets []string
		for range rng.IntN(4) + 1 {
			secrets = append(secrets, word(alpha, rng.IntN(7)+1))
		}
		var in []byte
		forms := secretForms(secrets)
		for range rng.IntN(30) {
			if rng.IntN(2) == 0 {
				in = append(in, forms[rng.IntN(len(forms))]...)
			} else {
				in = append(in, word(alpha, rng.IntN(6))...)
			}
		}
		want := referenceRedact(in, secrets)
		var cuts []int
		for range rng.IntN(5) {
			cuts = append(cuts, rng.IntN(len(in)+1))
		}
		slices.Sort(cuts)
		for _, budget := range []int{defaultDenseBudget, 1, 40} {
			got, err := redactAll(secrets, budget, split(in, cuts...)...)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("secrets %q, input %q cut at %v, budget %d:\ngot  %q\nwant %q", secrets, in, cuts, budget, got, want)
			}
		}
	}
}

// A secret as long as a private key needs more states than the dense table
// holds; the sparse states must find it as well, in every form.
func TestRedactorLargeSecret(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 4))
	raw := make([]byte, 6000)
	for i := range raw {
		raw[i] = byte(rng.IntN(256))
	}
	secret := base64.StdEncoding.EncodeToString(raw) // 8000 characters
	m := newMatcher(secretForms([]string{secret}), defaultDenseBudget)
	if total := uint32(len(m.fail)); m.denseN >= total {
		t.Fatalf("matcher has %d dense states of %d: the test needs sparse ones", m.denseN, total)
	}
	in := slices.Concat(logText(20000, 1), []byte(secret), logText(3000, 2),
		[]byte(base64.StdEncoding.EncodeToString([]byte("x"+secret+"yz"))), logText(3000, 3))
	want := referenceRedact(in, []string{secret})
	if n := bytes.Count(want, []byte(Mask)); n != 2 {
		t.Fatalf("reference has %d Masks, want 2", n)
	}
	for _, cut := range []int{0, 20000 + 1, 20000 + 4000, 20000 + 7999, len(in) - 4000, len(in)} {
		got, err := redactAll([]string{secret}, defaultDenseBudget, split(in, cut)...)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("cut at %d: output differs from the reference", cut)
		}
	}
}

func TestRedactorHoldsBackOnlyPossibleSecrets(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	r := NewRedactor(&buf, []string{"hunter2hunter2"})
	if _, err := r.Write([]byte("plain text then hunter2hun")); err != nil {
		t.Fatal(err)
	}
	if got, want := buf.String(), "plain text then "; got != want {
		t.Errorf("before Close: got %q, want %q", got, want)
	}
	if _, err := r.Write([]byte("t")); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if got, want := buf.String(), "plain text then hunter2hunt"; got != want {
		t.Errorf("after Close: got %q, want %q", got, want)
	}
	if _, err := r.Write([]byte("more")); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close = %v, want ErrClosed", err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}

type closeRecorder struct {
	bytes.Buffer
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }

func TestRedactorCloseLeavesWriterOpen(t *testing.T) {
	t.Parallel()
	for _, secrets := range [][]string{nil, {"hunter2hunter2"}} {
		var w closeRecorder
		r := NewRedactor(&w, secrets)
		if _, err := r.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if w.closed {
			t.Errorf("secrets %q: Close closed the underlying writer", secrets)
		}
		if got := w.String(); got != "x" {
			t.Errorf("secrets %q: got %q, want %q", secrets, got, "x")
		}
	}
}

type failingWriter struct{ err error }

func (f failingWriter) Write(p []byte) (int, error) { return 0, f.err }

func TestRedactorWriteError(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	for _, secrets := range [][]string{nil, {"hunter2hunter2"}} {
		r := NewRedactor(failingWriter{boom}, secrets)
		if _, err := r.Write([]byte("some text\n")); !errors.Is(err, boom) {
			t.Errorf("secrets %q: Write = %v, want %v", secrets, err, boom)
		}
		if _, err := r.Write([]byte("more\n")); !errors.Is(err, boom) {
			t.Errorf("secrets %q: second Write = %v, want %v", secrets, err, boom)
		}
	}
}

// A step's stdout and stderr share one Redactor from two goroutines.
func TestRedactorConcurrentWriters(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	r := NewRedactor(&buf, []string{"hunter2hunter2"})
	var wg sync.WaitGroup
	const lines = 500
	for g := range 2 {
		wg.Go(func() {
			for i := range lines {
				fmt.Fprintf(r, "stream %d line %d hunter2hunter2\n", g, i)
			}
		})
	}
	wg.Wait()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if strings.Contains(out, "hunter2hunter2") {
		t.Error("output holds the secret")
	}
	if got, want := strings.Count(out, Mask+"\n"), 2*lines; got != want {
		t.Errorf("%d redacted lines, want %d", got, want)
	}
}

func TestRedactorDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	in := pipelineBlock()[:32<<10] // secrets every few KiB
	for _, secrets := range [][]string{nil, pipelineSecrets} {
		if want := referenceRedact(in, secrets); secrets != nil && bytes.Count(want, []byte(Mask)) < 5 {
			t.Fatalf("input has %d secrets, want at least 5", bytes.Count(want, []byte(Mask)))
		}
		r := NewRedactor(io.Discard, secrets)
		r.Write(in) // warm up the output buffer
		if n := testing.AllocsPerRun(20, func() { r.Write(in) }); n != 0 {
			t.Errorf("secrets %q: %v allocations per Write, want 0", secrets, n)
		}
	}
}

func FuzzRedactor(f *testing.F) {
	f.Add("hunter2hunter2", []byte("x hunter2hunter2 aHVudGVyMmh1bnRlcjI= y"), uint16(3), uint16(20))
	f.Add("abab\x00ba", []byte("abababababa"), uint16(1), uint16(2))
	f.Add("p@ss w/rd\x00xyzxyzq", []byte("p%40ss+w%2Frd xyzxyzxyzq"), uint16(5), uint16(9))
	f.Fuzz(func(t *testing.T, secretList string, data []byte, c1, c2 uint16) {
		secrets := strings.Split(secretList, "\x00")
		if len(secrets) > 4 {
			secrets = secrets[:4]
		}
		for i, s := range secrets {
			if len(s) > 64 {
				secrets[i] = s[:64]
			}
		}
		a, b := int(c1)%(len(data)+1), int(c2)%(len(data)+1)
		if a > b {
			a, b = b, a
		}
		got, err := redactAll(secrets, defaultDenseBudget, split(data, a, b)...)
		if err != nil {
			t.Fatal(err)
		}
		if want := referenceRedact(data, secrets); !bytes.Equal(got, want) {
			t.Fatalf("secrets %q, data %q cut at %d, %d:\ngot  %q\nwant %q", secrets, data, a, b, got, want)
		}
		for _, s := range secrets {
			// A secret can appear across a Mask's edge or inside one
			// ("ED]x" after "[REDACTED]"); never anywhere else.
			if len(s) < 4 || strings.ContainsAny(s, "[]") || strings.Contains(Mask, s) {
				continue
			}
			if bytes.Contains(got, []byte(s)) {
				t.Fatalf("secrets %q, data %q: output %q holds %q", secrets, data, got, s)
			}
		}
	})
}

func BenchmarkRedactor(b *testing.B) {
	in := logText(1<<20, 9)
	cases := []struct {
		name    string
		secrets []string
	}{
		{"none", nil},
		{"1-secret", []string{"ghp_R4nd0mT0k3nV4lu3xyzABCDEFGH12345"}},
		{"5-secrets", []string{"ghp_R4nd0mT0k3nV4lu3xyzABCDEFGH12345", "hunter2hunter2", "npm_0123456789abcdefABCDEF",
			"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			r := NewRedactor(io.Discard, c.secrets)
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			for b.Loop() {
				for off := 0; off < len(in); off += 32 << 10 {
					r.Write(in[off : off+32<<10])
				}
			}
		})
	}
}

// The interleaved scan must report exactly what a single pass does, also
// for matches that straddle the stretches' boundaries.
func TestScanInterleavedMatchesSequential(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(5, 6))
	secrets := []string{"abab", "hunter2hunter2", "xyzxyzq", "ghp_R4nd0mT0k3n"}
	m := newMatcher(secretForms(secrets), defaultDenseBudget)
	if m.denseN != uint32(len(m.fail)) || 16*m.maxLen > interleaveMin {
		t.Fatalf("matcher with %d of %d states dense and patterns up to %d bytes: the test needs the interleaved scan",
			m.denseN, len(m.fail), m.maxLen)
	}
	forms := secretForms(secrets)
	for round := range 200 {
		n := interleaveMin + rng.IntN(8<<10)
		in := make([]byte, 0, n+64)
		for len(in) < n {
			if rng.IntN(3) == 0 {
				in = append(in, forms[rng.IntN(len(forms))]...)
			} else {
				in = append(in, "ab xy hunter2 "[rng.IntN(14):]...)
			}
		}
		start := uint32(0)
		if round%2 == 1 { // start mid-pattern, as after an earlier write
			start, _ = m.scanOne([]byte("hunter2hun"), 0, 0, nil)
		}
		wantV, want := m.scanOne(in, 0, start, nil)
		gotV, got := m.scan(in, start, nil)
		if gotV != wantV {
			t.Fatalf("round %d: final state %d, want %d", round, gotV, wantV)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("round %d: %d matches, want %d", round, len(got), len(want))
		}
	}
}
