package main

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// defaultDataDir is where `airlock up` and a coordinator without --data-dir
// keep their database, tokens and workspaces: /var/lib/airlock for root
// (the sandboxes' directories must be reachable from their user namespace,
// which a home directory of mode 0700 is not), else $XDG_DATA_HOME/airlock,
// else ~/.local/share/airlock.
func defaultDataDir() string {
	if d := os.Getenv("AIRLOCK_DATA_DIR"); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/var/lib/airlock"
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "airlock")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "airlock")
	}
	return filepath.Join(home, ".local", "share", "airlock")
}

// newToken returns a fresh random token with a kind prefix ("alc_" client,
// "ale_" executor) so a leaked token says what it is.
func newToken(prefix string) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// ensureToken reads the token in dir/name, creating it (mode 0600) if absent.
func ensureToken(dir, name, prefix string) (string, error) {
	path := filepath.Join(dir, name)
	if t, err := readSecretFile(path); err == nil {
		return t, nil
	} else if !os.IsNotExist(err) {
		return "", err
	}
	t := newToken(prefix)
	if err := os.WriteFile(path, []byte(t+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing %s: %w", path, err)
	}
	return t, nil
}

// readTokenList reads tokens from an env var (comma-separated) and/or a file
// (one per line, # comments), refusing a file other users can read.
func readTokenList(envVar, file string) ([]string, error) {
	var out []string
	for _, t := range strings.Split(os.Getenv(envVar), ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	if file == "" {
		return out, nil
	}
	lines, err := readSecretLines(file)
	if err != nil {
		return nil, err
	}
	return append(out, lines...), nil
}

func readSecretLines(file string) ([]string, error) {
	st, err := os.Stat(file)
	if err != nil {
		return nil, err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s is readable by other users (mode %v); chmod 600 it", file, st.Mode().Perm())
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, line)
	}
	return out, sc.Err()
}

// readSecrets collects job secrets: NAME=value lines from the secrets file,
// and every AIRLOCK_SECRET_<NAME> environment variable.
func readSecrets(file string) (map[string]string, error) {
	secrets := map[string]string{}
	if file != "" {
		lines, err := readSecretLines(file)
		if err != nil {
			return nil, err
		}
		for i, line := range lines {
			name, value, ok := strings.Cut(line, "=")
			if !ok || strings.TrimSpace(name) == "" {
				return nil, fmt.Errorf("%s: entry %d is not NAME=value", file, i+1)
			}
			secrets[strings.TrimSpace(name)] = value
		}
	}
	for _, kv := range os.Environ() {
		if name, value, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(name, "AIRLOCK_SECRET_") {
			if n := strings.TrimPrefix(name, "AIRLOCK_SECRET_"); n != "" {
				secrets[n] = value
			}
		}
	}
	return secrets, nil
}
