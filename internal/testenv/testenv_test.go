package testenv

import "testing"

func TestRequireAllReadsTheEnvironment(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  bool
	}{{"", false}, {"0", false}, {"false", false}, {"1", true}, {"yes", true}} {
		t.Setenv(RequireAllEnv, tc.value)
		if got := RequireAll(); got != tc.want {
			t.Errorf("%s=%q: RequireAll() = %v, want %v", RequireAllEnv, tc.value, got, tc.want)
		}
	}
}
