// Command airlock is the single binary of Airlock: the coordinator, the
// executor, `airlock up` (both on one machine for a first try) and the client
// verbs that submit, follow, list, cancel and retry jobs.
//
// Trust boundaries: the coordinator is trusted — it holds the queue, the logs
// and the job secrets, and never runs job code. An executor is semi-trusted —
// it dials out to the coordinator, holds only the secrets of the jobs it is
// running, and runs their steps in a sandbox. Client verbs hold a client token
// and can do nothing an executor does. Secrets and tokens are read from the
// environment or from files, never from flags, so they stay out of process
// listings and shell history.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:]))
}

// run executes the command line and returns the process exit status.
func run(ctx context.Context, args []string) int {
	cmd := newRootCommand()
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(os.Stderr, "airlock:", ee.msg)
		}
		return ee.code
	}
	fmt.Fprintln(os.Stderr, "airlock:", err)
	return exitUsage
}
