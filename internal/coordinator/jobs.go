package coordinator

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

// Client routes: submit, get, list, cancel, retry, executors. Logs are in
// logs.go.

func (s *Server) handleSubmit(w http.ResponseWriter, r *http.Request) {
	// The envelope is decoded strictly, the spec by job.Decode so that its
	// problems are reported with paths relative to the spec ("steps[0].run").
	var env struct {
		Spec json.RawMessage `json:"spec"`
	}
	if err := decodeJSON(w, r, s.cfg.MaxRequestBytes, &env); err != nil {
		s.writeError(w, r, err)
		return
	}
	if len(env.Spec) == 0 || string(env.Spec) == "null" {
		s.writeError(w, r, invalid("spec", "spec is required"))
		return
	}
	spec, err := s.cfg.Limits.Decode(env.Spec)
	if err != nil {
		s.writeError(w, r, specDecodeError(err))
		return
	}
	spec.Normalize()
	if err := spec.Validate(s.cfg.Limits); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.checkSecrets(spec); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.checkRepository(r, spec); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.checkFiles(r, spec); err != nil {
		s.writeError(w, r, err)
		return
	}
	j, err := s.store.Submit(r.Context(), queue.SubmitParams{Spec: spec})
	if err != nil {
		s.writeError(w, r, fmt.Errorf("submitting job: %w", err))
		return
	}
	s.metrics.submitted.Inc()
	s.prefetch(spec.Repository)
	s.claims.notify(j.Queue)
	s.log.Debug("job submitted", "job_id", j.ID, "queue", j.Queue)
	w.Header().Set("Location", fmt.Sprintf("%s/jobs/%d", api.Prefix, j.ID))
	writeJSON(w, http.StatusCreated, toAPIJob(j))
}

// specDecodeError gives a decoding error its status: an oversized spec is
// 413, malformed JSON 400, any other problem (unknown field, wrong type,
// duplicate key) 422 with the problem's path relative to the spec.
func specDecodeError(err error) error {
	var ve *job.ValidationError
	field := ""
	if errors.As(err, &ve) && len(ve.Problems) > 0 {
		field = ve.Problems[0].Field
	}
	switch {
	case errors.Is(err, job.ErrTooLarge):
		return newHTTPError(http.StatusRequestEntityTooLarge, api.CodeTooLarge, field, "%v", err)
	case errors.Is(err, job.ErrMalformed):
		return newHTTPError(http.StatusBadRequest, api.CodeBadRequest, field, "%v", err)
	case ve != nil:
		return err
	}
	return newHTTPError(http.StatusBadRequest, api.CodeBadRequest, "spec", "spec: %v", err)
}

// checkSecrets refuses a spec that names a secret the coordinator does not
// have, naming every such entry.
func (s *Server) checkSecrets(spec job.Spec) error {
	var ve job.ValidationError
	for i, name := range spec.Secrets {
		if _, ok := s.cfg.Secrets[name]; !ok {
			ve.Problems = append(ve.Problems, job.FieldError{
				Field:   fmt.Sprintf("secrets[%d]", i),
				Message: fmt.Sprintf("secret %q is not configured on the coordinator", name),
			})
		}
	}
	if len(ve.Problems) > 0 {
		return &ve
	}
	return nil
}

func (s *Server) handleGet(w http.ResponseWriter, r *http.Request) {
	id, err := jobIDFromPath(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	j, err := s.store.Get(r.Context(), id)
	if err != nil {
		s.writeError(w, r, fmt.Errorf("getting job %d: %w", id, err))
		return
	}
	writeJSON(w, http.StatusOK, toAPIJob(j))
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var p queue.ListParams
	for _, v := range splitList(q["state"]) {
		st := job.State(v)
		if !st.Valid() {
			s.writeError(w, r, newHTTPError(http.StatusBadRequest, api.CodeBadRequest, "state",
				"unknown state %q (want one of %s)", v, joinStates()))
			return
		}
		p.States = append(p.States, st)
	}
	p.Queues = splitList(q["queue"])
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			s.writeError(w, r, newHTTPError(http.StatusBadRequest, api.CodeBadRequest, "limit",
				"limit %q is not a non-negative integer", v))
			return
		}
		p.Limit = n
	}
	p.Cursor = q.Get("cursor")
	res, err := s.store.List(r.Context(), p)
	if err != nil {
		s.writeError(w, r, fmt.Errorf("listing jobs: %w", err))
		return
	}
	out := api.JobList{Jobs: make([]api.Job, 0, len(res.Jobs)), NextCursor: res.NextCursor}
	for _, j := range res.Jobs {
		out.Jobs = append(out.Jobs, toAPIJob(j))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleCancel(w http.ResponseWriter, r *http.Request) {
	id, err := jobIDFromPath(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	j, err := s.store.Cancel(r.Context(), id)
	if err != nil {
		s.writeError(w, r, fmt.Errorf("canceling job %d: %w", id, err))
		return
	}
	s.watch.wake(id)
	s.log.Info("job cancellation requested", "job_id", id, "state", j.State)
	writeJSON(w, http.StatusOK, toAPIJob(j))
}

func (s *Server) handleRetry(w http.ResponseWriter, r *http.Request) {
	id, err := jobIDFromPath(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	j, err := s.store.Retry(r.Context(), id)
	if err != nil {
		s.writeError(w, r, fmt.Errorf("retrying job %d: %w", id, err))
		return
	}
	s.claims.notify(j.Queue)
	s.watch.wake(id)
	s.log.Info("job retried", "job_id", id)
	writeJSON(w, http.StatusOK, toAPIJob(j))
}

func (s *Server) handleExecutors(w http.ResponseWriter, r *http.Request) {
	execs, err := s.store.Executors(r.Context())
	if err != nil {
		s.writeError(w, r, fmt.Errorf("listing executors: %w", err))
		return
	}
	if execs == nil {
		execs = []queue.ExecutorInfo{}
	}
	writeJSON(w, http.StatusOK, api.ExecutorList{Executors: execs})
}

func jobIDFromPath(r *http.Request) (int64, error) {
	v := r.PathValue("id")
	id, err := strconv.ParseInt(v, 10, 64)
	if err != nil || id <= 0 {
		return 0, badRequest("job id %q is not a positive integer", v)
	}
	return id, nil
}

// splitList flattens repeated and comma-separated query values.
func splitList(vals []string) []string {
	var out []string
	for _, v := range vals {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

func joinStates() string {
	var b strings.Builder
	for i, st := range job.States {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(string(st))
	}
	return b.String()
}

func toAPIJob(j *queue.Job) api.Job {
	out := api.Job{
		ID:              j.ID,
		Queue:           j.Queue,
		Priority:        j.Priority,
		State:           j.State,
		Reason:          j.Reason,
		Message:         j.Message,
		CancelRequested: j.CancelRequested,
		Attempt:         j.Attempt,
		MaxAttempts:     j.MaxAttempts,
		CreatedAt:       j.CreatedAt,
		StartedAt:       timePtr(j.StartedAt),
		FinishedAt:      timePtr(j.FinishedAt),
		Spec:            j.Spec,
	}
	for _, a := range j.Attempts {
		out.Attempts = append(out.Attempts, api.Attempt{
			Number:       a.Number,
			Executor:     a.Executor,
			StartedAt:    a.StartedAt,
			FinishedAt:   timePtr(a.FinishedAt),
			Outcome:      a.Outcome,
			Reason:       a.Reason,
			Message:      a.Message,
			Steps:        a.Steps,
			EgressDenied: a.EgressDenied,
			LogSize:      a.LogSize,
		})
	}
	return out
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
