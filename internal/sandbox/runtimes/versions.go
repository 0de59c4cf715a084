package runtimes

// The gVisor release Airlock is tested with, as the Go module version `airlock
// executor install` and the scripts build runsc from (Debian 12's runsc, from
// 2022, cannot give a sandbox a network on current kernels: gvisor#10704).
const (
	RunscModuleVersion = "v0.0.0-20260905035102-160fafc42237"
	RunscRelease       = "2026-09-05"
)
