// Package e2e holds Airlock's end-to-end tests: the real airlock binary, run
// as separate coordinator and executor processes on loopback, driven through
// the CLI and the HTTP API exactly as users drive them.
package e2e
