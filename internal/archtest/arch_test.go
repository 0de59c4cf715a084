package archtest

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/airlock-run/airlock"

type pkg struct {
	ImportPath string
	Doc        string
	Imports    []string
	Deps       []string
	Standard   bool
	GoFiles    []string
}

// packages lists every package of the module, with its transitive deps.
func packages(t *testing.T) map[string]pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", module+"/...")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string]pkg{}
	dec := json.NewDecoder(out)
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		pkgs[p.ImportPath] = p
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("go list: %v", err)
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found no packages")
	}
	return pkgs
}

func isStd(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".")
}

func TestJobPackageUsesOnlyTheStandardLibrary(t *testing.T) {
	p, ok := packages(t)[module+"/internal/job"]
	if !ok {
		t.Fatal("internal/job not found")
	}
	for _, d := range p.Deps {
		if !isStd(d) {
			t.Errorf("internal/job depends on %s; it must use only the standard library", d)
		}
	}
}

// forbidden maps a package prefix to imports (prefixes) it must never reach,
// directly or transitively.
var forbidden = []struct {
	from, to, why string
}{
	{"internal/executor", "internal/queue/sqlite", "the executor talks to the coordinator over HTTP, never to the store"},
	{"internal/executor", "internal/queue/postgres", "the executor talks to the coordinator over HTTP, never to the store"},
	{"internal/executor", "internal/coordinator", "the executor runs on another host than the coordinator"},
	{"internal/executor", "internal/sandbox/shell", "the executor knows runtimes only through the sandbox seam"},
	{"internal/coordinator", "internal/sandbox", "the coordinator never runs job code"},
	{"internal/coordinator", "internal/executor", "the coordinator never runs job code"},
	{"internal/api", "internal/sandbox", "wire types and the client carry no runtime"},
	{"internal/api", "internal/queue/sqlite", "wire types and the client carry no store"},
	{"internal/joblog", "internal/api", "log handling is transport-agnostic"},
	{"internal/sandbox/shell", "internal/executor", "runtimes do not know the executor"},
	{"internal/queue/sqlite", "internal/api", "stores do not know the wire"},
}

func TestPackagesRespectTrustBoundaries(t *testing.T) {
	pkgs := packages(t)
	for _, rule := range forbidden {
		for path, p := range pkgs {
			if !strings.HasPrefix(path, module+"/"+rule.from) {
				continue
			}
			for _, d := range p.Deps {
				if strings.HasPrefix(d, module+"/"+rule.to) {
					t.Errorf("%s depends on %s: %s", path, d, rule.why)
				}
			}
		}
	}
}

func TestCLIReachesRuntimesOnlyThroughTheRegistry(t *testing.T) {
	p, ok := packages(t)[module+"/cmd/airlock"]
	if !ok {
		t.Fatal("cmd/airlock not found")
	}
	for _, imp := range p.Imports {
		if strings.HasPrefix(imp, module+"/internal/sandbox/") && imp != module+"/internal/sandbox/runtimes" {
			t.Errorf("cmd/airlock imports %s directly; go through internal/sandbox/runtimes", imp)
		}
	}
}

func TestEveryPackageHasAPackageComment(t *testing.T) {
	for path, p := range packages(t) {
		if len(p.GoFiles) > 0 && strings.TrimSpace(p.Doc) == "" {
			t.Errorf("%s has no package comment: say what it is for", path)
		}
	}
}
