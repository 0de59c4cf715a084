package gitmirror

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
)

// Content types of git's smart HTTP protocol (gitprotocol-http(5)).
const (
	advertisementType = "application/x-git-upload-pack-advertisement"
	requestType       = "application/x-git-upload-pack-request"
	resultType        = "application/x-git-upload-pack-result"
)

// gitProtocolRE accepts Git-Protocol header values such as "version=2".
var gitProtocolRE = regexp.MustCompile(`^[A-Za-z0-9=:._-]{0,256}$`)

// Handler returns a handler serving the mirror of name; see ServeUploadPack.
func (m *Mirrors) Handler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.ServeUploadPack(w, r, name)
	})
}

// ServeUploadPack serves the mirror of name read-only over git's smart HTTP
// protocol (v0, v1 and v2). The caller has already authorised the request for
// name; this method only looks at how r.URL.Path ends:
//
//	GET  .../info/refs?service=git-upload-pack   the ref advertisement
//	POST .../git-upload-pack                     one upload-pack exchange
//
// Push (service=git-receive-pack or .../git-receive-pack) is 403 Forbidden;
// an invalid name, a name without a mirror, the dumb protocol and every other
// path are 404 Not Found. Any object id in the mirror may be fetched, so a
// client can fetch exactly one commit, shallowly.
func (m *Mirrors) ServeUploadPack(w http.ResponseWriter, r *http.Request, name string) {
	dir, err := m.dir(name)
	if err != nil {
		http.Error(w, "repository not found", http.StatusNotFound)
		return
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		http.Error(w, "repository not found", http.StatusNotFound)
		return
	}
	p := r.URL.Path
	switch {
	case strings.HasSuffix(p, "/info/refs"):
		switch r.URL.Query().Get("service") {
		case "git-upload-pack":
			if r.Method != http.MethodGet {
				w.Header().Set("Allow", http.MethodGet)
				http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
				return
			}
			m.advertise(w, r, dir, name)
		case "git-receive-pack":
			http.Error(w, "push is not allowed: this repository is read-only", http.StatusForbidden)
		default:
			http.Error(w, "only git's smart HTTP protocol is served", http.StatusNotFound)
		}
	case strings.HasSuffix(p, "/git-upload-pack"):
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		m.uploadPack(w, r, dir, name)
	case strings.HasSuffix(p, "/git-receive-pack"):
		http.Error(w, "push is not allowed: this repository is read-only", http.StatusForbidden)
	default:
		http.Error(w, "not found", http.StatusNotFound)
	}
}

// protocolEnv passes the client's Git-Protocol header to upload-pack.
func protocolEnv(r *http.Request) (env []string, v2 bool) {
	h := r.Header.Get("Git-Protocol")
	if h == "" || !gitProtocolRE.MatchString(h) {
		return nil, false
	}
	for _, kv := range strings.Split(h, ":") {
		if kv == "version=2" {
			v2 = true
		}
	}
	return []string{"GIT_PROTOCOL=" + h}, v2
}

func noCache(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-cache, max-age=0, must-revalidate")
	w.Header().Set("Pragma", "no-cache")
}

func (m *Mirrors) advertise(w http.ResponseWriter, r *http.Request, dir, name string) {
	env, v2 := protocolEnv(r)
	var out bytes.Buffer
	if !v2 {
		// Protocol v0/v1 over HTTP starts with the service announcement.
		out.WriteString(pktLine("# service=git-upload-pack\n"))
		out.WriteString("0000")
	}
	err := m.run(r.Context(), gitCmd{timeout: m.opts.ServeTimeout, env: env, stdout: &out},
		"upload-pack", "--stateless-rpc", "--advertise-refs", "--strict", dir)
	if err != nil {
		m.log.Warn("git ref advertisement failed", "repository", name, "error", err.Error())
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", advertisementType)
	noCache(w)
	w.Write(out.Bytes())
}

func (m *Mirrors) uploadPack(w http.ResponseWriter, r *http.Request, dir, name string) {
	if ct := r.Header.Get("Content-Type"); ct != requestType {
		http.Error(w, "content type must be "+requestType, http.StatusUnsupportedMediaType)
		return
	}
	var body io.Reader = r.Body
	switch enc := r.Header.Get("Content-Encoding"); enc {
	case "", "identity":
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			http.Error(w, "bad gzip request body", http.StatusBadRequest)
			return
		}
		defer zr.Close()
		body = zr
	default:
		http.Error(w, "unsupported content encoding "+enc, http.StatusUnsupportedMediaType)
		return
	}
	// The whole request is read before upload-pack starts: upload-pack
	// answers pkt-lines as it reads them, so a body found too large half
	// way would meet a response already under way. (A request is wants and
	// haves: kilobytes, megabytes for a long negotiation.)
	req, err := io.ReadAll(io.LimitReader(body, m.opts.MaxRequestBody+1))
	if err != nil {
		http.Error(w, "reading the request body: "+err.Error(), http.StatusBadRequest)
		return
	}
	if int64(len(req)) > m.opts.MaxRequestBody {
		http.Error(w, fmt.Sprintf("request body exceeds %d bytes", m.opts.MaxRequestBody), http.StatusRequestEntityTooLarge)
		return
	}
	env, _ := protocolEnv(r)
	w.Header().Set("Content-Type", resultType)
	noCache(w)
	fw := &flushWriter{w: w, rc: http.NewResponseController(w)}
	err = m.run(r.Context(), gitCmd{timeout: m.opts.ServeTimeout, env: env, stdin: bytes.NewReader(req), stdout: fw},
		"upload-pack", "--stateless-rpc", "--strict", dir)
	if err == nil {
		return
	}
	if errors.Is(err, context.Canceled) {
		m.log.Debug("git upload-pack canceled by client", "repository", name)
		return
	}
	switch {
	case !fw.wrote:
		m.log.Warn("git upload-pack failed", "repository", name, "error", err.Error())
		w.Header().Del("Content-Type")
		http.Error(w, "internal error", http.StatusInternalServerError)
	default:
		m.log.Warn("git upload-pack failed", "repository", name, "error", err.Error())
	}
}

// pktLine frames s as one git pkt-line.
func pktLine(s string) string { return fmt.Sprintf("%04x%s", len(s)+4, s) }

// flushWriter sends upload-pack's output as it comes (progress, then pack).
type flushWriter struct {
	w     io.Writer
	rc    *http.ResponseController
	wrote bool
}

func (f *flushWriter) Write(p []byte) (int, error) {
	f.wrote = true
	n, err := f.w.Write(p)
	if err == nil {
		f.rc.Flush()
	}
	return n, err
}
