package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

// httpError is an error a handler chose the status and code of.
type httpError struct {
	status int
	body   api.Error
}

func (e *httpError) Error() string { return e.body.Message }

func newHTTPError(status int, code, field, format string, args ...any) error {
	return &httpError{status: status, body: api.Error{Code: code, Field: field, Message: fmt.Sprintf(format, args...)}}
}

func badRequest(format string, args ...any) error {
	return newHTTPError(http.StatusBadRequest, api.CodeBadRequest, "", format, args...)
}

func invalid(field, format string, args ...any) error {
	return newHTTPError(http.StatusUnprocessableEntity, api.CodeInvalid, field, format, args...)
}

var (
	errUnauthorized = newHTTPError(http.StatusUnauthorized, api.CodeUnauthorized, "", "missing or unknown token")
	errNotFoundPath = newHTTPError(http.StatusNotFound, api.CodeNotFound, "", "no such route")
)

func forbidden(format string, args ...any) error {
	return newHTTPError(http.StatusForbidden, api.CodeForbidden, "", format, args...)
}

// classify is the one place that maps an error to an HTTP status and body.
// The api client maps the codes back to the same sentinels.
func classify(err error) (int, api.Error) {
	var he *httpError
	var mbe *http.MaxBytesError
	var ve *job.ValidationError
	switch {
	case errors.As(err, &he):
		return he.status, he.body
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, api.Error{Code: api.CodeTooLarge,
			Message: fmt.Sprintf("request body is over the limit of %d bytes", mbe.Limit)}
	case errors.As(err, &ve):
		e := api.Error{Code: api.CodeInvalid, Message: ve.Error()}
		if len(ve.Problems) > 0 {
			e.Field = ve.Problems[0].Field
		}
		return http.StatusUnprocessableEntity, e
	case errors.Is(err, queue.ErrStaleAttempt):
		return http.StatusConflict, api.Error{Code: api.CodeStaleAttempt, Message: queue.ErrStaleAttempt.Error()}
	case errors.Is(err, queue.ErrLogGap):
		return http.StatusConflict, api.Error{Code: api.CodeConflict, Message: err.Error()}
	case errors.Is(err, queue.ErrInvalidState):
		return http.StatusConflict, api.Error{Code: api.CodeConflict, Message: err.Error()}
	case errors.Is(err, queue.ErrLogLimit):
		return http.StatusRequestEntityTooLarge, api.Error{Code: api.CodeTooLarge, Message: err.Error()}
	case errors.Is(err, queue.ErrBadCursor):
		return http.StatusBadRequest, api.Error{Code: api.CodeBadRequest, Message: err.Error(), Field: "cursor"}
	case errors.Is(err, queue.ErrNotFound):
		return http.StatusNotFound, api.Error{Code: api.CodeNotFound, Message: err.Error()}
	case errors.Is(err, queue.ErrUnknownToken):
		return http.StatusUnauthorized, api.Error{Code: api.CodeUnauthorized, Message: queue.ErrUnknownToken.Error()}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, api.Error{Code: api.CodeInternal, Message: "request canceled"}
	}
	return http.StatusInternalServerError, api.Error{Code: api.CodeInternal, Message: "internal error"}
}

// writeError answers r with err's status and JSON body, logging what is
// not the client's fault.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, body := classify(err)
	switch {
	case status >= 500 && r.Context().Err() != nil:
		s.log.Debug("request abandoned by client", "method", r.Method, "path", r.URL.Path, "err", err)
	case status >= 500:
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeJSON(w, status, api.ErrorBody{Error: body})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own types are written; a failure here is a bug.
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"internal_error","message":"internal error"}}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// decodeJSON reads one JSON value of at most limit bytes from r's body into
// v, refusing unknown fields and trailing data.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	body := http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return jsonError(err)
		}
		return badRequest("request body has data after the JSON value")
	}
	return nil
}

func jsonError(err error) error {
	var mbe *http.MaxBytesError
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &mbe):
		return err
	case errors.Is(err, io.EOF):
		return badRequest("request body is empty")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("request body is truncated JSON")
	case errors.As(err, &se):
		return badRequest("request body is not valid JSON: %v", se)
	case errors.As(err, &te):
		field := te.Field
		return newHTTPError(http.StatusBadRequest, api.CodeBadRequest, field,
			"field %q: cannot use a JSON %s as %s", field, te.Value, te.Type)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return badRequest("request body has an %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	// Anything else from the decoder is a problem with the body (including a
	// broken connection, whose answer nobody reads).
	return badRequest("reading request body: %v", err)
}
