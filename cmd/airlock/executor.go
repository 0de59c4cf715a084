package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/checkout"
	"github.com/airlock-run/airlock/internal/egressproxy"
	"github.com/airlock-run/airlock/internal/executor"
	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/sandbox/runtimes"
)

// executorConfig is everything `airlock executor` needs; tests build it directly.
type executorConfig struct {
	URL          string
	TokenFile    string
	CAFile       string
	Name         string
	Queues       []string
	MaxJobs      int
	Runtime      string
	WorkDir      string
	DrainTimeout time.Duration
	KillGrace    time.Duration

	// Sandboxes.
	OCIRuntime     string
	Runsc          string
	GVisorPlatform string
	DefaultImage   string
	ImageCache     string
	ImageCacheSize byteSizeFlag
	RepoCacheSize  byteSizeFlag
	Mirrors        []string
	PlainHTTP      []string
	DockerConfig   string
	LocalImages    []string
	DNSResolvers   []string
	SandboxSubnet  string
	JobDefaults    resourceFlags
	JobMax         resourceFlags
}

// resourceFlags are one set of job resources as flags.
type resourceFlags struct {
	CPUs   float64
	Memory byteSizeFlag
	Pids   int
	Disk   byteSizeFlag
}

func (r resourceFlags) resources() job.Resources {
	return job.Resources{CPUs: r.CPUs, Memory: job.ByteSize(r.Memory), Pids: r.Pids, Disk: job.ByteSize(r.Disk)}
}

// byteSizeFlag is a job.ByteSize as a flag value ("512MiB", "4GiB").
type byteSizeFlag job.ByteSize

func (b *byteSizeFlag) String() string { return job.ByteSize(*b).String() }
func (b *byteSizeFlag) Type() string   { return "size" }
func (b *byteSizeFlag) Set(s string) error {
	v, err := job.ParseByteSize(s)
	if err != nil {
		return err
	}
	*b = byteSizeFlag(v)
	return nil
}

func (c *executorConfig) register(cmd *cobra.Command, withConnection bool) {
	f := cmd.Flags()
	if withConnection {
		f.StringVar(&c.URL, "url", "http://127.0.0.1:8420", "coordinator URL")
		f.StringVar(&c.TokenFile, "token-file", "", "file holding the executor token (or put the token in AIRLOCK_EXECUTOR_TOKEN)")
		f.StringVar(&c.CAFile, "ca-file", "", "PEM file of the CA that signed the coordinator's certificate")
		f.StringVar(&c.Name, "name", "", "executor name (default: hostname plus a random suffix, fresh at every start)")
		f.StringVar(&c.WorkDir, "work-dir", filepath.Join(defaultDataDir(), "work"), "directory for job workspaces")
	}
	f.StringSliceVar(&c.Queues, "queues", []string{"default"}, "queues to take jobs from (repeat or comma-separate)")
	f.IntVar(&c.MaxJobs, "max-jobs", 1, "most jobs run at once")
	f.StringVar(&c.Runtime, "runtime", runtimes.Auto, "sandbox runtime: auto picks the strongest available; shell is for development and isolates nothing")
	f.DurationVar(&c.DrainTimeout, "drain-timeout", 10*time.Minute, "on SIGTERM, how long running jobs may finish before they are cancelled")
	f.DurationVar(&c.KillGrace, "kill-grace", 5*time.Second, "when a step is cancelled or times out, how long its processes get between SIGTERM and SIGKILL")

	f.StringVar(&c.OCIRuntime, "oci-runtime", "", "the oci runtime's OCI runtime: crun, runc or a path (default: crun if installed, else runc)")
	f.StringVar(&c.Runsc, "runsc", "", "the gvisor runtime's runsc binary (default: runsc in PATH)")
	f.StringVar(&c.GVisorPlatform, "gvisor-platform", "systrap", "gVisor platform: systrap, ptrace or kvm")
	f.StringVar(&c.DefaultImage, "default-image", "", "image of steps that name none (default for `up`: a busybox image made from the host's busybox-static)")
	f.StringVar(&c.ImageCache, "image-cache", "", "image cache directory (default: WORK-DIR/images)")
	c.ImageCacheSize = byteSizeFlag(20 << 30)
	f.Var(&c.ImageCacheSize, "image-cache-size", "most disk the unpacked image layers may use; least recently used images are evicted")
	c.RepoCacheSize = byteSizeFlag(20 << 30)
	f.Var(&c.RepoCacheSize, "repo-cache-size", "most disk the repository cache may use; least recently used repositories are evicted")
	f.StringSliceVar(&c.Mirrors, "registry-mirror", nil, "REGISTRY=MIRROR: try MIRROR before REGISTRY (repeat)")
	f.StringSliceVar(&c.PlainHTTP, "insecure-registry", nil, "registry host spoken to over plain HTTP (repeat)")
	f.StringVar(&c.DockerConfig, "docker-config", "", "Docker config.json with default registry credentials (jobs may bring their own in the DOCKER_AUTH_CONFIG secret)")
	f.StringSliceVar(&c.LocalImages, "local-images", nil, "directory whose OCI layouts and docker-save tarballs jobs may name as oci-layout:PATH and docker-archive:PATH (repeat)")
	f.StringSliceVar(&c.DNSResolvers, "dns-resolver", nil, "the DNS server sandboxes may use (repeat; default: the host's non-loopback nameservers)")
	f.StringVar(&c.SandboxSubnet, "sandbox-subnet", "", "IPv4 pool of the sandboxes' links to the host (default 10.213.0.0/16); must not overlap the host's networks")
	c.JobDefaults = resourceFlags{CPUs: 1, Memory: byteSizeFlag(2 << 30), Pids: 1024, Disk: byteSizeFlag(10 << 30)}
	f.Float64Var(&c.JobDefaults.CPUs, "job-cpus", c.JobDefaults.CPUs, "CPUs of a job that asks for none")
	f.Var(&c.JobDefaults.Memory, "job-memory", "memory of a job that asks for none")
	f.IntVar(&c.JobDefaults.Pids, "job-pids", c.JobDefaults.Pids, "processes of a job that asks for none")
	f.Var(&c.JobDefaults.Disk, "job-disk", "workspace disk of a job that asks for none")
	f.Float64Var(&c.JobMax.CPUs, "max-job-cpus", 0, "most CPUs a job may ask for (default: this host's CPUs)")
	f.Var(&c.JobMax.Memory, "max-job-memory", "most memory a job may ask for (default: this host's memory)")
	f.IntVar(&c.JobMax.Pids, "max-job-pids", 32768, "most processes a job may ask for")
	f.Var(&c.JobMax.Disk, "max-job-disk", "most workspace disk a job may ask for (default: the work directory's file system size)")
}

// runtimeOptions turns the flags into the runtimes' options.
func (c *executorConfig) runtimeOptions(log *slog.Logger) (runtimes.Options, error) {
	o := runtimes.Options{
		WorkRoot: c.WorkDir, Logger: log, OCIBinary: c.OCIRuntime, Runsc: c.Runsc, GVisorPlatform: c.GVisorPlatform,
		Images: runtimes.ImageOptions{CacheDir: c.ImageCache, MaxBytes: int64(c.ImageCacheSize),
			PlainHTTP: c.PlainHTTP, DockerConfig: c.DockerConfig, LocalRoots: c.LocalImages},
		Network: runtimes.NetworkOptions{CoordinatorURL: c.URL},
	}
	for _, m := range c.Mirrors {
		reg, mirror, ok := strings.Cut(m, "=")
		if !ok || reg == "" || mirror == "" {
			return o, fmt.Errorf("--registry-mirror %q: want REGISTRY=MIRROR", m)
		}
		if o.Images.Mirrors == nil {
			o.Images.Mirrors = map[string][]string{}
		}
		o.Images.Mirrors[reg] = append(o.Images.Mirrors[reg], mirror)
	}
	for _, r := range c.DNSResolvers {
		a, err := netip.ParseAddr(r)
		if err != nil {
			return o, fmt.Errorf("--dns-resolver %q: not an IP address", r)
		}
		o.Network.Resolvers = append(o.Network.Resolvers, a)
	}
	if c.SandboxSubnet != "" {
		p, err := netip.ParsePrefix(c.SandboxSubnet)
		if err != nil {
			return o, fmt.Errorf("--sandbox-subnet %q: %v", c.SandboxSubnet, err)
		}
		o.Network.Subnet = p
	}
	return o, nil
}

// maxResources is what the executor offers a job: the flags, else this
// host's CPUs, memory and work directory file system.
func (c *executorConfig) maxResources() job.Resources {
	m := c.JobMax.resources()
	if m.CPUs == 0 {
		m.CPUs = float64(runtime.NumCPU())
	}
	if m.Memory == 0 {
		var si syscall.Sysinfo_t
		if syscall.Sysinfo(&si) == nil {
			m.Memory = job.ByteSize(int64(si.Totalram) * int64(si.Unit))
		}
	}
	if m.Disk == 0 {
		var st syscall.Statfs_t
		if syscall.Statfs(c.WorkDir, &st) == nil {
			m.Disk = job.ByteSize(int64(st.Blocks) * st.Bsize)
		}
	}
	return m
}

func newExecutorCommand() *cobra.Command {
	var cfg executorConfig
	cmd := &cobra.Command{
		Use:   "executor",
		Short: "Run an executor: claim jobs from the coordinator and run their steps in sandboxes",
		Long: `Run an executor. It dials out to the coordinator (no inbound ports), claims jobs
from its queues under a lease, runs each step in a fresh sandbox, streams logs
with secrets redacted, heartbeats, and reports each outcome.

Trust: the executor holds only the secrets of the jobs it is running; the job
steps are untrusted and see only their workspace and what their network policy
allows. The shell runtime isolates nothing and is for development only.

SIGTERM or Ctrl-C drains: no new claims, running jobs get --drain-timeout to
finish, then are cancelled and reported. A second signal cancels them at once.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log := newLogger()
			token := os.Getenv("AIRLOCK_EXECUTOR_TOKEN")
			if token == "" {
				if cfg.TokenFile == "" {
					return exitf(exitUsage, "no executor token: set AIRLOCK_EXECUTOR_TOKEN or --token-file")
				}
				t, err := readSecretFile(cfg.TokenFile)
				if err != nil {
					return exitf(exitUsage, "--token-file: %v", err)
				}
				token = t
			}
			var opts []api.ClientOption
			if cfg.CAFile != "" {
				tc, err := api.ClientTLSConfig(cfg.CAFile)
				if err != nil {
					return exitf(exitUsage, "--ca-file: %v", err)
				}
				opts = append(opts, api.WithTLSConfig(tc))
			}
			sigs := make(chan os.Signal, 2)
			signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
			defer signal.Stop(sigs)
			return runExecutor(cmd.Context(), log, cfg, api.NewClient(cfg.URL, token, opts...), sigs, nil)
		},
	}
	cfg.register(cmd, true)
	cmd.AddCommand(newValidateCommand(), newInstallCommand())
	return cmd
}

// runExecutor runs an executor until the first signal, then drains: a second
// signal, the drain timeout or the end of ctx cancels the running jobs.
// ready, if not nil, is called with the runtime's name once it is open.
func runExecutor(ctx context.Context, log *slog.Logger, cfg executorConfig, c *api.Client, sigs <-chan os.Signal, ready func(runtime string)) error {
	if cfg.MaxJobs < 1 {
		return exitf(exitUsage, "--max-jobs %d: must be at least 1", cfg.MaxJobs)
	}
	// Mode 0711: containers reach their mounts below it from a user
	// namespace; nothing in it can be listed by others.
	if err := os.MkdirAll(cfg.WorkDir, 0o711); err != nil {
		return exitf(exitSystem, "creating --work-dir %s: %v", cfg.WorkDir, err)
	}
	if err := os.Chmod(cfg.WorkDir, 0o711); err != nil {
		return exitf(exitSystem, "--work-dir %s: %v", cfg.WorkDir, err)
	}
	ropts, err := cfg.runtimeOptions(log)
	if err != nil {
		return exitf(exitUsage, "%v", err)
	}
	rt, err := runtimes.Open(cfg.Runtime, ropts)
	if err != nil {
		return exitf(exitUsage, "--runtime %s: %v", cfg.Runtime, err)
	}
	defer rt.Close()
	repos, err := checkout.New(checkout.Options{Root: filepath.Join(cfg.WorkDir, "repos"), MaxBytes: int64(cfg.RepoCacheSize),
		CAFile: cfg.CAFile, Logger: log})
	if err != nil {
		return exitf(exitUsage, "repository cache: %v", err)
	}
	defer repos.Close()
	deny, resolvers, err := ropts.FetchPolicy()
	if err != nil {
		return exitf(exitUsage, "%v", err)
	}
	fetchProxy, err := egressproxy.Start(egressproxy.Options{Deny: deny, Resolvers: resolvers, Logger: log})
	if err != nil {
		return exitf(exitSystem, "%v", err)
	}
	defer fetchProxy.Close()
	xcfg := executor.Config{
		PublicFetch:      fetchProxy,
		Repositories:     repos,
		CoordinatorURL:   cfg.URL,
		Name:             cfg.Name,
		Version:          buildVersion(),
		Queues:           cfg.Queues,
		MaxJobs:          cfg.MaxJobs,
		Runtime:          rt,
		DefaultImage:     cfg.DefaultImage,
		DefaultResources: cfg.JobDefaults.resources(),
		MaxResources:     cfg.maxResources(),
		DrainTimeout:     cfg.DrainTimeout,
		KillGrace:        cfg.KillGrace,
		Logger:           log,
	}
	if rt.Images != nil {
		xcfg.Images = rt.Images
	}
	clampDefaults(log, &xcfg.DefaultResources, xcfg.MaxResources)
	log.Info("sandbox runtime ready", "runtime", rt.Name(), "default_resources", xcfg.DefaultResources, "max_resources", xcfg.MaxResources)
	ex, err := executor.New(xcfg, c)
	if err != nil {
		return exitf(exitUsage, "%v", err)
	}
	if ready != nil {
		ready(rt.Name())
	}
	if err := ex.Run(ctx, sigs); err != nil {
		log.Warn("executor stopped with jobs cancelled", "error", err)
	}
	log.Info("executor stopped")
	return nil
}

// clampDefaults lowers default job resources that exceed what the host
// offers (a small machine, a small work file system), saying so.
func clampDefaults(log *slog.Logger, d *job.Resources, m job.Resources) {
	if m.CPUs > 0 && d.CPUs > m.CPUs {
		log.Warn("default job CPUs lowered to what this host offers", "from", d.CPUs, "to", m.CPUs)
		d.CPUs = m.CPUs
	}
	if m.Memory > 0 && d.Memory > m.Memory {
		log.Warn("default job memory lowered to what this host offers", "from", d.Memory, "to", m.Memory)
		d.Memory = m.Memory
	}
	if m.Pids > 0 && d.Pids > m.Pids {
		d.Pids = m.Pids
	}
	if m.Disk > 0 && d.Disk > m.Disk {
		log.Warn("default job disk lowered to what the work directory's file system holds", "from", d.Disk, "to", m.Disk)
		d.Disk = m.Disk
	}
}
