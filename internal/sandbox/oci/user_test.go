package oci

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestStepUserRoundTripsThroughTheInitsArgument(t *testing.T) {
	for _, u := range []stepUser{
		{},
		{uid: 1000, gid: 1000},
		{uid: 1000, gid: 100, groups: []uint32{27, 65534}},
	} {
		got, err := parseStepUser(u.String())
		if err != nil {
			t.Fatalf("parseStepUser(%q): %v", u.String(), err)
		}
		if diff := cmp.Diff(u, got, cmp.AllowUnexported(stepUser{}), cmp.Comparer(func(a, b []uint32) bool {
			return len(a) == len(b) && (len(a) == 0 || cmp.Equal(a, b))
		})); diff != "" {
			t.Errorf("round trip of %q (-want +got):\n%s", u.String(), diff)
		}
	}
	for _, bad := range []string{"", "1000", "a:b", "1:2:x", "1:2:3:4"} {
		if _, err := parseStepUser(bad); err == nil {
			t.Errorf("parseStepUser(%q) succeeded, want an error", bad)
		}
	}
}
