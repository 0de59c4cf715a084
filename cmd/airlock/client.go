package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/queue"
)

// clientFlags are shared by every client verb.
type clientFlags struct {
	url       string
	tokenFile string
	caFile    string
	json      bool
}

func (f *clientFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.url, "url", "", "coordinator URL (default: the one `airlock up` wrote to its data dir, else http://127.0.0.1:8420)")
	cmd.Flags().StringVar(&f.tokenFile, "token-file", "", "file holding the client token (the token itself goes in AIRLOCK_TOKEN; default: the one `airlock up` wrote)")
	cmd.Flags().StringVar(&f.caFile, "ca-file", "", "PEM file of the CA that signed the coordinator's certificate")
	cmd.Flags().BoolVar(&f.json, "json", false, "print JSON for scripts instead of human-readable output")
}

// client builds the API client: the URL from --url, else from `airlock up`'s
// data dir; the token from AIRLOCK_TOKEN, --token-file, or `airlock up`'s data dir.
func (f *clientFlags) client() (*api.Client, error) {
	url := f.url
	if url == "" {
		if b, err := os.ReadFile(filepath.Join(defaultDataDir(), "url")); err == nil {
			url = strings.TrimSpace(string(b))
		} else {
			url = "http://127.0.0.1:8420"
		}
	}
	token := os.Getenv("AIRLOCK_TOKEN")
	if token == "" {
		file := f.tokenFile
		if file == "" {
			file = filepath.Join(defaultDataDir(), "client-token")
		}
		t, err := readSecretFile(file)
		if err != nil {
			return nil, exitf(exitUsage, "no client token: set AIRLOCK_TOKEN or --token-file (%v)", err)
		}
		token = t
	}
	var opts []api.ClientOption
	if f.caFile != "" {
		tc, err := api.ClientTLSConfig(f.caFile)
		if err != nil {
			return nil, exitf(exitUsage, "--ca-file: %v", err)
		}
		opts = append(opts, api.WithTLSConfig(tc))
	}
	return api.NewClient(url, token, opts...), nil
}

// readSecretFile reads a token or secret from a file, refusing files that
// other users can read.
func readSecretFile(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%s is readable by other users (mode %v); chmod 600 it", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}

// apiExit turns an API error into the CLI's exit status and message.
func apiExit(what string, err error) error {
	if err == nil {
		return nil
	}
	var se *api.StatusError
	switch {
	case errors.Is(err, context.Canceled):
		return exitf(exitSystem, "%s: interrupted", what)
	case errors.Is(err, queue.ErrNotFound):
		return exitf(exitUsage, "%s: %v", what, err)
	case errors.As(err, &se) && se.Status < 500:
		msg := se.Error()
		if se.Err.Field != "" && !strings.Contains(msg, se.Err.Field) {
			msg = se.Err.Field + ": " + msg
		}
		return exitf(exitUsage, "%s: %s", what, msg)
	}
	return exitf(exitSystem, "%s: %v", what, err)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// ago renders a time relative to now for humans.
func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t).Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return t.Local().Format("2006-01-02 15:04")
}

// outcomeExit maps a finished job's state to the exit status.
func outcomeExit(j *api.Job) error {
	switch j.State {
	case "succeeded":
		return nil
	case "failed":
		return exitf(exitJobFailed, "job %d failed: %s", j.ID, reasonText(j))
	case "canceled":
		return exitf(exitJobCanceled, "job %d was canceled", j.ID)
	case "errored":
		return exitf(exitJobErrored, "job %d errored: %s", j.ID, reasonText(j))
	}
	return exitf(exitSystem, "job %d is still %s", j.ID, j.State)
}

func reasonText(j *api.Job) string {
	if j.Message != "" {
		return j.Message
	}
	return string(j.Reason)
}
