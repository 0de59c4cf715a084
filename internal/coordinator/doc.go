// Package coordinator is the coordinator's HTTP API: the routes that clients
// (CLI, UI) use to submit and watch jobs, the routes executors use to claim
// work and report on it, the reaper that takes back attempts whose lease
// expired, and the in-process notifications that make both fast.
//
// # Trust boundary
//
// The coordinator is trusted; everything that talks to it is not, and every
// route but /healthz and /readyz demands a bearer token of the right kind:
//
//   - client tokens (configured) for the client routes and /metrics;
//   - executor tokens (configured) for claim and heartbeat, nothing else;
//   - job tokens ("alj_…", minted at claim, bound to one attempt, stored only
//     as a SHA-256 hash, dead when the attempt ends) for that attempt's log
//     and finish routes, nothing else.
//
// A missing or unknown token is 401; a valid token of the wrong kind or for
// another attempt is 403. Configured tokens are compared in constant time.
//
// # Wire format
//
// Routes, bodies and error codes are fixed in package api; docs/api.md
// documents them with examples. Errors map to HTTP statuses in one place
// (errors.go) and the api client maps them back to the same sentinels.
//
// # Speed
//
// A claim is a long poll. A waiting claimer registers for a wake-up before it
// asks the store, so a job submitted between the two is never missed, and a
// submit, retry or re-queue wakes one waiting claimer of that queue at once
// (notify.go). Log followers wake on appends the same way. Neither path sleeps
// or polls, except for a slow safety re-check.
package coordinator
