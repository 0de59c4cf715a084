package executor

// A fake coordinator speaking the real wire protocol over real HTTP, in the
// spirit of buildkite/agent's fake_api_server_test.go. It keeps jobs in memory
// and can be told to misbehave in ways the real coordinator cannot be made
// to: be unreachable, answer 500, reject tokens, forget attempts.

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

const fakeExecutorToken = "executor-token"

type fakeCoordinator struct {
	t   testing.TB
	srv *httptest.Server

	closing chan struct{} // closed at cleanup: long polls return

	mu      sync.Mutex
	nextID  int64
	queued  []*fakeJob
	jobs    map[int64]*fakeJob
	wake    chan struct{} // closed and replaced when a job is queued
	running int           // attempts claimed and not finished
	// maxRunning is the most attempts ever running at once.
	maxRunning int
	// parked is how many claims are in the handler now, waiting for a job;
	// maxParked the most at once (since a test last reset it); maxLoad the
	// most of running+parked ever. A claim that hands out a job moves from
	// parked to running at once.
	parked, maxParked, maxLoad int
	changed                    chan struct{} // closed and replaced when parked changes or a request arrives
	claims                     []api.ClaimRequest
	heartbeats                 []api.HeartbeatRequest
	requests                   map[string]int // by route: claim, heartbeat, logs, finish; hung up ones too

	// What claims hand out.
	heartbeatMS int64
	leaseMS     int64
	logLimit    int64

	// Misbehaviour.
	down          bool          // every request: the connection is closed without an answer
	rejectClaims  bool          // claims: 401
	failFinishes  int           // the next n finishes: 500
	failHeartbeat bool          // heartbeats: 500
	slowHeartbeat time.Duration // heartbeats: answered this late
	refuseLogs    bool          // log appends: 400
}

type fakeJob struct {
	id      int64
	spec    job.Spec
	secrets map[string]string

	// under fakeCoordinator.mu
	attempt     int
	token       string
	state       job.State
	cancel      bool // cancellation requested
	forgotten   bool // the attempt is no longer known
	log         []byte
	finish      *api.FinishRequest
	finishCalls int
	claimedAt   time.Time
	finishedAt  time.Time
	appends     int           // log append requests of the current attempt
	done        chan struct{} // closed on finish
}

func newFakeCoordinator(t testing.TB) *fakeCoordinator {
	f := &fakeCoordinator{
		t:           t,
		closing:     make(chan struct{}),
		jobs:        map[int64]*fakeJob{},
		wake:        make(chan struct{}),
		changed:     make(chan struct{}),
		requests:    map[string]int{},
		heartbeatMS: 100,
		leaseMS:     10_000,
		logLimit:    1 << 20,
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+api.Prefix+"/executor/claim", f.claim)
	mux.HandleFunc("POST "+api.Prefix+"/executor/heartbeat", f.heartbeat)
	mux.HandleFunc("POST "+api.Prefix+"/attempts/{job}/{attempt}/logs", f.appendLog)
	mux.HandleFunc("POST "+api.Prefix+"/attempts/{job}/{attempt}/finish", f.finishAttempt)
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		down := f.down
		f.requests[route(r.URL.Path)]++
		f.changedLocked()
		f.mu.Unlock()
		if down {
			hangUp(w)
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		close(f.closing)
		f.srv.Close()
	})
	return f
}

// route names the route of a request path.
func route(path string) string {
	for _, r := range []string{"claim", "heartbeat", "logs", "finish"} {
		if strings.HasSuffix(path, "/"+r) {
			return r
		}
	}
	return path
}

func (f *fakeCoordinator) changedLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// waitUntil waits until cond, called with f.mu held, is true.
func (f *fakeCoordinator) waitUntil(what string, cond func(f *fakeCoordinator) bool) {
	f.t.Helper()
	timeout := time.After(testSignalTimeout)
	for {
		f.mu.Lock()
		ok, changed := cond(f), f.changed
		f.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			f.t.Fatalf("timed out after %s waiting until %s", testSignalTimeout, what)
		}
	}
}

// get returns what fn reads from f, with f.mu held.
func get[T any](f *fakeCoordinator, fn func(f *fakeCoordinator) T) T {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fn(f)
}

// hangUp closes the connection without an answer: a transport error.
func hangUp(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	conn.Close()
}

// push queues a job.
func (f *fakeCoordinator) push(spec job.Spec, secrets map[string]string) *fakeJob {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextID++
	if spec.Queue == "" {
		spec.Queue = "default"
	}
	j := &fakeJob{id: f.nextID, spec: spec, secrets: secrets, state: job.StateQueued, done: make(chan struct{})}
	f.jobs[j.id] = j
	f.queued = append(f.queued, j)
	close(f.wake)
	f.wake = make(chan struct{})
	return j
}

func (f *fakeCoordinator) set(fn func(f *fakeCoordinator)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// requestCancel asks the job's executor to stop it, at its next heartbeat.
func (f *fakeCoordinator) requestCancel(j *fakeJob) {
	f.mu.Lock()
	defer f.mu.Unlock()
	j.cancel = true
}

// forget makes the job's attempt unknown: heartbeats list it as Unknown and
// log appends and finishes get stale_attempt.
func (f *fakeCoordinator) forget(j *fakeJob) {
	f.mu.Lock()
	defer f.mu.Unlock()
	j.forgotten = true
	f.running--
}

// waitFinished waits until the job's attempt is finished and returns the report.
func (f *fakeCoordinator) waitFinished(j *fakeJob) api.FinishRequest {
	f.t.Helper()
	select {
	case <-j.done:
	case <-time.After(testSignalTimeout):
		f.t.Fatalf("job %d: not finished after %s", j.id, testSignalTimeout)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return *j.finish
}

func (f *fakeCoordinator) logOf(j *fakeJob) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return string(j.log)
}

func (f *fakeCoordinator) jobState(j *fakeJob) (job.State, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return j.state, j.finishCalls
}

func (f *fakeCoordinator) claimRequests() []api.ClaimRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.claims)
}

func (f *fakeCoordinator) heartbeatRequests() []api.HeartbeatRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.heartbeats)
}

func (f *fakeCoordinator) claim(w http.ResponseWriter, r *http.Request) {
	if bearer(r) != fakeExecutorToken {
		writeError(w, http.StatusUnauthorized, api.CodeUnauthorized, "unknown token")
		return
	}
	var req api.ClaimRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, err.Error())
		return
	}
	f.mu.Lock()
	f.claims = append(f.claims, req)
	reject := f.rejectClaims
	f.mu.Unlock()
	if reject {
		writeError(w, http.StatusUnauthorized, api.CodeUnauthorized, "executor token revoked")
		return
	}
	f.mu.Lock()
	f.parked++
	f.maxParked = max(f.maxParked, f.parked)
	f.maxLoad = max(f.maxLoad, f.running+f.parked)
	f.changedLocked()
	f.mu.Unlock()
	unpark := func() { // with f.mu held
		f.parked--
		f.changedLocked()
	}
	wait := time.Duration(req.WaitMS) * time.Millisecond
	if wait <= 0 {
		wait = 30 * time.Second
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		f.mu.Lock()
		var j *fakeJob
		for i, q := range f.queued {
			if slices.Contains(req.Queues, q.spec.Queue) {
				j = q
				f.queued = slices.Delete(f.queued, i, i+1)
				break
			}
		}
		if j != nil {
			j.attempt++
			j.token = randomToken()
			j.state = job.StateRunning
			j.log = nil
			j.claimedAt = time.Now()
			j.appends = 0
			unpark()
			f.running++
			f.maxRunning = max(f.maxRunning, f.running)
			resp := api.ClaimResponse{
				Job: api.Job{ID: j.id, Queue: j.spec.Queue, State: job.StateRunning, Attempt: j.attempt,
					MaxAttempts: 3, CreatedAt: time.Now(), Spec: j.spec},
				Attempt:     j.attempt,
				Token:       j.token,
				Secrets:     j.secrets,
				LeaseMS:     f.leaseMS,
				HeartbeatMS: f.heartbeatMS,
				LogLimit:    f.logLimit,
			}
			f.mu.Unlock()
			writeJSON(w, http.StatusOK, resp)
			return
		}
		wake := f.wake
		f.mu.Unlock()
		select {
		case <-wake:
			continue
		case <-timer.C:
		case <-r.Context().Done():
		case <-f.closing:
		}
		f.mu.Lock()
		unpark()
		f.mu.Unlock()
		if r.Context().Err() == nil {
			w.WriteHeader(http.StatusNoContent)
		}
		return
	}
}

func (f *fakeCoordinator) heartbeat(w http.ResponseWriter, r *http.Request) {
	if bearer(r) != fakeExecutorToken {
		writeError(w, http.StatusUnauthorized, api.CodeUnauthorized, "unknown token")
		return
	}
	var req api.HeartbeatRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, err.Error())
		return
	}
	f.mu.Lock()
	slow := f.slowHeartbeat
	f.mu.Unlock()
	if slow > 0 {
		select {
		case <-time.After(slow):
		case <-r.Context().Done():
			return
		case <-f.closing:
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failHeartbeat {
		writeError(w, http.StatusInternalServerError, api.CodeInternal, "database is on fire")
		return
	}
	f.heartbeats = append(f.heartbeats, req)
	resp := api.HeartbeatResponse{Cancel: []queue.AttemptRef{}, Unknown: []queue.AttemptRef{}}
	for _, ref := range req.Attempts {
		j, ok := f.jobs[ref.JobID]
		switch {
		case !ok || j.attempt != ref.Attempt || j.state != job.StateRunning || j.forgotten:
			resp.Unknown = append(resp.Unknown, ref)
		case j.cancel:
			resp.Cancel = append(resp.Cancel, ref)
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

// attempt finds the attempt a request names and checks its job token. It
// writes the error and returns nil when the request must not proceed.
func (f *fakeCoordinator) attempt(w http.ResponseWriter, r *http.Request) *fakeJob {
	id, err1 := strconv.ParseInt(r.PathValue("job"), 10, 64)
	n, err2 := strconv.Atoi(r.PathValue("attempt"))
	if err1 != nil || err2 != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "bad attempt")
		return nil
	}
	j, ok := f.jobs[id]
	if !ok || j.token == "" || bearer(r) != j.token {
		writeError(w, http.StatusUnauthorized, api.CodeUnauthorized, "unknown job token")
		return nil
	}
	if j.attempt != n || j.state != job.StateRunning || j.forgotten {
		writeError(w, http.StatusConflict, api.CodeStaleAttempt, "attempt is no longer current")
		return nil
	}
	return j
}

func (f *fakeCoordinator) appendLog(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	off, err := strconv.ParseInt(r.URL.Query().Get("offset"), 10, 64)
	if err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "bad offset")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	j := f.attempt(w, r)
	if j == nil {
		return
	}
	j.appends++
	if f.refuseLogs {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "logs refused")
		return
	}
	end := int64(len(j.log))
	switch {
	case off > end:
		writeError(w, http.StatusConflict, api.CodeConflict, "log chunk leaves a gap")
		return
	case off+int64(len(data)) > end:
		data = data[end-off:]
		if f.logLimit > 0 && end+int64(len(data)) > f.logLimit {
			writeError(w, http.StatusRequestEntityTooLarge, api.CodeTooLarge, "log over its limit")
			return
		}
		j.log = append(j.log, data...)
	}
	writeJSON(w, http.StatusOK, api.AppendLogResponse{End: int64(len(j.log))})
}

func (f *fakeCoordinator) finishAttempt(w http.ResponseWriter, r *http.Request) {
	var req api.FinishRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, err.Error())
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	j := f.attempt(w, r)
	if j == nil {
		return
	}
	j.finishCalls++
	if f.failFinishes > 0 {
		f.failFinishes--
		writeError(w, http.StatusInternalServerError, api.CodeInternal, "database is on fire")
		return
	}
	j.finish = &req
	j.finishedAt = time.Now()
	j.state = job.State(req.Outcome)
	if req.Outcome == job.OutcomeErrored {
		j.state = job.StateQueued // re-queued (but not handed out again by this fake)
	}
	f.running--
	close(j.done)
	writeJSON(w, http.StatusOK, api.Job{ID: j.id, Queue: j.spec.Queue, State: j.state, Reason: req.Reason,
		Message: req.Message, Attempt: j.attempt, Spec: j.spec})
}

func bearer(r *http.Request) string {
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		panic(err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, api.ErrorBody{Error: api.Error{Code: code, Message: msg}})
}

func randomToken() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
