package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

// MaxLogChunkBytes is the largest body one log append may carry.
const MaxLogChunkBytes = 4 << 20

// Errors the client maps error codes to, besides the queue package's
// sentinels (not_found → queue.ErrNotFound, stale_attempt →
// queue.ErrStaleAttempt, conflict → queue.ErrInvalidState, or
// queue.ErrLogGap on a log append).
var (
	ErrBadRequest   = errors.New("bad request")             // 400 bad_request
	ErrUnauthorized = errors.New("unauthorized")            // 401 unauthorized
	ErrForbidden    = errors.New("forbidden")               // 403 forbidden
	ErrTooLarge     = errors.New("too large")               // 413 too_large (also queue.ErrLogLimit on a log append)
	ErrInvalid      = errors.New("invalid")                 // 422 invalid
	ErrInternal     = errors.New("coordinator error")       // 5xx
	errNoBody       = errors.New("empty response body")     // a 2xx without the JSON it promised
	errShortWrite   = errors.New("short write of log data") // w.Write wrote less without an error
)

// StatusError is an error answer from the coordinator. errors.Is matches it
// against the sentinel of its code (see the variables above).
type StatusError struct {
	Status int   // HTTP status
	Err    Error // the decoded error body

	wrapped []error // set by the client for route-specific sentinels
}

func (e *StatusError) Error() string {
	if e.Err.Message != "" {
		return e.Err.Message
	}
	return fmt.Sprintf("coordinator answered %d %s", e.Status, http.StatusText(e.Status))
}

// Unwrap returns the sentinels the error's code stands for.
func (e *StatusError) Unwrap() []error {
	if e.wrapped != nil {
		return e.wrapped
	}
	if s := codeSentinel(e.Err.Code); s != nil {
		return []error{s}
	}
	return nil
}

func codeSentinel(code string) error {
	switch code {
	case CodeBadRequest:
		return ErrBadRequest
	case CodeUnauthorized:
		return ErrUnauthorized
	case CodeForbidden:
		return ErrForbidden
	case CodeNotFound:
		return queue.ErrNotFound
	case CodeStaleAttempt:
		return queue.ErrStaleAttempt
	case CodeConflict:
		return queue.ErrInvalidState
	case CodeTooLarge:
		return ErrTooLarge
	case CodeInvalid:
		return ErrInvalid
	case CodeInternal:
		return ErrInternal
	}
	return nil
}

// codeForStatus guesses the code of an error answer without a JSON body
// (from a proxy, say).
func codeForStatus(status int) string {
	switch status {
	case http.StatusBadRequest, http.StatusMethodNotAllowed:
		return CodeBadRequest
	case http.StatusUnauthorized:
		return CodeUnauthorized
	case http.StatusForbidden:
		return CodeForbidden
	case http.StatusNotFound:
		return CodeNotFound
	case http.StatusConflict:
		return CodeConflict
	case http.StatusRequestEntityTooLarge:
		return CodeTooLarge
	case http.StatusUnprocessableEntity:
		return CodeInvalid
	}
	if status >= 500 {
		return CodeInternal
	}
	return ""
}

// Client calls the coordinator's API. It is safe for concurrent use; it
// keeps connections alive and pools them.
type Client struct {
	base      string
	token     string
	hc        *http.Client
	userAgent string
}

// ClientOption configures a Client.
type ClientOption func(*clientOptions)

type clientOptions struct {
	hc        *http.Client
	tls       *tls.Config
	userAgent string
}

// WithHTTPClient makes the Client use hc as it is (WithTLSConfig is then
// ignored).
func WithHTTPClient(hc *http.Client) ClientOption {
	return func(o *clientOptions) { o.hc = hc }
}

// WithTLSConfig sets the TLS configuration of the Client's own transport,
// e.g. from ClientTLSConfig.
func WithTLSConfig(cfg *tls.Config) ClientOption {
	return func(o *clientOptions) { o.tls = cfg }
}

// WithUserAgent sets the User-Agent header of every request.
func WithUserAgent(ua string) ClientOption {
	return func(o *clientOptions) { o.userAgent = ua }
}

// ClientTLSConfig returns a TLS configuration that trusts the system's roots
// and, if caFile is not empty, the PEM certificates in caFile (for a
// coordinator with a private or self-signed certificate).
func ClientTLSConfig(caFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile == "" {
		return cfg, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("reading CA file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("reading CA file %s: no PEM certificates found", caFile)
	}
	cfg.RootCAs = pool
	return cfg, nil
}

// NewClient returns a client of the coordinator at baseURL (scheme, host and
// port, e.g. "https://coordinator:8443") that authenticates with token: a
// client token for the client routes, an executor token for Claim and
// Heartbeat. AppendLog and Finish take their job token as an argument.
func NewClient(baseURL, token string, opts ...ClientOption) *Client {
	var o clientOptions
	for _, opt := range opts {
		opt(&o)
	}
	hc := o.hc
	if hc == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// Executors and load generators keep many requests in flight (long
		// polls, appends, heartbeats): keep enough idle connections around
		// that none of them has to dial again.
		t.MaxIdleConns = 256
		t.MaxIdleConnsPerHost = 64
		t.IdleConnTimeout = 90 * time.Second
		if o.tls != nil {
			t.TLSClientConfig = o.tls.Clone()
		}
		hc = &http.Client{Transport: t}
	}
	ua := o.userAgent
	if ua == "" {
		ua = "airlock-client"
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), token: token, hc: hc, userAgent: ua}
}

// ListOptions filter and paginate List.
type ListOptions struct {
	States []job.State // any of these; empty means all
	Queues []string    // any of these; empty means all
	Limit  int         // 0 means the coordinator's default
	Cursor string      // JobList.NextCursor of the previous page
}

// LogOptions choose what Logs reads.
type LogOptions struct {
	Attempt int   // 0 means the latest (with Follow on a queued job: the next to start)
	Offset  int64 // first byte to read
	Follow  bool  // keep streaming until the attempt's log is final
}

// Submit submits a job.
func (c *Client) Submit(ctx context.Context, spec job.Spec) (*Job, error) {
	var out Job
	if err := c.doJSON(ctx, http.MethodPost, "/jobs", nil, c.token, SubmitRequest{Spec: spec}, &out); err != nil {
		return nil, fmt.Errorf("submitting job: %w", err)
	}
	return &out, nil
}

// Get returns a job with its attempts.
func (c *Client) Get(ctx context.Context, id int64) (*Job, error) {
	var out Job
	if err := c.doJSON(ctx, http.MethodGet, fmt.Sprintf("/jobs/%d", id), nil, c.token, nil, &out); err != nil {
		return nil, fmt.Errorf("getting job %d: %w", id, err)
	}
	return &out, nil
}

// List returns one page of jobs, newest first.
func (c *Client) List(ctx context.Context, opts ListOptions) (*JobList, error) {
	q := url.Values{}
	if len(opts.States) > 0 {
		s := make([]string, len(opts.States))
		for i, st := range opts.States {
			s[i] = string(st)
		}
		q.Set("state", strings.Join(s, ","))
	}
	if len(opts.Queues) > 0 {
		q.Set("queue", strings.Join(opts.Queues, ","))
	}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	if opts.Cursor != "" {
		q.Set("cursor", opts.Cursor)
	}
	var out JobList
	if err := c.doJSON(ctx, http.MethodGet, "/jobs", q, c.token, nil, &out); err != nil {
		return nil, fmt.Errorf("listing jobs: %w", err)
	}
	return &out, nil
}

// Cancel cancels a queued job at once, or asks a running job's executor to
// stop it.
func (c *Client) Cancel(ctx context.Context, id int64) (*Job, error) {
	var out Job
	if err := c.doJSON(ctx, http.MethodPost, fmt.Sprintf("/jobs/%d/cancel", id), nil, c.token, nil, &out); err != nil {
		return nil, fmt.Errorf("canceling job %d: %w", id, err)
	}
	return &out, nil
}

// Retry puts a finished job back in its queue with a fresh attempt budget.
func (c *Client) Retry(ctx context.Context, id int64) (*Job, error) {
	var out Job
	if err := c.doJSON(ctx, http.MethodPost, fmt.Sprintf("/jobs/%d/retry", id), nil, c.token, nil, &out); err != nil {
		return nil, fmt.Errorf("retrying job %d: %w", id, err)
	}
	return &out, nil
}

// Executors lists the executors the coordinator has seen.
func (c *Client) Executors(ctx context.Context) (*ExecutorList, error) {
	var out ExecutorList
	if err := c.doJSON(ctx, http.MethodGet, "/executors", nil, c.token, nil, &out); err != nil {
		return nil, fmt.Errorf("listing executors: %w", err)
	}
	return &out, nil
}

// UploadArtifacts stores attempt ref's artifacts (a gzip-compressed tar),
// authenticated by the attempt's job token. Too large is ErrTooLarge.
func (c *Client) UploadArtifacts(ctx context.Context, token string, ref queue.AttemptRef, body io.Reader) (*Artifact, error) {
	path := fmt.Sprintf("/attempts/%d/%d/artifacts", ref.JobID, ref.Attempt)
	resp, err := c.do(ctx, http.MethodPut, path, nil, token, body, "application/gzip")
	if err != nil {
		return nil, fmt.Errorf("uploading artifacts of job %d attempt %d: %w", ref.JobID, ref.Attempt, err)
	}
	var out Artifact
	if err := decodeBody(resp, &out); err != nil {
		return nil, fmt.Errorf("uploading artifacts of job %d attempt %d: %w", ref.JobID, ref.Attempt, err)
	}
	return &out, nil
}

// Artifacts lists a job's artifacts by attempt.
func (c *Client) Artifacts(ctx context.Context, id int64) (*ArtifactList, error) {
	var out ArtifactList
	if err := c.doJSON(ctx, http.MethodGet, fmt.Sprintf("/jobs/%d/artifacts", id), nil, c.token, nil, &out); err != nil {
		return nil, fmt.Errorf("listing artifacts of job %d: %w", id, err)
	}
	return &out, nil
}

// DownloadArtifacts copies an attempt's artifacts (a gzip-compressed tar) to
// w and returns the bytes written.
func (c *Client) DownloadArtifacts(ctx context.Context, id int64, attempt int, w io.Writer) (int64, error) {
	resp, err := c.do(ctx, http.MethodGet, fmt.Sprintf("/jobs/%d/artifacts/%d", id, attempt), nil, c.token, nil, "")
	if err != nil {
		return 0, fmt.Errorf("downloading artifacts of job %d attempt %d: %w", id, attempt, err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("downloading artifacts of job %d attempt %d: %w", id, attempt, err)
	}
	return n, nil
}

// PutRepository registers a repository (or replaces its registration).
func (c *Client) PutRepository(ctx context.Context, r job.Remote) (*Repository, error) {
	var out Repository
	if err := c.doJSON(ctx, http.MethodPut, repositoryPath(r.Name), nil, c.token, r, &out); err != nil {
		return nil, fmt.Errorf("registering repository %q: %w", r.Name, err)
	}
	return &out, nil
}

// Repository returns one registered repository.
func (c *Client) Repository(ctx context.Context, name string) (*Repository, error) {
	var out Repository
	if err := c.doJSON(ctx, http.MethodGet, repositoryPath(name), nil, c.token, nil, &out); err != nil {
		return nil, fmt.Errorf("reading repository %q: %w", name, err)
	}
	return &out, nil
}

// Repositories lists the registered repositories.
func (c *Client) Repositories(ctx context.Context) (*RepositoryList, error) {
	var out RepositoryList
	if err := c.doJSON(ctx, http.MethodGet, "/repositories", nil, c.token, nil, &out); err != nil {
		return nil, fmt.Errorf("listing repositories: %w", err)
	}
	return &out, nil
}

// DeleteRepository removes a registration.
func (c *Client) DeleteRepository(ctx context.Context, name string) error {
	if err := c.doJSON(ctx, http.MethodDelete, repositoryPath(name), nil, c.token, nil, nil); err != nil {
		return fmt.Errorf("removing repository %q: %w", name, err)
	}
	return nil
}

// repositoryPath escapes each segment of a repository name.
func repositoryPath(name string) string {
	segs := strings.Split(name, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return "/repositories/" + strings.Join(segs, "/")
}

// Log-follow reconnection.
const (
	logRetries    = 10 // consecutive failed reconnections before Logs gives up
	logBackoffMin = 100 * time.Millisecond
	logBackoffMax = 5 * time.Second
)

// Logs copies a job attempt's log from opts.Offset to w and returns the
// offset after the last byte written. With Follow it streams until the
// attempt's log is final (the job finished or the attempt was superseded);
// if the connection drops mid-stream it reconnects and resumes from the
// returned offset, on the same attempt, with backoff, until ctx ends or
// several reconnections in a row fail. An error writing to w ends it at once.
func (c *Client) Logs(ctx context.Context, id int64, opts LogOptions, w io.Writer) (int64, error) {
	next, attempt := opts.Offset, opts.Attempt
	failures := 0
	backoff := logBackoffMin
	for {
		q := url.Values{}
		if attempt > 0 {
			q.Set("attempt", strconv.Itoa(attempt))
		}
		if next > 0 {
			q.Set("offset", strconv.FormatInt(next, 10))
		}
		if opts.Follow {
			q.Set("follow", "1")
		}
		resp, err := c.do(ctx, http.MethodGet, fmt.Sprintf("/jobs/%d/logs", id), q, c.token, nil, "")
		var readErr error
		if err == nil {
			// Pin the attempt the coordinator resolved, so that a reconnection
			// resumes the same log even if a newer attempt has started.
			if a, perr := strconv.Atoi(resp.Header.Get(HeaderLogAttempt)); perr == nil && a > 0 {
				attempt = a
			}
			var n int64
			var werr error
			n, readErr, werr = copyCounting(w, resp.Body)
			resp.Body.Close()
			next += n
			if werr != nil {
				return next, fmt.Errorf("writing log of job %d: %w", id, werr)
			}
			if readErr == nil {
				return next, nil // the coordinator ended the stream: done
			}
			if n > 0 {
				failures, backoff = 0, logBackoffMin
			}
			err = readErr
		}
		if ctx.Err() != nil {
			return next, fmt.Errorf("reading log of job %d: %w", id, ctx.Err())
		}
		if !opts.Follow || !retryable(err) || failures >= logRetries {
			return next, fmt.Errorf("reading log of job %d: %w", id, err)
		}
		failures++
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return next, fmt.Errorf("reading log of job %d: %w", id, ctx.Err())
		case <-t.C:
		}
		backoff = min(backoff*2, logBackoffMax)
	}
}

// retryable says whether a failed log read is worth another try: transport
// errors and server errors are, error answers about the request are not.
func retryable(err error) bool {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Status >= 500
	}
	return true
}

// copyCounting copies r to w, telling a failed read from a failed write.
func copyCounting(w io.Writer, r io.Reader) (n int64, readErr, writeErr error) {
	buf := make([]byte, 32<<10)
	for {
		m, err := r.Read(buf)
		if m > 0 {
			wm, werr := w.Write(buf[:m])
			n += int64(wm)
			if werr != nil {
				return n, nil, werr
			}
			if wm < m {
				return n, nil, errShortWrite
			}
		}
		if errors.Is(err, io.EOF) {
			return n, nil, nil
		}
		if err != nil {
			return n, err, nil
		}
	}
}

// Claim asks for a job from the given queues, waiting up to req.WaitMS (the
// coordinator's default when 0) for one. It returns (nil, nil) when none came.
func (c *Client) Claim(ctx context.Context, req ClaimRequest) (*ClaimResponse, error) {
	var out ClaimResponse
	status, err := c.doJSONStatus(ctx, http.MethodPost, "/executor/claim", nil, c.token, req, &out)
	if err != nil {
		return nil, fmt.Errorf("claiming a job: %w", err)
	}
	if status == http.StatusNoContent {
		return nil, nil
	}
	return &out, nil
}

// Heartbeat reports an executor's running attempts and returns those it
// must cancel and those the coordinator no longer recognises.
func (c *Client) Heartbeat(ctx context.Context, req HeartbeatRequest) (*HeartbeatResponse, error) {
	var out HeartbeatResponse
	if err := c.doJSON(ctx, http.MethodPost, "/executor/heartbeat", nil, c.token, req, &out); err != nil {
		return nil, fmt.Errorf("sending heartbeat: %w", err)
	}
	return &out, nil
}

// AppendLog appends data at offset to the log of attempt ref, authenticated
// by the attempt's job token, and returns the log's end. Resending a chunk
// is harmless. A gap is queue.ErrLogGap; a log over its limit
// queue.ErrLogLimit (and ErrTooLarge); a superseded attempt
// queue.ErrStaleAttempt (or ErrUnauthorized once its token is dead).
func (c *Client) AppendLog(ctx context.Context, token string, ref queue.AttemptRef, offset int64, data []byte) (int64, error) {
	q := url.Values{"offset": {strconv.FormatInt(offset, 10)}}
	path := fmt.Sprintf("/attempts/%d/%d/logs", ref.JobID, ref.Attempt)
	resp, err := c.do(ctx, http.MethodPost, path, q, token, bytes.NewReader(data), "application/octet-stream")
	if err != nil {
		var se *StatusError
		if errors.As(err, &se) {
			switch se.Err.Code {
			case CodeConflict:
				se.wrapped = []error{queue.ErrLogGap}
			case CodeTooLarge:
				se.wrapped = []error{ErrTooLarge, queue.ErrLogLimit}
			}
		}
		return 0, fmt.Errorf("appending to log of job %d attempt %d: %w", ref.JobID, ref.Attempt, err)
	}
	var out AppendLogResponse
	if err := decodeBody(resp, &out); err != nil {
		return 0, fmt.Errorf("appending to log of job %d attempt %d: %w", ref.JobID, ref.Attempt, err)
	}
	return out.End, nil
}

// Finish ends attempt ref with the executor's outcome, authenticated by the
// attempt's job token, and returns the job. After it succeeds the token is
// dead: a retry whose first try did land gets ErrUnauthorized.
func (c *Client) Finish(ctx context.Context, token string, ref queue.AttemptRef, req FinishRequest) (*Job, error) {
	var out Job
	path := fmt.Sprintf("/attempts/%d/%d/finish", ref.JobID, ref.Attempt)
	if err := c.doJSON(ctx, http.MethodPost, path, nil, token, req, &out); err != nil {
		return nil, fmt.Errorf("finishing job %d attempt %d: %w", ref.JobID, ref.Attempt, err)
	}
	return &out, nil
}

// doJSON sends in (if not nil) as JSON and decodes the answer into out.
func (c *Client) doJSON(ctx context.Context, method, path string, q url.Values, token string, in, out any) error {
	_, err := c.doJSONStatus(ctx, method, path, q, token, in, out)
	return err
}

func (c *Client) doJSONStatus(ctx context.Context, method, path string, q url.Values, token string, in, out any) (int, error) {
	var body io.Reader
	ct := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, fmt.Errorf("encoding request: %w", err)
		}
		body, ct = bytes.NewReader(b), "application/json"
	}
	resp, err := c.do(ctx, method, path, q, token, body, ct)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode == http.StatusNoContent {
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	return resp.StatusCode, decodeBody(resp, out)
}

// do sends a request to the API route path and returns a 2xx response whose
// body the caller must close; an error answer becomes a *StatusError.
// Transport errors come back as they are.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, token string, body io.Reader, contentType string) (*http.Response, error) {
	u := c.base + Prefix + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("building request: %w", err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("User-Agent", c.userAgent)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, statusError(resp)
	}
	return resp, nil
}

// statusError reads an error answer.
func statusError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // let the connection be reused
	se := &StatusError{Status: resp.StatusCode}
	var eb ErrorBody
	if json.Unmarshal(b, &eb) == nil && eb.Error.Code != "" {
		se.Err = eb.Error
		return se
	}
	se.Err.Code = codeForStatus(resp.StatusCode)
	msg := strings.TrimSpace(string(b))
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	se.Err.Message = fmt.Sprintf("coordinator answered %s", resp.Status)
	if msg != "" {
		se.Err.Message += ": " + msg
	}
	return se
}

// decodeBody decodes a JSON answer into out and closes the body, drained so
// the connection goes back to the pool.
func decodeBody(resp *http.Response, out any) error {
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		if errors.Is(err, io.EOF) {
			return errNoBody
		}
		return fmt.Errorf("decoding response: %w", err)
	}
	io.Copy(io.Discard, resp.Body)
	return nil
}

// HasFile reports whether a job file with this digest ("sha256:<hex>") has
// been uploaded.
func (c *Client) HasFile(ctx context.Context, digest string) (bool, error) {
	resp, err := c.do(ctx, http.MethodHead, "/files/"+digest, nil, c.token, nil, "")
	if err != nil {
		if errors.Is(err, queue.ErrNotFound) {
			return false, nil
		}
		return false, fmt.Errorf("looking up file %s: %w", digest, err)
	}
	resp.Body.Close()
	return true, nil
}

// UploadFile sends a job file's content under its digest ("sha256:<hex>");
// size is its length (sent as Content-Length so that an oversized file is
// refused before it is sent). Too large is ErrTooLarge.
func (c *Client) UploadFile(ctx context.Context, digest string, body io.Reader, size int64) (*FileUpload, error) {
	u := c.base + Prefix + "/files/" + digest
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, body)
	if err != nil {
		return nil, fmt.Errorf("uploading file %s: %w", digest, err)
	}
	req.ContentLength = size
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("User-Agent", c.userAgent)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("uploading file %s: %w", digest, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, fmt.Errorf("uploading file %s: %w", digest, statusError(resp))
	}
	var out FileUpload
	if err := decodeBody(resp, &out); err != nil {
		return nil, fmt.Errorf("uploading file %s: %w", digest, err)
	}
	return &out, nil
}

// JobFile opens an uploaded file that attempt ref's job names, authenticated
// by the attempt's job token. The caller closes it and should check the
// content against the digest.
func (c *Client) JobFile(ctx context.Context, token string, ref queue.AttemptRef, digest string) (io.ReadCloser, int64, error) {
	resp, err := c.do(ctx, http.MethodGet, fmt.Sprintf("/attempts/%d/%d/files/%s", ref.JobID, ref.Attempt, digest), nil, token, nil, "")
	if err != nil {
		return nil, 0, fmt.Errorf("downloading file %s of job %d: %w", digest, ref.JobID, err)
	}
	return resp.Body, resp.ContentLength, nil
}
