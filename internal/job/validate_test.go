package job

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const (
	sha1Commit   = "3f2a9c1d5e7b8a6f4c2d0e1b3a5c7d9e8f6a4b2c"
	sha256Commit = "3f2a9c1d5e7b8a6f4c2d0e1b3a5c7d9e8f6a4b2c3f2a9c1d5e7b8a6f4c2d0e1b"
)

// validSpec is a spec that passes Validate, with most fields set; each case
// of TestValidate breaks one thing.
func validSpec() Spec {
	s := fullSpec()
	s.Repository.URL = ""
	return s
}

// manyEnv returns n distinct, valid variables.
func manyEnv(n int) map[string]string {
	env := make(map[string]string, n)
	for i := range n {
		env[fmt.Sprintf("V%d", i)] = "x"
	}
	return env
}

func TestValidSpecIsValid(t *testing.T) {
	t.Parallel()
	s := validSpec()
	if err := s.Validate(DefaultLimits()); err != nil {
		t.Fatalf("validSpec().Validate: %v", err)
	}
	s.Normalize()
	if err := s.Validate(DefaultLimits()); err != nil {
		t.Fatalf("validSpec() normalized: Validate: %v", err)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	type fe = FieldError
	tests := []struct {
		name   string
		edit   func(s *Spec)
		want   []FieldError // nil: valid
		limits Limits
	}{
		// version
		{"version 0 reads as 1", func(s *Spec) { s.Version = 0 }, nil, Limits{}},
		{"version 2", func(s *Spec) { s.Version = 2 },
			[]fe{{"version", "2 is not supported; this coordinator understands version 1"}}, Limits{}},
		{"version -1", func(s *Spec) { s.Version = -1 },
			[]fe{{"version", "-1 is not supported; this coordinator understands version 1"}}, Limits{}},

		// queue
		{"queue unset", func(s *Spec) { s.Queue = "" }, nil, Limits{}},
		{"queue with dots, dashes, underscores", func(s *Spec) { s.Queue = "linux-x86_64.big" }, nil, Limits{}},
		{"queue of 64", func(s *Spec) { s.Queue = strings.Repeat("q", 64) }, nil, Limits{}},
		{"queue of 65", func(s *Spec) { s.Queue = strings.Repeat("q", 65) },
			[]fe{{"queue", `"` + strings.Repeat("q", 65) + `" is not a valid queue name (lowercase letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64)`}}, Limits{}},
		{"queue uppercase", func(s *Spec) { s.Queue = "Default" },
			[]fe{{"queue", `"Default" is not a valid queue name (lowercase letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64)`}}, Limits{}},
		{"queue starting with a dot", func(s *Spec) { s.Queue = ".hidden" },
			[]fe{{"queue", `".hidden" is not a valid queue name (lowercase letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64)`}}, Limits{}},

		// repository
		{"no repository", func(s *Spec) { s.Repository = nil }, nil, Limits{}},
		{"repository by url", func(s *Spec) { s.Repository.Name, s.Repository.URL = "", "https://github.com/acme/api.git" }, nil, Limits{}},
		{"public repository over https", func(s *Spec) { s.Repository.Name, s.Repository.URL = "", "https://github.com/acme/api.git" }, nil, Limits{}},
		{"public repository over ssh", func(s *Spec) { s.Repository.Name, s.Repository.URL = "", "ssh://git@github.com/acme/api.git" },
			[]fe{{"repository.url", `"ssh://git@github.com/acme/api.git": a public repository is fetched over https:// or http://; register other remotes on the coordinator (airlock repos add) and name them`}}, Limits{}},
		{"repository with a host", func(s *Spec) { s.Repository.Name = "gitlab.example.com/group/sub/api" }, nil, Limits{}},
		{"sha256 commit", func(s *Spec) { s.Repository.Commit = sha256Commit }, nil, Limits{}},
		{"name and url", func(s *Spec) { s.Repository.URL = "https://github.com/acme/api.git" },
			[]fe{{"repository", "set name or url, not both"}}, Limits{}},
		{"neither name nor url", func(s *Spec) { s.Repository.Name = "" },
			[]fe{{"repository", "name or url is required"}}, Limits{}},
		{"name escaping", func(s *Spec) { s.Repository.Name = "../etc" },
			[]fe{{"repository.name", `"../etc" is not a valid repository name (path segments of letters, digits, '.', '_' and '-', such as "acme/api")`}}, Limits{}},
		{"name with an empty segment", func(s *Spec) { s.Repository.Name = "acme//api" },
			[]fe{{"repository.name", `"acme//api" is not a valid repository name (path segments of letters, digits, '.', '_' and '-', such as "acme/api")`}}, Limits{}},
		{"name like a flag", func(s *Spec) { s.Repository.Name = "-u/api" },
			[]fe{{"repository.name", `"-u/api" is not a valid repository name (path segments of letters, digits, '.', '_' and '-', such as "acme/api")`}}, Limits{}},
		{"name too long", func(s *Spec) { s.Repository.Name = strings.Repeat("a", 256) },
			[]fe{{"repository.name", "256 characters, the limit is 255"}}, Limits{}},
		{"file url", func(s *Spec) { s.Repository.Name, s.Repository.URL = "", "file:///srv/git/api" },
			[]fe{{"repository.url", `"file:///srv/git/api" is not a valid repository URL (use https://, http://, ssh:// or git://)`}}, Limits{}},
		{"scp-like url", func(s *Spec) { s.Repository.Name, s.Repository.URL = "", "git@github.com:acme/api.git" },
			[]fe{{"repository.url", `"git@github.com:acme/api.git" is not a valid repository URL (use https://, http://, ssh:// or git://)`}}, Limits{}},
		{"url with a password", func(s *Spec) { s.Repository.Name, s.Repository.URL = "", "https://me:hunter2@github.com/acme/api" },
			[]fe{{"repository.url", "must not contain credentials; the coordinator holds them"}}, Limits{}},
		{"url with a token", func(s *Spec) { s.Repository.Name, s.Repository.URL = "", "https://ghp_abc@github.com/acme/api" },
			[]fe{{"repository.url", "must not contain credentials; the coordinator holds them"}}, Limits{}},
		{"url without a host", func(s *Spec) { s.Repository.Name, s.Repository.URL = "", "https:///acme/api" },
			[]fe{{"repository.url", `"https:///acme/api" has no host`}}, Limits{}},
		{"url with a space", func(s *Spec) { s.Repository.Name, s.Repository.URL = "", "https://github.com/acme/my api" },
			[]fe{{"repository.url", `"https://github.com/acme/my api" is not a valid URL (spaces and control characters are not allowed)`}}, Limits{}},
		{"no commit", func(s *Spec) { s.Repository.Commit = "" },
			[]fe{{"repository.commit", "is required (a full 40- or 64-character commit hash)"}}, Limits{}},
		{"short commit", func(s *Spec) { s.Repository.Commit = "3f2a9c1" },
			[]fe{{"repository.commit", `"3f2a9c1" is not a full commit hash (40 or 64 lowercase hex digits)`}}, Limits{}},
		{"uppercase commit", func(s *Spec) { s.Repository.Commit = strings.ToUpper(sha1Commit) },
			[]fe{{"repository.commit", `"3F2A9C1D5E7B8A6F4C2D0E1B3A5C7D9E8F6A4B2C" is not a full commit hash (40 or 64 lowercase hex digits)`}}, Limits{}},
		{"branch as commit", func(s *Spec) { s.Repository.Commit = "main" },
			[]fe{{"repository.commit", `"main" is not a full commit hash (40 or 64 lowercase hex digits)`}}, Limits{}},
		{"sparse entries", func(s *Spec) { s.Repository.Sparse = []string{"src/", "/abs", "../up", "", "a//b/", "docs"} }, []fe{
			{"repository.sparse[1]", "must be relative to the repository root"},
			{"repository.sparse[2]", "escapes the repository root"},
			{"repository.sparse[3]", "is empty"},
			{"repository.sparse[4]", `is not clean (write "a/b")`},
		}, Limits{}},
		{"too many sparse entries", func(s *Spec) { s.Repository.Sparse = make([]string, 1001); fillPaths(s.Repository.Sparse) },
			[]fe{{"repository.sparse", "1001 entries, the limit is 1000"}}, Limits{}},

		// files
		{"no files", func(s *Spec) { s.Files = nil }, nil, Limits{}},
		{"file paths", func(s *Spec) {
			s.Files = map[string]File{
				"/etc/passwd": {}, "../up": {}, "a/../../up": {}, "a//b": {}, "./a": {}, "d/": {},
				".": {}, "": {}, "nul\x00": {}, "x/" + strings.Repeat("y", 4096): {}, "ok/file.txt": {},
			}
		}, []fe{
			{`files[""]`, "is empty"},
			{`files["."]`, "names the workspace itself"},
			{`files["../up"]`, "escapes the workspace"},
			{`files["./a"]`, `is not clean (write "a")`},
			{`files["/etc/passwd"]`, "must be relative to the workspace"},
			{`files["a/../../up"]`, "escapes the workspace"},
			{`files["a//b"]`, `is not clean (write "a/b")`},
			{`files["d/"]`, `is not clean (write "d")`},
			{`files["nul\x00"]`, "must not contain a NUL byte"},
			{`files["x/` + strings.Repeat("y", 98) + `…"]`, "4098 characters, the limit is 4096"},
		}, Limits{}},
		{"file under a file", func(s *Spec) { s.Files = map[string]File{"a": {}, "a/b/c": {}} },
			[]fe{{`files["a/b/c"]`, `"a" is also a file`}}, Limits{}},
		{"too many files", func(s *Spec) { s.Files = manyFiles(1001, 0) },
			[]fe{{"files", "1001 files, the limit is 1000"}}, Limits{}},
		{"files too big together", func(s *Spec) { s.Files = manyFiles(3, 512<<10) },
			[]fe{{"files", "1.5 MiB in total, the limit is 1 MiB"}}, Limits{}},
		{"files a byte too big", func(s *Spec) { s.Files = map[string]File{"a": InlineFile(strings.Repeat("x", 1<<20+1))} },
			[]fe{{"files", "1048577 bytes in total, the limit is 1 MiB (1048576 bytes)"}}, Limits{}},
		{"artifacts when", func(s *Spec) { s.ArtifactsWhen = "sometimes" },
			[]fe{{"artifactsWhen", `"sometimes" is not one of "success", "failure" and "always"`}}, Limits{}},
		{"artifacts always", func(s *Spec) { s.ArtifactsWhen = ArtifactsAlways }, nil, Limits{}},
		{"uploaded files and modes", func(s *Spec) {
			s.Files = map[string]File{
				"bin/tool": {Blob: "sha256:" + strings.Repeat("ab", 32), Mode: 0o755},
				"both":     {Blob: "sha256:" + strings.Repeat("ab", 32), Content: "x"},
				"short":    {Blob: "sha256:abc"},
				"upper":    {Blob: "sha256:" + strings.Repeat("AB", 32)},
				"md5":      {Blob: "md5:" + strings.Repeat("ab", 16)},
				"setuid":   {Content: "x", Mode: 0o4755},
			}
		}, []fe{
			{`files.both`, "has both content and blob: give one"},
			{`files.md5.blob`, `"md5:abababababababababababababababab" is not a blob reference (sha256: and 64 lowercase hex digits)`},
			{`files.setuid.mode`, "04755: a job file's mode holds permission bits only (at most 0777)"},
			{`files.short.blob`, `"sha256:abc" is not a blob reference (sha256: and 64 lowercase hex digits)`},
			{`files.upper.blob`, `"sha256:` + strings.Repeat("AB", 32) + `" is not a blob reference (sha256: and 64 lowercase hex digits)`},
		}, Limits{}},

		// steps
		{"no steps", func(s *Spec) { s.Steps = nil }, []fe{{"steps", "at least one step is required"}}, Limits{}},
		{"100 steps", func(s *Spec) { s.Steps = manySteps(100) }, nil, Limits{}},
		{"101 steps", func(s *Spec) { s.Steps = manySteps(101) }, []fe{{"steps", "101 steps, the limit is 100"}}, Limits{}},
		{"step limit configured", func(s *Spec) { s.Steps = manySteps(3) }, []fe{{"steps", "3 steps, the limit is 2"}}, Limits{MaxSteps: 2}},
		{"step names", func(s *Spec) {
			s.Steps = []Step{{Name: "Build.v2_x-1", Run: "x"}, {Name: "my step", Run: "x"}, {Name: "-x", Run: "x"}, {Name: strings.Repeat("n", 65), Run: "x"}}
		}, []fe{
			{"steps[1].name", `"my step" is not a valid step name (letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64)`},
			{"steps[2].name", `"-x" is not a valid step name (letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64)`},
			{"steps[3].name", `"` + strings.Repeat("n", 65) + `" is not a valid step name (letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64)`},
		}, Limits{}},
		{"duplicate step names", func(s *Spec) {
			s.Steps = []Step{{Name: "build", Run: "x"}, {Name: "test", Run: "x"}, {Name: "build", Run: "x"}}
		},
			[]fe{{"steps[2].name", `"build" is already used by steps[0]`}}, Limits{}},
		{"name clashing with a default name", func(s *Spec) { s.Steps = []Step{{Name: "step-2", Run: "x"}, {Run: "x"}} },
			[]fe{{"steps[1].name", `"step-2" is already used by steps[0]`}}, Limits{}},
		{"images", func(s *Spec) {
			s.Steps = []Step{
				{Run: "x", Image: "alpine"},
				{Run: "x", Image: "registry.example.com:5000/team/go@sha256:" + strings.Repeat("a", 64)},
				{Run: "x", Image: "alpine latest"},
				{Run: "x", Image: "-v/:/host"},
				{Run: "x", Image: "alpïne"},
				{Run: "x", Image: strings.Repeat("i", 256)},
			}
		}, []fe{
			{"steps[2].image", `"alpine latest" is not a valid image reference (spaces, control and non-ASCII characters are not allowed)`},
			{"steps[3].image", `"-v/:/host" is not a valid image reference (it must not start with '-')`},
			{"steps[4].image", `"alpïne" is not a valid image reference (spaces, control and non-ASCII characters are not allowed)`},
			{"steps[5].image", "256 characters, the limit is 255"},
		}, Limits{}},
		{"users", func(s *Spec) {
			s.Steps = []Step{
				{Run: "x", User: "1000"},
				{Run: "x", User: "1000:1000"},
				{Run: "x", User: "builder:staff"},
				{Run: "x", User: "root:0"},
				{Run: "x", User: "Builder"},
				{Run: "x", User: "1000:"},
				{Run: "x", User: "a b"},
				{Run: "x", User: "-u0"},
			}
		}, []fe{
			{"steps[4].user", `"Builder" is not a user: want uid, uid:gid, name or name:group (names of lowercase letters, digits, '_', '.' and '-')`},
			{"steps[5].user", `"1000:" is not a user: want uid, uid:gid, name or name:group (names of lowercase letters, digits, '_', '.' and '-')`},
			{"steps[6].user", `"a b" is not a user: want uid, uid:gid, name or name:group (names of lowercase letters, digits, '_', '.' and '-')`},
			{"steps[7].user", `"-u0" is not a user: want uid, uid:gid, name or name:group (names of lowercase letters, digits, '_', '.' and '-')`},
		}, Limits{}},
		{"run", func(s *Spec) {
			s.Steps = []Step{{Run: ""}, {Run: " \n\t"}, {Run: strings.Repeat("x", 64<<10)}, {Run: strings.Repeat("x", 70<<10)},
				{Run: strings.Repeat("x", 64<<10+1)}, {Run: "echo \x00"}}
		}, []fe{
			{"steps[0].run", "is required"},
			{"steps[1].run", "is required"},
			{"steps[3].run", "70 KiB, the limit is 64 KiB"},
			{"steps[4].run", "65537 bytes, the limit is 64 KiB (65536 bytes)"},
			{"steps[5].run", "must not contain a NUL byte"},
		}, Limits{}},
		{"dir", func(s *Spec) {
			s.Steps = []Step{{Run: "x", Dir: "./src/"}, {Run: "x", Dir: "."}, {Run: "x", Dir: "/src"}, {Run: "x", Dir: "../x"},
				{Run: "x", Dir: "a/../../x"}, {Run: "x", Dir: "a\x00"}}
		}, []fe{
			{"steps[2].dir", `"/src" must be relative to the workspace`},
			{"steps[3].dir", `"../x" escapes the workspace`},
			{"steps[4].dir", `"a/../../x" escapes the workspace`},
			{"steps[5].dir", "must not contain a NUL byte"},
		}, Limits{}},
		{"step timeouts", func(s *Spec) {
			s.Timeout = 0
			s.Steps = []Step{{Run: "x", Timeout: Duration(24 * time.Hour)}, {Run: "x", Timeout: Duration(25 * time.Hour)}, {Run: "x", Timeout: -1}}
		}, []fe{
			{"steps[1].timeout", "25h, the limit is 24h"},
			{"steps[2].timeout", "-1ns is negative"},
		}, Limits{}},
		{"step timeout over the job's", func(s *Spec) {
			s.Timeout = Duration(30 * time.Minute)
			s.Steps = []Step{{Run: "x", Timeout: Duration(30 * time.Minute)}, {Run: "x", Timeout: Duration(90 * time.Minute)}}
		}, []fe{{"steps[1].timeout", "1h30m is longer than the job's timeout (30m)"}}, Limits{}},
		{"step env", func(s *Spec) {
			s.Steps[0].Env = map[string]string{"_ok": "", "ok_2": "", "1X": "", "A-B": "", "": "", "AIRLOCK_TOKEN": "", "NUL": "a\x00b"}
		}, []fe{
			{`steps[0].env[""]`, "invalid variable name (use letters, digits and '_', not starting with a digit)"},
			{`steps[0].env["1X"]`, "invalid variable name (use letters, digits and '_', not starting with a digit)"},
			{`steps[0].env["A-B"]`, "invalid variable name (use letters, digits and '_', not starting with a digit)"},
			{"steps[0].env.AIRLOCK_TOKEN", "names starting with AIRLOCK_ are reserved"},
			{"steps[0].env.NUL", "value must not contain a NUL byte"},
		}, Limits{}},
		{"256 step variables", func(s *Spec) { s.Steps[0].Env = manyEnv(256) }, nil, Limits{}},
		{"257 step variables", func(s *Spec) { s.Steps[0].Env = manyEnv(257) },
			[]fe{{"steps[0].env", "257 variables, the limit is 256"}}, Limits{}},

		// resources
		{"no resources", func(s *Spec) { s.Resources = Resources{} }, nil, Limits{}},
		{"fractional cpus", func(s *Spec) { s.Resources.CPUs = 0.25 }, nil, Limits{}},
		{"1024 cpus", func(s *Spec) { s.Resources.CPUs = 1024 }, nil, Limits{}},
		{"bad resources", func(s *Spec) { s.Resources = Resources{CPUs: -1, Memory: -1, Pids: -1, Disk: -2} }, []fe{
			{"resources.cpus", "-1 is negative"},
			{"resources.memory", "-1 is negative"},
			{"resources.pids", "-1 is negative"},
			{"resources.disk", "-2 is negative"},
		}, Limits{}},
		{"too many cpus", func(s *Spec) { s.Resources.CPUs = 1024.5 }, []fe{{"resources.cpus", "1024.5, the limit is 1024"}}, Limits{}},
		{"infinite cpus", func(s *Spec) { s.Resources.CPUs = math.Inf(1) }, []fe{{"resources.cpus", "+Inf, the limit is 1024"}}, Limits{}},
		{"NaN cpus", func(s *Spec) { s.Resources.CPUs = math.NaN() }, []fe{{"resources.cpus", "NaN is not a number"}}, Limits{}},

		// network
		{"network unset", func(s *Spec) { s.Network = "" }, nil, Limits{}},
		{"network internet", func(s *Spec) { s.Network = NetworkInternet }, nil, Limits{}},
		{"network unknown", func(s *Spec) { s.Network = "host" },
			[]fe{{"network", `"host" is not a network policy (use "internet" or "none")`}}, Limits{}},

		// timeout
		{"no timeout", func(s *Spec) { s.Timeout = 0 }, nil, Limits{}},
		{"24h", func(s *Spec) { s.Timeout = Duration(24 * time.Hour) }, nil, Limits{}},
		{"over 24h", func(s *Spec) { s.Timeout = Duration(24*time.Hour + time.Second) },
			[]fe{{"timeout", "24h0m1s, the limit is 24h"}}, Limits{}},
		{"timeout limit configured", func(s *Spec) { s.Timeout = Duration(30 * time.Hour) }, nil, Limits{MaxTimeout: Duration(48 * time.Hour)}},
		{"negative timeout", func(s *Spec) { s.Timeout = Duration(-time.Minute) }, []fe{{"timeout", "-1m is negative"}}, Limits{}},

		// maxAttempts
		{"attempts unset", func(s *Spec) { s.MaxAttempts = 0 }, nil, Limits{}},
		{"1 attempt", func(s *Spec) { s.MaxAttempts = 1 }, nil, Limits{}},
		{"10 attempts", func(s *Spec) { s.MaxAttempts = 10 }, nil, Limits{}},
		{"11 attempts", func(s *Spec) { s.MaxAttempts = 11 }, []fe{{"maxAttempts", "11 is out of range (1 to 10)"}}, Limits{}},
		{"negative attempts", func(s *Spec) { s.MaxAttempts = -1 }, []fe{{"maxAttempts", "-1 is out of range (1 to 10)"}}, Limits{}},

		// artifacts
		{"artifact patterns", func(s *Spec) {
			s.Artifacts = []string{"out/*.scip", "diff.patch", "logs/[a-z]?.txt", "/abs", "../up", "[a", "./out", "", "."}
		}, []fe{
			{"artifacts[3]", "must be relative to the workspace"},
			{"artifacts[4]", "escapes the workspace"},
			{"artifacts[5]", `"[a" is not a valid pattern (syntax error)`},
			{"artifacts[6]", `is not clean (write "out")`},
			{"artifacts[7]", "is empty"},
			{"artifacts[8]", "names the workspace itself"},
		}, Limits{}},
		{"101 artifacts", func(s *Spec) { s.Artifacts = make([]string, 101); fillPaths(s.Artifacts) },
			[]fe{{"artifacts", "101 patterns, the limit is 100"}}, Limits{}},

		// secrets
		{"secrets", func(s *Spec) {
			s.Steps = []Step{{Run: "x"}, {Run: "x", Env: map[string]string{"B": "1"}}}
			s.Env = map[string]string{"A": "1"}
			s.Secrets = []string{"NPM_TOKEN", "1X", "AIRLOCK_JOB_TOKEN", "NPM_TOKEN", "A", "B"}
		}, []fe{
			{"secrets[1]", `"1X" is not a valid variable name (use letters, digits and '_', not starting with a digit)`},
			{"secrets[2]", `"AIRLOCK_JOB_TOKEN": names starting with AIRLOCK_ are reserved`},
			{"secrets[3]", `"NPM_TOKEN" is already listed at secrets[0]`},
			{"secrets[4]", `"A" is also set in env`},
			{"secrets[5]", `"B" is also set in steps[1].env`},
		}, Limits{}},
		{"101 secrets", func(s *Spec) {
			s.Secrets = nil
			for i := range 101 {
				s.Secrets = append(s.Secrets, fmt.Sprintf("S%d", i))
			}
		}, []fe{{"secrets", "101 secrets, the limit is 100"}}, Limits{}},

		// priority
		{"priority -1000", func(s *Spec) { s.Priority = -1000 }, nil, Limits{}},
		{"priority 1000", func(s *Spec) { s.Priority = 1000 }, nil, Limits{}},
		{"priority 1001", func(s *Spec) { s.Priority = 1001 }, []fe{{"priority", "1001 is out of range (-1000 to 1000)"}}, Limits{}},
		{"priority -1001", func(s *Spec) { s.Priority = -1001 }, []fe{{"priority", "-1001 is out of range (-1000 to 1000)"}}, Limits{}},

		// job env
		{"job env", func(s *Spec) { s.Env = map[string]string{"AIRLOCK_X": "", "9": ""} }, []fe{
			{`env["9"]`, "invalid variable name (use letters, digits and '_', not starting with a digit)"},
			{"env.AIRLOCK_X", "names starting with AIRLOCK_ are reserved"},
		}, Limits{}},
		{"257 job variables", func(s *Spec) { s.Env = manyEnv(257) }, []fe{{"env", "257 variables, the limit is 256"}}, Limits{}},
		{"env limit configured", func(s *Spec) { s.Env = manyEnv(257) }, nil, Limits{MaxEnv: 300}},

		// Every problem at once, in the order of the Spec's fields.
		{"many problems", func(s *Spec) {
			s.Version = 3
			s.Queue = "GPU"
			s.Steps = []Step{{Name: "a b"}, {Run: "x", Timeout: Duration(48 * time.Hour)}}
			s.Network = "lan"
			s.Priority = 5000
		}, []fe{
			{"version", "3 is not supported; this coordinator understands version 1"},
			{"queue", `"GPU" is not a valid queue name (lowercase letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64)`},
			{"steps[0].name", `"a b" is not a valid step name (letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64)`},
			{"steps[0].run", "is required"},
			{"steps[1].timeout", "48h, the limit is 24h"},
			{"network", `"lan" is not a network policy (use "internet" or "none")`},
			{"priority", "5000 is out of range (-1000 to 1000)"},
		}, Limits{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := validSpec()
			tt.edit(&s)
			err := s.Validate(tt.limits)
			var got []FieldError
			if err != nil {
				got = problemsOf(t, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Validate problems (-want +got):\n%s", diff)
			}

			// Normalize changes nothing Validate cares about.
			n := s
			n.Steps = append([]Step(nil), s.Steps...)
			n.Normalize()
			if got, want := fmt.Sprint(n.Validate(tt.limits)), fmt.Sprint(err); got != want {
				t.Errorf("after Normalize, Validate = %s, want %s as before", got, want)
			}
		})
	}
}

// fillPaths fills ps with distinct valid relative paths.
func fillPaths(ps []string) {
	for i := range ps {
		ps[i] = fmt.Sprintf("p%d", i)
	}
}

func manyFiles(n, size int) map[string]File {
	files := make(map[string]File, n)
	for i := range n {
		files[fmt.Sprintf("f%d", i)] = InlineFile(strings.Repeat("x", size))
	}
	return files
}

func manySteps(n int) []Step {
	steps := make([]Step, n)
	for i := range steps {
		steps[i].Run = "true"
	}
	return steps
}

func TestValidateCapsProblems(t *testing.T) {
	t.Parallel()
	s := validSpec()
	s.Env = make(map[string]string)
	for i := range 150 {
		s.Env[fmt.Sprintf("%03d", i)] = ""
	}
	got := problemsOf(t, s.Validate(Limits{}))
	if len(got) != maxProblems+1 {
		t.Fatalf("got %d problems, want %d", len(got), maxProblems+1)
	}
	if want := (FieldError{Message: "50 more problems not shown"}); got[maxProblems] != want {
		t.Errorf("last problem = %v, want %v", got[maxProblems], want)
	}
}

func TestNormalize(t *testing.T) {
	t.Parallel()
	s := Spec{Steps: []Step{{Run: "a"}, {Name: "named", Run: "b"}, {Run: "c"}}}
	s.Normalize()
	want := Spec{
		Version:     SpecVersion,
		Queue:       "default",
		Network:     NetworkInternet,
		MaxAttempts: 3,
		Steps:       []Step{{Name: "step-1", Run: "a"}, {Name: "named", Run: "b"}, {Name: "step-3", Run: "c"}},
	}
	if diff := cmp.Diff(want, s); diff != "" {
		t.Errorf("Normalize (-want +got):\n%s", diff)
	}

	// What is set stays as it is.
	full := validSpec()
	got := validSpec()
	got.Normalize()
	if diff := cmp.Diff(full, got); diff != "" {
		t.Errorf("Normalize changed a spec with every default set (-want +got):\n%s", diff)
	}
}

func TestValidationErrorText(t *testing.T) {
	t.Parallel()
	err := error(&ValidationError{Problems: []FieldError{
		{Field: "steps[2].timeout", Message: `"10x" is not a duration`},
		{Message: "spec is 2.1 MiB, the limit is 1 MiB"},
	}})
	if got, want := err.Error(), `steps[2].timeout: "10x" is not a duration; spec is 2.1 MiB, the limit is 1 MiB`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	wrapped := fmt.Errorf("submitting job: %w", err)
	var ve *ValidationError
	if !errors.As(wrapped, &ve) || ve.Problems[0].Field != "steps[2].timeout" {
		t.Errorf("errors.As did not find the problems through a wrapped error")
	}
}

func TestLimitsZeroValueMeansDefaults(t *testing.T) {
	t.Parallel()
	if diff := cmp.Diff(DefaultLimits(), Limits{}.WithDefaults()); diff != "" {
		t.Errorf("Limits{} (-defaults +got):\n%s", diff)
	}
	custom := Limits{MaxSteps: 5, MaxSpecBytes: -1}.WithDefaults()
	if custom.MaxSteps != 5 || custom.MaxSpecBytes != DefaultLimits().MaxSpecBytes || custom.MaxEnv != 256 {
		t.Errorf("Limits{MaxSteps: 5, MaxSpecBytes: -1} = %+v, want MaxSteps 5 and defaults elsewhere", custom)
	}
}

func TestHumanSize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0 bytes"}, {1, "1 byte"}, {1023, "1023 bytes"}, {1024, "1 KiB"}, {1536, "1.5 KiB"},
		{64 << 10, "64 KiB"}, {1 << 20, "1 MiB"}, {2202010, "2.1 MiB"}, {4 << 30, "4 GiB"}, {-2048, "-2 KiB"},
	}
	for _, tt := range tests {
		if got := humanSize(tt.n); got != tt.want {
			t.Errorf("humanSize(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

func TestHumanDuration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"}, {500 * time.Millisecond, "500ms"}, {90 * time.Second, "1m30s"}, {10 * time.Minute, "10m"},
		{90 * time.Minute, "1h30m"}, {24 * time.Hour, "24h"}, {24*time.Hour + time.Second, "24h0m1s"},
	}
	for _, tt := range tests {
		if got := humanDuration(Duration(tt.d)); got != tt.want {
			t.Errorf("humanDuration(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestFieldPath(t *testing.T) {
	t.Parallel()
	tests := []struct{ parent, key, want string }{
		{"", "steps", "steps"},
		{"steps[0].env", "HOME", "steps[0].env.HOME"},
		{"files", "config/input.json", `files["config/input.json"]`},
		{"", "a b", `["a b"]`},
		{"env", "", `env[""]`},
		{"env", "quote\"d", `env["quote\"d"]`},
	}
	for _, tt := range tests {
		if got := FieldPath(tt.parent, tt.key); got != tt.want {
			t.Errorf("FieldPath(%q, %q) = %s, want %s", tt.parent, tt.key, got, tt.want)
		}
	}
}
