package main

// `airlock executor install`: install what the sandbox runtimes need on a
// Debian or Ubuntu host, then print the same report as `executor validate`.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/airlock-run/airlock/internal/sandbox/runtimes"
)

// installPackages are the Debian packages the isolating runtimes use: the OCI
// runtimes, the egress firewall and network namespaces, and the tools of the
// workspace disk limit.
var installPackages = []string{"runc", "crun", "nftables", "iproute2", "util-linux", "e2fsprogs", "ca-certificates"}

func newInstallCommand() *cobra.Command {
	var (
		dryRun   bool
		runscDir string
	)
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install what the sandbox runtimes need (Debian and Ubuntu), then validate",
		Long: `Install what the sandbox runtimes need on a Debian or Ubuntu host, as root:
runc and crun, nftables and iproute2 (egress policy), util-linux and e2fsprogs
(workspace disk limit), with apt-get; and gVisor's runsc, built from the Go
module proxy at the release Airlock is tested with, when a Go toolchain is
installed (Debian's own runsc package predates the network support the egress
policy needs). Then it prints the validate report. --dry-run prints the
commands without running them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			if !debianLike() {
				return exitf(exitUsage, "this host is not Debian or Ubuntu (/etc/os-release): install %s and gVisor's runsc with your package manager, then run `airlock executor validate`",
					strings.Join(installPackages, ", "))
			}
			if os.Geteuid() != 0 && !dryRun {
				return exitf(exitUsage, "installing packages needs root (or use --dry-run to see the commands)")
			}
			ctx := cmd.Context()
			run := func(env []string, name string, args ...string) error {
				fmt.Fprintf(out, "+ %s%s %s\n", strings.Join(append(env, ""), " "), name, strings.Join(args, " "))
				if dryRun {
					return nil
				}
				c := exec.CommandContext(ctx, name, args...)
				c.Env = append(os.Environ(), env...)
				c.Stdout, c.Stderr = out, cmd.ErrOrStderr()
				return c.Run()
			}
			missing := missingPackages(ctx, installPackages)
			if len(missing) == 0 {
				fmt.Fprintf(out, "packages: all installed (%s)\n", strings.Join(installPackages, ", "))
			} else {
				env := []string{"DEBIAN_FRONTEND=noninteractive"}
				if err := run(env, "apt-get", "update", "-q"); err != nil {
					return exitf(exitSystem, "apt-get update: %v", err)
				}
				if err := run(env, "apt-get", append([]string{"install", "-y", "-q", "--no-install-recommends"}, missing...)...); err != nil {
					return exitf(exitSystem, "apt-get install: %v", err)
				}
			}
			if err := installRunsc(ctx, out, run, runscDir); err != nil {
				fmt.Fprintf(out, "gvisor: %v\n", err)
			}
			if dryRun {
				return nil
			}
			fmt.Fprintln(out)
			return printReports(out, runtimes.Check(runtimes.Options{}), false)
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the commands without running them")
	cmd.Flags().StringVar(&runscDir, "runsc-dir", "/usr/local/lib/airlock", "where the built runsc is kept (linked as /usr/local/bin/runsc)")
	return cmd
}

// installRunsc builds the pinned runsc with the Go toolchain unless a
// runsc that the gvisor runtime accepts is already on PATH.
func installRunsc(ctx context.Context, out io.Writer, run func(env []string, name string, args ...string) error, dir string) error {
	for _, r := range runtimes.Check(runtimes.Options{}) {
		if r.Runtime == "gvisor" && r.Ready {
			fmt.Fprintln(out, "gvisor: runsc is installed and usable")
			return nil
		}
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("no usable runsc, and no Go toolchain to build one: install gVisor from https://gvisor.dev/docs/user_guide/install/ (release %s or newer)", runtimes.RunscRelease)
	}
	env := []string{"CGO_ENABLED=0", "GOBIN=" + dir}
	if err := run(env, goBin, "install", "-trimpath", "-ldflags=-s -w", "gvisor.dev/gvisor/runsc@"+runtimes.RunscModuleVersion); err != nil {
		return fmt.Errorf("building runsc: %w", err)
	}
	if err := run(nil, "ln", "-sfn", filepath.Join(dir, "runsc"), "/usr/local/bin/runsc"); err != nil {
		return fmt.Errorf("linking runsc: %w", err)
	}
	return nil
}

// debianLike reports whether /etc/os-release names Debian or a derivative.
func debianLike() bool {
	f, err := os.Open("/etc/os-release")
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), "=")
		if !ok || (k != "ID" && k != "ID_LIKE") {
			continue
		}
		if slices.ContainsFunc(strings.Fields(strings.Trim(v, `"`)), func(id string) bool { return id == "debian" || id == "ubuntu" }) {
			return true
		}
	}
	return false
}

// missingPackages lists the packages dpkg does not report installed.
func missingPackages(ctx context.Context, pkgs []string) []string {
	var missing []string
	for _, p := range pkgs {
		out, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f=${Status}", p).Output()
		if err != nil || !strings.Contains(string(out), "install ok installed") {
			missing = append(missing, p)
		}
	}
	return missing
}
