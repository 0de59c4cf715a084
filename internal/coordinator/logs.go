package coordinator

// Reading and following an attempt's log.
//
// A read (GET /api/v1/jobs/{id}/logs?attempt=&offset=) returns the bytes of
// one attempt's log from offset to its end as text/plain; the headers say
// which attempt (attempt=0 means the latest) and at which offset the body
// starts, so a client can resume with offset+len(body).
//
// With follow=1 the response stays open: the handler reads, writes, flushes,
// and then waits on the job's broadcast channel (jobWatch), which every log
// append, claim, finish, cancel and reap of that job closes. It ends the
// response once the attempt's log is final — the attempt ended and every byte
// was sent — which happens when the job finishes or the attempt is
// superseded (its lease expired, or it errored and the job was re-queued). A
// follow with attempt=0 of a queued job waits for its next attempt to start
// and follows that one; a queued job that is canceled ends the response
// empty. If the coordinator shuts down mid-follow the connection is cut
// rather than ended cleanly, so the client knows to reconnect and resume.

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

// followRecheck is a follower's safety net: it re-reads this often even
// without a wake-up (for changes made by another process sharing the store).
const followRecheck = time.Second

func (s *Server) handleLogs(w http.ResponseWriter, r *http.Request) {
	id, err := jobIDFromPath(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	attempt, offset := 0, int64(0)
	if v := q.Get("attempt"); v != "" {
		if attempt, err = strconv.Atoi(v); err != nil || attempt < 0 {
			s.writeError(w, r, newHTTPError(http.StatusBadRequest, api.CodeBadRequest, "attempt",
				"attempt %q is not a non-negative integer", v))
			return
		}
	}
	if v := q.Get("offset"); v != "" {
		if offset, err = strconv.ParseInt(v, 10, 64); err != nil || offset < 0 {
			s.writeError(w, r, newHTTPError(http.StatusBadRequest, api.CodeBadRequest, "offset",
				"offset %q is not a non-negative integer", v))
			return
		}
	}
	follow := false
	switch v := q.Get("follow"); v {
	case "", "0", "false":
	case "1", "true":
		follow = true
	default:
		s.writeError(w, r, newHTTPError(http.StatusBadRequest, api.CodeBadRequest, "follow", "follow %q is not 1 or 0", v))
		return
	}

	var sub *jobSub
	if follow {
		// Subscribe before the first read so no change is missed.
		sub = s.watch.subscribe(id)
		defer sub.close()
	}
	j, err := s.store.Get(r.Context(), id)
	if err != nil {
		s.writeError(w, r, fmt.Errorf("getting job %d: %w", id, err))
		return
	}
	if attempt > j.Attempt {
		s.writeError(w, r, newHTTPError(http.StatusNotFound, api.CodeNotFound, "attempt",
			"job %d has no attempt %d (latest is %d)", id, attempt, j.Attempt))
		return
	}
	if follow && attempt == 0 && j.State == job.StateQueued {
		var ok bool
		if attempt, ok = s.awaitAttempt(w, r, sub, j); !ok {
			return
		}
	}
	if attempt == 0 {
		attempt = j.Attempt // may stay 0: never claimed
	}
	s.streamLog(w, r, sub, id, attempt, offset)
}

// awaitAttempt waits until queued job j starts an attempt after its current
// one and returns its number. It returns false if it already answered: the
// job ended without a new attempt (an empty log), or the request ended.
func (s *Server) awaitAttempt(w http.ResponseWriter, r *http.Request, sub *jobSub, j *queue.Job) (int, bool) {
	last := j.Attempt
	tick := time.NewTicker(followRecheck)
	defer tick.Stop()
	for {
		changed := sub.changed()
		var err error
		if j, err = s.store.Get(r.Context(), j.ID); err != nil {
			s.writeError(w, r, fmt.Errorf("getting job %d: %w", j.ID, err))
			return 0, false
		}
		switch {
		case j.Attempt > last:
			return j.Attempt, true
		case j.State.Terminal():
			// Ended while queued (canceled): no attempt, no log.
			writeLogHeaders(w, j.Attempt, 0)
			w.WriteHeader(http.StatusOK)
			return 0, false
		}
		select {
		case <-changed:
		case <-tick.C:
		case <-r.Context().Done():
			return 0, false
		case <-s.closing:
			panic(http.ErrAbortHandler) // cut, not end: the client reconnects
		}
	}
}

// streamLog writes attempt's log from offset; with sub (follow) it keeps
// writing until the log is final. attempt 0 means the job was never claimed.
func (s *Server) streamLog(w http.ResponseWriter, r *http.Request, sub *jobSub, id int64, attempt int, offset int64) {
	rc := http.NewResponseController(w)
	var tick *time.Ticker
	if sub != nil {
		tick = time.NewTicker(followRecheck)
		defer tick.Stop()
	}
	started := false
	var end int64 = -1 // without follow: the size when the read began
	for {
		var changed <-chan struct{}
		if sub != nil {
			changed = sub.changed()
		}
		c, err := s.store.ReadLog(r.Context(), queue.ReadLogParams{JobID: id, Attempt: attempt, Offset: offset})
		if err != nil {
			if !started {
				s.writeError(w, r, fmt.Errorf("reading log: %w", err))
				return
			}
			if r.Context().Err() == nil {
				s.log.Error("reading log mid-stream", "job_id", id, "attempt", attempt, "err", err)
			}
			panic(http.ErrAbortHandler)
		}
		if !started {
			if offset > c.Size && attempt != 0 {
				s.writeError(w, r, newHTTPError(http.StatusBadRequest, api.CodeBadRequest, "offset",
					"offset %d is past the end of the log (%d bytes)", offset, c.Size))
				return
			}
			writeLogHeaders(w, attempt, offset)
			w.WriteHeader(http.StatusOK)
			started = true
			end = c.Size
		}
		if len(c.Data) > 0 {
			if _, err := w.Write(c.Data); err != nil {
				return // the client went away
			}
			offset = c.NextOffset
		}
		if c.Final {
			return
		}
		if c.NextOffset < c.Size && (sub != nil || c.NextOffset < end) {
			continue // more to send right away
		}
		if sub == nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-changed:
		case <-tick.C:
		case <-r.Context().Done():
			return
		case <-s.closing:
			panic(http.ErrAbortHandler) // cut, not end: the client reconnects
		}
	}
}

func writeLogHeaders(w http.ResponseWriter, attempt int, offset int64) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	h.Set(api.HeaderLogAttempt, strconv.Itoa(attempt))
	h.Set(api.HeaderLogOffset, strconv.FormatInt(offset, 10))
}
