package queuetest

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

const mib = 1 << 20

// logBytes returns n bytes that differ at every offset modulo a prime, so a
// misplaced byte shows.
func logBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i%251%26)
		if i%251 == 250 {
			b[i] = '\n'
		}
	}
	return b
}

func (h *harness) checkLog(ref queue.AttemptRef, want string) {
	h.t.Helper()
	got := h.readLog(queue.ReadLogParams{JobID: ref.JobID, Attempt: ref.Attempt})
	if string(got.Data) != want || got.Size != int64(len(want)) || got.NextOffset != int64(len(want)) {
		h.t.Errorf("log of %+v = %q (size %d, next %d), want %q", ref, got.Data, got.Size, got.NextOffset, want)
	}
}

var logCases = []testCase{
	{"log chunks append in order and read back from any offset", func(t *testing.T, h *harness) {
		h.submit(1)
		c := h.claim("e1")
		ref := c.ref()
		if end := h.appendLog(ref, 0, "hello "); end != 6 {
			t.Errorf("AppendLog end = %d, want 6", end)
		}
		if end := h.appendLog(ref, 6, "world\n"); end != 12 {
			t.Errorf("AppendLog end = %d, want 12", end)
		}
		for _, tc := range []struct {
			p    queue.ReadLogParams
			want queue.LogChunk
		}{
			{queue.ReadLogParams{JobID: ref.JobID}, queue.LogChunk{Attempt: 1, Data: []byte("hello world\n"), NextOffset: 12, Size: 12}},
			{queue.ReadLogParams{JobID: ref.JobID, Attempt: 1, Offset: 6}, queue.LogChunk{Attempt: 1, Data: []byte("world\n"), NextOffset: 12, Size: 12}},
			{queue.ReadLogParams{JobID: ref.JobID, Offset: 3, Limit: 5}, queue.LogChunk{Attempt: 1, Data: []byte("lo wo"), NextOffset: 8, Size: 12}},
			{queue.ReadLogParams{JobID: ref.JobID, Offset: 12}, queue.LogChunk{Attempt: 1, NextOffset: 12, Size: 12}},
		} {
			if diff := cmp.Diff(&tc.want, h.readLog(tc.p), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("ReadLog(%+v) while running (-want +got):\n%s", tc.p, diff)
			}
		}
		if got := h.get(ref.JobID).Attempts[0].LogSize; got != 12 {
			t.Errorf("Get: attempt LogSize = %d, want 12", got)
		}

		h.finish(ref, job.OutcomeSucceeded, job.ReasonSuccess)
		for _, tc := range []struct {
			p    queue.ReadLogParams
			want queue.LogChunk
		}{
			{queue.ReadLogParams{JobID: ref.JobID}, queue.LogChunk{Attempt: 1, Data: []byte("hello world\n"), NextOffset: 12, Size: 12, Final: true}},
			{queue.ReadLogParams{JobID: ref.JobID, Limit: 5}, queue.LogChunk{Attempt: 1, Data: []byte("hello"), NextOffset: 5, Size: 12}},
			{queue.ReadLogParams{JobID: ref.JobID, Offset: 12}, queue.LogChunk{Attempt: 1, NextOffset: 12, Size: 12, Final: true}},
		} {
			if diff := cmp.Diff(&tc.want, h.readLog(tc.p), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("ReadLog(%+v) after finish (-want +got):\n%s", tc.p, diff)
			}
		}
	}},
	{"a resent log chunk is a no-op", func(t *testing.T, h *harness) {
		h.submit(1)
		ref := h.claim("e1").ref()
		h.appendLog(ref, 0, "abc")
		h.appendLog(ref, 3, "def")
		for _, resend := range []struct {
			off  int64
			data string
		}{{0, "abc"}, {3, "def"}, {1, "bc"}, {0, "abcdef"}, {6, ""}} {
			if end := h.appendLog(ref, resend.off, resend.data); end != 6 {
				t.Errorf("resend of %q at %d: end = %d, want 6", resend.data, resend.off, end)
			}
		}
		h.checkLog(ref, "abcdef")
	}},
	{"an overlapping chunk appends only its new part", func(t *testing.T, h *harness) {
		h.submit(1)
		ref := h.claim("e1").ref()
		h.appendLog(ref, 0, "abc")
		if end := h.appendLog(ref, 1, "bcdef"); end != 6 {
			t.Errorf("AppendLog end = %d, want 6", end)
		}
		h.checkLog(ref, "abcdef")
	}},
	{"a chunk past the end of the log is a gap", func(t *testing.T, h *harness) {
		h.submit(1)
		ref := h.claim("e1").ref()
		_, err := h.store.AppendLog(h.ctx, queue.AppendLogParams{Attempt: ref, Offset: 1, Data: []byte("x")})
		if !errors.Is(err, queue.ErrLogGap) {
			t.Errorf("AppendLog at 1 of an empty log: error = %v, want ErrLogGap", err)
		}
		h.appendLog(ref, 0, "abc")
		_, err = h.store.AppendLog(h.ctx, queue.AppendLogParams{Attempt: ref, Offset: 4, Data: []byte("efg")})
		if !errors.Is(err, queue.ErrLogGap) {
			t.Errorf("AppendLog at 4 of a 3-byte log: error = %v, want ErrLogGap", err)
		}
		h.checkLog(ref, "abc")
	}},
	{"a chunk that would pass the limit is refused whole", func(t *testing.T, h *harness) {
		h.submit(1)
		ref := h.claim("e1").ref()
		appendLimited := func(off int64, data string) (int64, error) {
			return h.store.AppendLog(h.ctx, queue.AppendLogParams{Attempt: ref, Offset: off, Data: []byte(data), Limit: 10})
		}
		if _, err := appendLimited(0, "12345678"); err != nil {
			t.Fatal(err)
		}
		if _, err := appendLimited(8, "9ab"); !errors.Is(err, queue.ErrLogLimit) {
			t.Errorf("AppendLog past the limit: error = %v, want ErrLogLimit", err)
		}
		h.checkLog(ref, "12345678")
		if end, err := appendLimited(0, "12345678"); err != nil || end != 8 {
			t.Errorf("resend under the limit = %d, %v; want 8, nil", end, err)
		}
		if end, err := appendLimited(8, "9a"); err != nil || end != 10 {
			t.Errorf("AppendLog up to the limit = %d, %v; want 10, nil", end, err)
		}
		if _, err := appendLimited(10, "b"); !errors.Is(err, queue.ErrLogLimit) {
			t.Errorf("AppendLog at a full log: error = %v, want ErrLogLimit", err)
		}
		h.checkLog(ref, "123456789a")
	}},
	{"a long log reads back whole in bounded windows", func(t *testing.T, h *harness) {
		h.submit(1)
		ref := h.claim("e1").ref()
		data := logBytes(2*mib + 777_777)
		// Uneven chunks, one larger than a read window.
		for off, size := 0, 100_000; off < len(data); off, size = off+size, size*3 {
			end := min(off+size, len(data))
			h.appendLog(ref, int64(off), string(data[off:end]))
		}
		h.finish(ref, job.OutcomeSucceeded, job.ReasonSuccess)
		for _, limit := range []int{0, 333_333, 4 * mib} {
			var got []byte
			for off, reads := int64(0), 0; ; reads++ {
				if reads > 100 {
					t.Fatalf("limit %d: no end after 100 reads", limit)
				}
				c := h.readLog(queue.ReadLogParams{JobID: ref.JobID, Offset: off, Limit: limit})
				if len(c.Data) > mib {
					t.Errorf("limit %d: read %d bytes, want at most 1 MiB", limit, len(c.Data))
				}
				if c.NextOffset != off+int64(len(c.Data)) || c.Size != int64(len(data)) {
					t.Fatalf("limit %d: read at %d returned %d bytes, next %d, size %d", limit, off, len(c.Data), c.NextOffset, c.Size)
				}
				got = append(got, c.Data...)
				off = c.NextOffset
				if c.Final {
					break
				}
			}
			if !bytes.Equal(got, data) {
				t.Errorf("limit %d: read back %d bytes that differ from the %d appended", limit, len(got), len(data))
			}
		}
	}},
	{"each attempt has its own log", func(t *testing.T, h *harness) {
		h.submit(2)
		first := h.claim("e1")
		h.appendLog(first.ref(), 0, "one\n")
		h.finish(first.ref(), job.OutcomeErrored, job.ReasonSystemError)
		second := h.claim("e1")
		if got := h.readLog(queue.ReadLogParams{JobID: first.Job.ID}); got.Attempt != 2 || len(got.Data) != 0 || got.Final {
			t.Errorf("latest log right after the second claim = %+v, want attempt 2, empty, not final", got)
		}
		h.appendLog(second.ref(), 0, "second attempt\n")
		want := queue.LogChunk{Attempt: 2, Data: []byte("second attempt\n"), NextOffset: 15, Size: 15}
		if diff := cmp.Diff(&want, h.readLog(queue.ReadLogParams{JobID: first.Job.ID})); diff != "" {
			t.Errorf("latest log (-want +got):\n%s", diff)
		}
		want = queue.LogChunk{Attempt: 1, Data: []byte("one\n"), NextOffset: 4, Size: 4, Final: true}
		if diff := cmp.Diff(&want, h.readLog(queue.ReadLogParams{JobID: first.Job.ID, Attempt: 1})); diff != "" {
			t.Errorf("log of attempt 1 (-want +got):\n%s", diff)
		}
		var sizes []int64
		for _, a := range h.get(first.Job.ID).Attempts {
			sizes = append(sizes, a.LogSize)
		}
		if diff := cmp.Diff([]int64{4, 15}, sizes); diff != "" {
			t.Errorf("attempt log sizes (-want +got):\n%s", diff)
		}
		if _, err := h.store.AppendLog(h.ctx, queue.AppendLogParams{Attempt: first.ref(), Offset: 4, Data: []byte("late")}); !errors.Is(err, queue.ErrStaleAttempt) {
			t.Errorf("AppendLog to attempt 1: error = %v, want ErrStaleAttempt", err)
		}
	}},
	{"the log of a job that never ran is empty", func(t *testing.T, h *harness) {
		j := h.submit(1)
		got := h.readLog(queue.ReadLogParams{JobID: j.ID})
		if diff := cmp.Diff(&queue.LogChunk{}, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("log of a queued job (-want +got):\n%s", diff)
		}
		if _, err := h.store.ReadLog(h.ctx, queue.ReadLogParams{JobID: j.ID, Attempt: 3}); !errors.Is(err, queue.ErrNotFound) {
			t.Errorf("ReadLog of attempt 3 of a queued job: error = %v, want ErrNotFound", err)
		}
	}},
}
