package specfile

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/airlock-run/airlock/internal/job"
)

// architectureSpec is testdata/architecture.yaml, the example of
// ARCHITECTURE.md §2.
func architectureSpec() job.Spec {
	shallow := true
	return job.Spec{
		Queue: "default",
		Repository: &job.Repository{
			Name:    "acme/api",
			Commit:  "3f2a9c1d5e7b8a6f4c2d0e1b3a5c7d9e8f6a4b2c",
			Shallow: &shallow,
			Sparse:  []string{"src/"},
		},
		Files: map[string]job.File{"config/input.json": job.InlineFile("…")},
		Steps: []job.Step{{
			Name:    "build",
			Image:   "registry.example.com/go:1.22",
			Run:     "go build ./...\n",
			Env:     map[string]string{"CGO_ENABLED": "0"},
			Dir:     "src",
			Timeout: job.Duration(10 * time.Minute),
		}},
		Resources:   job.Resources{CPUs: 2, Memory: 4 << 30, Pids: 2048, Disk: 10 << 30},
		Network:     job.NetworkInternet,
		Timeout:     job.Duration(30 * time.Minute),
		MaxAttempts: 3,
		Artifacts:   []string{"out/index.scip"},
		Secrets:     []string{"NPM_TOKEN"},
	}
}

func TestArchitectureExample(t *testing.T) {
	t.Parallel()
	got, err := Load("testdata/architecture.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if diff := cmp.Diff(architectureSpec(), got); diff != "" {
		t.Errorf("Load (-want +got):\n%s", diff)
	}
	valid, err := LoadValid("testdata/architecture.yaml", job.Limits{})
	if err != nil {
		t.Fatalf("LoadValid: %v", err)
	}
	if valid.Version != job.SpecVersion || valid.Steps[0].Name != "build" {
		t.Errorf("LoadValid = version %d, step %q; want it normalized", valid.Version, valid.Steps[0].Name)
	}
}

func fe(field, message string) job.FieldError { return job.FieldError{Field: field, Message: message} }

// problemsOf returns the problems listed by err, failing the test if err is
// not a *job.ValidationError.
func problemsOf(t *testing.T, err error) []job.FieldError {
	t.Helper()
	var ve *job.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %v (%T) is not a *job.ValidationError", err, err)
	}
	return ve.Problems
}

// TestYAMLAndJSONAgree: a problem is named by the same path, in the same
// words, whether the spec is YAML or JSON.
func TestYAMLAndJSONAgree(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		yaml string
		json string
		want []job.FieldError
	}{
		{"unknown field",
			"steps:\n  - run: make\n    imagee: alpine\n",
			`{"steps":[{"run":"make","imagee":"alpine"}]}`,
			[]job.FieldError{fe("steps[0].imagee", `unknown field (did you mean "image"?)`)}},
		{"unknown resource",
			"resources:\n  gpu: 1\n",
			`{"resources":{"gpu":1}}`,
			[]job.FieldError{fe("resources.gpu", "unknown field")}},
		{"bad duration",
			"steps:\n  - run: a\n  - run: b\n  - run: c\n    timeout: 10x\n",
			`{"steps":[{"run":"a"},{"run":"b"},{"run":"c","timeout":"10x"}]}`,
			[]job.FieldError{fe("steps[2].timeout", `"10x" is not a duration`)}},
		{"integer as string",
			"maxAttempts: \"3\"\n",
			`{"maxAttempts":"3"}`,
			[]job.FieldError{fe("maxAttempts", "must be an integer, not a string")}},
		{"unquoted env value",
			"env:\n  DEBUG: true\n",
			`{"env":{"DEBUG":true}}`,
			[]job.FieldError{fe("env.DEBUG", "must be a string, not a boolean (quote it)")}},
		{"file path key",
			"files:\n  config/input.json: 12\n",
			`{"files":{"config/input.json":12}}`,
			[]job.FieldError{fe(`files["config/input.json"]`, "must be a string (the content) or an object with content or blob, not a number")}},
		{"null step",
			"steps:\n  - run: x\n  -\n",
			`{"steps":[{"run":"x"},null]}`,
			[]job.FieldError{fe("steps[1]", "must be an object, not null")}},
		{"newer version",
			"version: 2\ncache: {key: x}\n",
			`{"version":2,"cache":{"key":"x"}}`,
			[]job.FieldError{fe("version", "2 is not supported; this coordinator understands version 1"), fe("cache", "unknown field")}},
		{"not an object",
			"- run: x\n",
			`[{"run":"x"}]`,
			[]job.FieldError{fe("", "the spec must be a JSON object, not an array")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, yerr := Parse([]byte(tt.yaml))
			if diff := cmp.Diff(tt.want, problemsOf(t, yerr)); diff != "" {
				t.Errorf("Parse(YAML) problems (-want +got):\n%s", diff)
			}
			_, jerr := job.Decode([]byte(tt.json))
			if diff := cmp.Diff(tt.want, problemsOf(t, jerr)); diff != "" {
				t.Errorf("job.Decode(JSON) problems (-want +got):\n%s", diff)
			}
			_, perr := Parse([]byte(tt.json))
			if diff := cmp.Diff(tt.want, problemsOf(t, perr)); diff != "" {
				t.Errorf("Parse(JSON) problems (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseAccepts(t *testing.T) {
	t.Parallel()
	minimal := job.Spec{Steps: []job.Step{{Run: "make"}}}
	longPath := strings.Repeat("d/", 700) + "f"
	tests := []struct {
		name string
		in   string
		want job.Spec
	}{
		{"minimal", "steps:\n  - run: make\n", minimal},
		{"document start marker", "---\nsteps:\n  - run: make\n", minimal},
		{"empty trailing document", "steps:\n  - run: make\n---\n", minimal},
		{"byte order mark", "\ufeffsteps:\n  - run: make\n", minimal},
		{"JSON", `{"steps":[{"run":"make"}]}`, minimal},
		{"JSON with a byte order mark", "\ufeff" + `{"steps":[{"run":"make"}]}`, minimal},
		{"YAML flow style", "{steps: [{run: make}]}", minimal},
		{"JSON key longer than YAML allows", `{"steps":[{"run":"make"}],"files":{"` + longPath + `":"x"}}`,
			job.Spec{Steps: minimal.Steps, Files: map[string]job.File{longPath: job.InlineFile("x")}}},
		{"block scalar", "steps:\n  - run: |\n      make\n      make test\n", job.Spec{Steps: []job.Step{{Run: "make\nmake test\n"}}}},
		{"merge keys", "steps:\n  - &s {run: make, env: {A: \"1\"}}\n  - {<<: *s, name: again}\n",
			job.Spec{Steps: []job.Step{{Run: "make", Env: map[string]string{"A": "1"}}, {Name: "again", Run: "make", Env: map[string]string{"A": "1"}}}}},
		{"timestamps stay strings", "env: {DAY: 2024-01-02}\n", job.Spec{Env: map[string]string{"DAY": "2024-01-02"}}},
		{"quoted boolean-looking keys", "env: {\"N\": \"no\", \"ON\": \"yes\"}\n", job.Spec{Env: map[string]string{"N": "no", "ON": "yes"}}},
		{"sizes and numbers", "resources: {cpus: 0.5, memory: 512MiB, disk: 1073741824}\npriority: -3\n",
			job.Spec{Resources: job.Resources{CPUs: 0.5, Memory: 512 << 20, Disk: 1 << 30}, Priority: -3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	t.Parallel()
	// A 1000-byte string repeated 1100 times through an alias: a 7 KiB file,
	// 1.1 MB of JSON.
	expansion := "x-big: &big \"" + strings.Repeat("x", 1000) + "\"\nsteps:\n" + strings.Repeat("  - {run: *big}\n", 1100)
	// Billion laughs.
	var laughs strings.Builder
	laughs.WriteString("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i < 9; i++ {
		fmt.Fprintf(&laughs, "a%d: &a%d [%s]\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*a%d, ", i-1), 10), ", "))
	}
	tests := []struct {
		name      string
		in        string
		want      []job.FieldError
		malformed bool
		tooLarge  bool
	}{
		{"syntax error", "queue: a\nsteps: [\n", []job.FieldError{fe("", "line 2: did not find expected node content")}, true, false},
		{"bad indentation", "steps:\n  - run: x\n  name: y\n", []job.FieldError{fe("", "line 2: did not find expected '-' indicator")}, true, false},
		{"tab indentation", "steps:\n\t- run: x\n", []job.FieldError{fe("", "line 2: found character that cannot start any token")}, true, false},
		{"duplicate keys", "queue: a\nqueue: b\nsteps:\n  - run: x\n    run: y\n", []job.FieldError{
			fe("", `line 2: key "queue" already set in map`),
			fe("", `line 5: key "run" already set in map`),
		}, true, false},
		{"two documents", "steps: [{run: a}]\n---\nsteps: [{run: b}]\n",
			[]job.FieldError{fe("", "the file holds more than one YAML document; write one spec per file")}, true, false},
		{"empty second document first", "---\n---\nsteps: [{run: b}]\n",
			[]job.FieldError{fe("", "the file holds more than one YAML document; write one spec per file")}, true, false},
		{"syntax error in a later document", "steps: [{run: a}]\n---\n[\n", []job.FieldError{fe("", "line 3: did not find expected node content")}, true, false},
		{"empty", "", []job.FieldError{fe("", "the spec is empty")}, true, false},
		{"comments only", "# nothing yet\n", []job.FieldError{fe("", "the spec is empty")}, true, false},
		{"null", "~\n", []job.FieldError{fe("", "the spec is empty")}, true, false},
		{"malformed JSON", `{"steps": [}`,
			[]job.FieldError{fe("steps", "invalid JSON at line 1, column 12: invalid character '}' looking for beginning of value")}, true, false},
		{"boolean-looking keys", "env:\n  N: \"x\"\n  on: \"y\"\n", []job.FieldError{
			fe("env", "key false is a boolean, not a string (YAML reads y, n, yes, no, on and off as booleans; quote the key)"),
			fe("env", "key true is a boolean, not a string (YAML reads y, n, yes, no, on and off as booleans; quote the key)"),
		}, false, false},
		{"numeric key and other problems", "files:\n  1: x\nsteps:\n  - run: make\n    timeout: 10x\n", []job.FieldError{
			fe("files", "key 1 is a number, not a string (quote the key)"),
			fe("steps[0].timeout", `"10x" is not a duration`),
		}, false, false},
		{"not-a-number", "resources: {cpus: .nan}\n", []job.FieldError{fe("resources.cpus", "NaN has no JSON equivalent")}, false, false},
		{"list as key", "? [a, b]\n: c\n", []job.FieldError{fe("", "a key must be a string")}, true, false},
		{"unquoted numeric commit", "repository: {name: a/b, commit: 1234567890123456789012345678901234567890}\n",
			[]job.FieldError{fe("repository.commit", "must be a string, not a number (quote it)")}, false, false},
		{"alias expansion over the limit", expansion,
			[]job.FieldError{fe("", "spec is 1.0 MiB, the limit is 1 MiB")}, false, true},
		{"billion laughs", laughs.String(), []job.FieldError{fe("", "document contains excessive aliasing")}, true, false},
		{"file over the limit", "steps: [{run: \"" + strings.Repeat("x", 1<<20) + "\"}]\n",
			[]job.FieldError{fe("", "spec is 1.0 MiB, the limit is 1 MiB")}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatalf("Parse = %+v, want an error", got)
			}
			if diff := cmp.Diff(tt.want, problemsOf(t, err), cmpopts.IgnoreFields(job.FieldError{}, func() []string {
				if tt.tooLarge {
					return []string{"Message"} // sizes vary; checked below
				}
				return nil
			}()...)); diff != "" {
				t.Errorf("Parse problems (-want +got):\n%s", diff)
			}
			if tt.tooLarge && !strings.Contains(err.Error(), ", the limit is 1 MiB") {
				t.Errorf("Parse error = %v, want it to state the limit", err)
			}
			if got := errors.Is(err, job.ErrMalformed); got != tt.malformed {
				t.Errorf("errors.Is(err, job.ErrMalformed) = %v, want %v", got, tt.malformed)
			}
			if got := errors.Is(err, job.ErrTooLarge); got != tt.tooLarge {
				t.Errorf("errors.Is(err, job.ErrTooLarge) = %v, want %v", got, tt.tooLarge)
			}
		})
	}
}

func TestAliasExpansionMessage(t *testing.T) {
	t.Parallel()
	in := "x-big: &big \"" + strings.Repeat("x", 1000) + "\"\nsteps:\n" + strings.Repeat("  - {run: *big}\n", 2000)
	_, err := Parse([]byte(in))
	if got, want := fmt.Sprint(err), "converting YAML to JSON: spec is 1.9 MiB, the limit is 1 MiB"; got != want {
		t.Errorf("Parse error = %q, want %q", got, want)
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	good := write("good.yaml", "steps:\n  - run: make\n")
	bad := write("bad.yaml", "steps:\n  - run: make\n    timeout: 10x\n")
	invalid := write("invalid.yaml", "queue: GPU\nsteps:\n  - run: make\n")
	big := write("big.json", `{"steps":[{"run":"`+strings.Repeat("x", 2<<20)+`"}]}`)

	t.Run("good", func(t *testing.T) {
		got, err := Load(good)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(job.Spec{Steps: []job.Step{{Run: "make"}}}, got); diff != "" {
			t.Errorf("Load (-want +got):\n%s", diff)
		}
	})
	t.Run("errors name the file", func(t *testing.T) {
		_, err := Load(bad)
		if got, want := fmt.Sprint(err), bad+`: steps[0].timeout: "10x" is not a duration`; got != want {
			t.Errorf("Load error = %q, want %q", got, want)
		}
		if got := problemsOf(t, err); len(got) != 1 || got[0].Field != "steps[0].timeout" {
			t.Errorf("problems = %v, want one about steps[0].timeout", got)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		_, err := Load(filepath.Join(dir, "nope.yaml"))
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Load error = %v, want os.ErrNotExist", err)
		}
	})
	t.Run("too large", func(t *testing.T) {
		_, err := Load(big)
		if got, want := fmt.Sprint(err), big+": spec is 2.0 MiB, the limit is 1 MiB"; got != want {
			t.Errorf("Load error = %q, want %q", got, want)
		}
		if !errors.Is(err, job.ErrTooLarge) {
			t.Errorf("errors.Is(err, job.ErrTooLarge) = false, want true")
		}
		if _, err := LoadValid(big, job.Limits{MaxSpecBytes: 4 << 20, MaxRunBytes: 4 << 20}); err != nil {
			t.Errorf("LoadValid with raised limits: %v", err)
		}
	})
	t.Run("LoadValid validates", func(t *testing.T) {
		_, err := LoadValid(invalid, job.Limits{})
		want := invalid + `: queue: "GPU" is not a valid queue name (lowercase letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64)`
		if got := fmt.Sprint(err); got != want {
			t.Errorf("LoadValid error = %q, want %q", got, want)
		}
		if _, err := Load(invalid); err != nil {
			t.Errorf("Load (no validation) = %v, want no error", err)
		}
	})
	t.Run("LoadValid normalizes", func(t *testing.T) {
		got, err := LoadValid(good, job.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		want := job.Spec{Version: 1, Queue: "default", Network: job.NetworkInternet, MaxAttempts: 3,
			Steps: []job.Step{{Name: "step-1", Run: "make"}}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("LoadValid (-want +got):\n%s", diff)
		}
	})
}

// FuzzParse: Parse never panics; what it refuses comes with problems; what
// it accepts and validates survives a round trip through JSON.
func FuzzParse(f *testing.F) {
	arch, err := os.ReadFile("testdata/architecture.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		string(arch),
		"steps:\n  - run: make\n",
		"steps:\n  - run: make\n    imagee: x\n    timeout: 10x\nresources: {gpu: 1}\n",
		"steps: [{run: a}]\n---\nsteps: [{run: b}]\n",
		"queue: a\nqueue: b\n",
		"env: {N: x, 1: y, DEBUG: true}\n",
		"x: &a [1, 2]\ny: *a\nsteps:\n  - &s {run: make}\n  - {<<: *s, name: again}\n",
		`{"steps":[{"run":"make"}],"files":{"a/b":"c"}}`,
		"{steps: [{run: make}]}",
		"resources: {cpus: .inf, memory: 4GiB}\ntimeout: 1h\n",
		"\ufeffsteps: []\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(data)
		if err != nil {
			var ve *job.ValidationError
			if !errors.As(err, &ve) || len(ve.Problems) == 0 {
				t.Fatalf("Parse error %v is not a *job.ValidationError with problems", err)
			}
			return
		}
		s.Normalize()
		if s.Validate(job.DefaultLimits()) != nil {
			return
		}
		js, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("json.Marshal: %v", err)
		}
		for name, decode := range map[string]func([]byte) (job.Spec, error){
			"job.Decode": job.Limits{MaxSpecBytes: 1 << 40}.Decode,
			"Parse":      func(b []byte) (job.Spec, error) { return parse(b, job.Limits{MaxSpecBytes: 1 << 40}) },
		} {
			got, err := decode(js)
			if err != nil {
				t.Fatalf("%s(json.Marshal(spec)): %v\njson: %s", name, err, js)
			}
			if diff := cmp.Diff(s, got, cmpopts.EquateEmpty()); diff != "" {
				t.Fatalf("%s round trip (-want +got):\n%s", name, diff)
			}
		}
	})
}

// TestReferenceExample: the example in docs/job-spec.md is a valid spec.
func TestReferenceExample(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../../docs/job-spec.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```yaml\n")
	example, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("docs/job-spec.md has no ```yaml example")
	}
	s, err := ParseValid([]byte(example), job.Limits{})
	if err != nil {
		t.Fatalf("the example in docs/job-spec.md: %v", err)
	}
	if got, want := s.Files["config/input.json"].Content, `{"mode": "ci"}`; got != want {
		t.Errorf("files[config/input.json] = %q, want %q", got, want)
	}
}
