// Command ociinit is the oci sandbox runtime's container init as a program
// of its own, for executors whose binary is dynamically linked (the init
// must run in any image, so it must be static):
//
//	CGO_ENABLED=0 go build -o /usr/local/lib/airlock/airlock-oci-init ./internal/sandbox/oci/ociinit
//
// and point the runtime's Options.Init at it. The init runs from the oci
// package's init function when the runtime starts this program as a
// container's PID 1; run any other way, it only says what it is for.
package main

import (
	"fmt"
	"os"

	_ "github.com/airlock-run/airlock/internal/sandbox/oci" // the init itself
)

func main() {
	fmt.Fprintln(os.Stderr, "ociinit: the oci sandbox runtime runs this program as a container's init; it does nothing on its own")
	os.Exit(2)
}
