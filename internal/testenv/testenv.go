// Package testenv decides what a test does when a component it needs (a
// kernel feature, a runtime binary, a service) is missing: skip with the
// reason on a developer's machine, fail in CI. CI sets AIRLOCK_REQUIRE_ALL=1,
// so a missing component can never hide behind a skip there.
package testenv

import (
	"os"
	"testing"
)

// RequireAllEnv is the environment variable that turns missing components
// into failures.
const RequireAllEnv = "AIRLOCK_REQUIRE_ALL"

// RequireAll reports whether missing components must fail tests.
func RequireAll() bool {
	v := os.Getenv(RequireAllEnv)
	return v != "" && v != "0" && v != "false"
}

// Missing ends the test because component is unavailable: a skip normally, a
// failure when RequireAll.
func Missing(t testing.TB, component string, err error) {
	t.Helper()
	if RequireAll() {
		t.Fatalf("%s is required (%s is set) but unavailable: %v", component, RequireAllEnv, err)
	}
	t.Skipf("%s is unavailable: %v (set %s=1 to make this a failure)", component, err, RequireAllEnv)
}
