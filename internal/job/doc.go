// Package job defines what a job is: the spec a user submits (YAML for people,
// JSON on the wire, versioned from day one), its validation, the states a job
// moves through and the closed set of reasons an attempt can end with.
//
// It imports only the standard library, so every other package — the CLI, the
// coordinator, the executor — can share it without pulling anything else in.
// A test in the repository root enforces that.
package job
