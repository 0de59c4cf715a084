package bench

// Tests of the harness's own arithmetic and checks, so that a figure in
// BENCHMARKS.md is not an artefact of a bug here. They run in `go test ./...`
// and take milliseconds.

import (
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	t.Parallel()
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond // 1ms … 100ms
	}
	tests := []struct {
		name    string
		samples []time.Duration
		p       float64
		want    time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample", []time.Duration{7}, 99, 7},
		{"p50 of 100", hundred, 50, 50 * time.Millisecond},
		{"p90 of 100", hundred, 90, 90 * time.Millisecond},
		{"p99 of 100", hundred, 99, 99 * time.Millisecond},
		{"max of 100", hundred, 100, 100 * time.Millisecond},
		{"p50 of 3 rounds up", []time.Duration{1, 2, 3}, 50, 2},
		{"p99 of 3 is the max", []time.Duration{1, 2, 3}, 99, 3},
		{"negative samples", []time.Duration{-3, -1, 2}, 50, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := percentile(tt.samples, tt.p); got != tt.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tt.samples, tt.p, got, tt.want)
			}
		})
	}
}

func TestLogVerifier(t *testing.T) {
	t.Parallel()
	const header = "==> airlock: job 1, attempt 1, executor x, runtime shell, timeout 1h0m0s\n==> step print (1/1)\n"
	const footer = "==> step print exited with code 0 after 1.2s\n==> job succeeded: success (1.3s)\n"
	output := func(n int) string {
		return strings.Repeat(logLine, n/len(logLine)+1)[:n]
	}
	const n = 1000 // not a multiple of the line: the last line is cut
	tests := []struct {
		name    string
		log     string
		wantErr string // "" for a log that checks out
	}{
		{"whole", header + output(n) + footer, ""},
		{"one byte short", header + output(n-1) + footer, "output byte 999"},
		{"one byte more", header + output(n) + "a" + footer, "footer"},
		{"wrong byte", header + output(n/2) + "X" + output(n)[n/2+1:] + footer, "output byte 500"},
		{"capped with a marker", header + output(n/2) + "\n[airlock: 500 bytes omitted]\n" + footer, "output byte 500"},
		{"no step line", "==> airlock: job 1\n" + output(n), "header line"},
		{"header only", header, "want 1000"},
		{"empty", "", "ends before"},
		{"job not succeeded", header + output(n) + "==> step print exited with code 0 after 1s\n==> job failed: x\n", "job succeeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Write in small uneven pieces, as a network read would.
			v := &logVerifier{want: n}
			var werr error
			for rest := tt.log; rest != "" && werr == nil; {
				k := min(len(rest), 37)
				_, werr = v.Write([]byte(rest[:k]))
				rest = rest[k:]
			}
			err := v.check()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("check() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("check() = %v, want an error containing %q", err, tt.wantErr)
			case tt.wantErr == "" && (v.header != int64(len(header)) || v.footer != int64(len(footer))):
				t.Errorf("header, footer = %d, %d bytes, want %d, %d", v.header, v.footer, len(header), len(footer))
			}
			if werr != nil && werr != v.err {
				t.Errorf("Write error %v is not the verifier's error %v", werr, v.err)
			}
		})
	}
}
