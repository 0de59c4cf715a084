package sandbox

import (
	"fmt"
	"regexp"
	"strings"
)

var namePattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// ValidName checks OpenParams.Name: a sandbox name must be usable as one path
// element, a container ID and a cgroup name — 1 to 128 of [A-Za-z0-9_.-], not
// starting with '.' or '-', without "..". Every runtime refuses other names.
func ValidName(name string) error {
	if !namePattern.MatchString(name) || strings.Contains(name, "..") {
		return fmt.Errorf("invalid sandbox name %q: want 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-', without '..'", name)
	}
	return nil
}
