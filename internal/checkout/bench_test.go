package checkout

import (
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

var bigRepo = flag.Bool("checkout.big", false,
	"benchmark with a generated repository of 20,000 commits and about 100 MB of history")

// BenchmarkCheckout measures a first checkout (empty cache) against a repeat
// one (warm cache) of the tip of a generated repository served over smart
// HTTP with a bearer token, shallow and full, and a plain git clone of the
// same URL for scale:
//
//	go test ./internal/checkout -run '^$' -bench Checkout -benchtime 5x
//	go test ./internal/checkout -run '^$' -bench Checkout -benchtime 3x -checkout.big -timeout 30m
func BenchmarkCheckout(b *testing.B) {
	opts := genOpts{Commits: 500, Files: 50, FileSize: 2048}
	if *bigRepo {
		opts = genOpts{Commits: 20000, Files: 1000, FileSize: 5200}
	}
	const token = "bench-token"
	s := newServer(b, token)
	u, commits := s.repo(b, "bench.git", opts)
	head := commits[len(commits)-1]
	size, err := dirSize(filepath.Join(s.root, "bench.git"))
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("repository: %d commits, %.1f MB on the server", len(commits), float64(size)/1e6)
	ctx := context.Background()
	scratch := b.TempDir()

	// fresh returns an empty directory, removing the previous one.
	var last string
	fresh := func(b *testing.B) string {
		if last != "" {
			os.RemoveAll(last)
		}
		d, err := os.MkdirTemp(scratch, "ws")
		if err != nil {
			b.Fatal(err)
		}
		last = d
		return d
	}
	for _, full := range []bool{false, true} {
		mode := "shallow"
		if full {
			mode = "full"
		}
		b.Run(mode+"/first", func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				d := fresh(b)
				c, _ := setup(b, Options{Root: filepath.Join(d, "cache")})
				dir := filepath.Join(d, "ws")
				if err := os.Mkdir(dir, 0o755); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if _, err := c.Checkout(ctx, Params{Dir: dir, URL: u, Token: token, Commit: head, Full: full}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				c.Close()
				b.StartTimer()
			}
		})
		b.Run(mode+"/repeat", func(b *testing.B) {
			c, _ := setup(b, Options{})
			if _, err := c.Checkout(ctx, Params{Dir: b.TempDir(), URL: u, Token: token, Commit: head, Full: full}); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				dir := fresh(b)
				b.StartTimer()
				res, err := c.Checkout(ctx, Params{Dir: dir, URL: u, Token: token, Commit: head, Full: full})
				if err != nil {
					b.Fatal(err)
				}
				if res.Fetched {
					b.Fatal("a repeat checkout fetched")
				}
			}
		})
		b.Run(mode+"/git-clone", func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				dir := filepath.Join(fresh(b), "clone")
				args := []string{"-c", "http.extraHeader=Authorization: Bearer " + token, "clone", "--quiet"}
				if !full {
					args = append(args, "--depth=1")
				}
				cmd := exec.Command("git", append(args, u, dir)...)
				cmd.Env = testGitEnv()
				b.StartTimer()
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("git clone: %v: %s", err, out)
				}
			}
		})
	}
}
