// Package archtest holds no code: its tests enforce the architecture that
// ARCHITECTURE.md describes — which package may depend on which, and that
// every package says what it is in a package comment.
package archtest
