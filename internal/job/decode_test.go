package job

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// fullSpec sets every field of Spec, so that a test decoding it covers every
// type the decoder must handle. TestFullSpecSetsEveryField keeps it honest
// when a field is added.
func fullSpec() Spec {
	shallow := true
	return Spec{
		Version: 1,
		Queue:   "gpu.large",
		Repository: &Repository{
			Name:      "acme/api",
			URL:       "https://example.com/acme/api.git", // Validate refuses both; Decode does not care
			Commit:    "3f2a9c1d5e7b8a6f4c2d0e1b3a5c7d9e8f6a4b2c",
			FetchTags: true,
			Shallow:   &shallow,
			Sparse:    []string{"src/", "docs"},
		},
		Files: map[string]File{"config/input.json": InlineFile(`{"k": 1}`)},
		Steps: []Step{{
			Name:    "build",
			Image:   "registry.example.com/go:1.22",
			User:    "builder:staff",
			Run:     "go build ./...\n",
			Env:     map[string]string{"CGO_ENABLED": "0"},
			Dir:     "src",
			Timeout: Duration(10 * time.Minute),
		}},
		Resources:     Resources{CPUs: 2.5, Memory: 4 << 30, Pids: 2048, Disk: 10 << 30},
		Network:       NetworkNone,
		Timeout:       Duration(30 * time.Minute),
		MaxAttempts:   5,
		Artifacts:     []string{"out/*.scip"},
		ArtifactsWhen: ArtifactsAlways,
		Secrets:       []string{"NPM_TOKEN"},
		Priority:      -7,
		Env:           map[string]string{"GOFLAGS": "-mod=mod"},
	}
}

const fullSpecJSON = `{
  "version": 1,
  "queue": "gpu.large",
  "repository": {
    "name": "acme/api",
    "url": "https://example.com/acme/api.git",
    "commit": "3f2a9c1d5e7b8a6f4c2d0e1b3a5c7d9e8f6a4b2c",
    "fetchTags": true,
    "shallow": true,
    "sparse": ["src/", "docs"]
  },
  "files": {"config/input.json": "{\"k\": 1}"},
  "steps": [
    {
      "name": "build",
      "image": "registry.example.com/go:1.22",
      "user": "builder:staff",
      "run": "go build ./...\n",
      "env": {"CGO_ENABLED": "0"},
      "dir": "src",
      "timeout": "10m"
    }
  ],
  "resources": {"cpus": 2.5, "memory": "4GiB", "pids": 2048, "disk": 10737418240},
  "network": "none",
  "timeout": "30m",
  "maxAttempts": 5,
  "artifacts": ["out/*.scip"],
  "artifactsWhen": "always",
  "secrets": ["NPM_TOKEN"],
  "priority": -7,
  "env": {"GOFLAGS": "-mod=mod"}
}`

func TestFullSpecSetsEveryField(t *testing.T) {
	t.Parallel()
	var check func(v reflect.Value, path string)
	check = func(v reflect.Value, path string) {
		switch v.Kind() {
		case reflect.Pointer:
			if v.IsNil() {
				t.Errorf("fullSpec leaves %s unset; set it so the decoder tests cover it", path)
				return
			}
			check(v.Elem(), path)
		case reflect.Struct:
			for i := range v.NumField() {
				check(v.Field(i), path+"."+v.Type().Field(i).Name)
			}
		case reflect.Slice:
			if v.Len() == 0 {
				t.Errorf("fullSpec leaves %s empty; set it so the decoder tests cover it", path)
				return
			}
			check(v.Index(0), path+"[0]")
		default:
			if v.IsZero() {
				t.Errorf("fullSpec leaves %s zero; set it so the decoder tests cover it", path)
			}
		}
	}
	check(reflect.ValueOf(fullSpec()), "Spec")
}

func TestDecodeFullSpec(t *testing.T) {
	t.Parallel()
	got, err := Decode([]byte(fullSpecJSON))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if diff := cmp.Diff(fullSpec(), got); diff != "" {
		t.Errorf("Decode (-want +got):\n%s", diff)
	}
}

// TestRoundTrip: a Spec written with encoding/json (durations and sizes as
// strings) reads back equal.
func TestRoundTrip(t *testing.T) {
	t.Parallel()
	want := fullSpec()
	data, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{`"timeout":"10m0s"`, `"timeout":"30m0s"`, `"memory":"4GiB"`, `"disk":"10GiB"`} {
		if !strings.Contains(string(data), s) {
			t.Errorf("json.Marshal(fullSpec()) = %s, want it to contain %s", data, s)
		}
	}
	got, err := Decode(data)
	if err != nil {
		t.Fatalf("Decode(json.Marshal(spec)): %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func TestDecodeAccepts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want Spec
	}{
		{"minimal", `{"steps":[{"run":"make"}]}`, Spec{Steps: []Step{{Run: "make"}}}},
		{"null means absent", `{"queue":null,"repository":null,"steps":[{"run":"x","env":null,"timeout":null}],"resources":{"memory":null}}`,
			Spec{Steps: []Step{{Run: "x"}}}},
		{"size as a bare number of bytes", `{"steps":[],"resources":{"memory":1048576}}`, Spec{Steps: []Step{}, Resources: Resources{Memory: 1 << 20}}},
		{"fractional size", `{"resources":{"memory":"1.5GiB"}}`, Spec{Resources: Resources{Memory: 3 << 29}}},
		{"duration with spaces", `{"timeout":" 1h30m "}`, Spec{Timeout: Duration(90 * time.Minute)}},
		{"shallow false is kept", `{"repository":{"commit":"","shallow":false}}`, Spec{Repository: &Repository{Shallow: new(bool)}}},
		{"empty collections", `{"files":{},"artifacts":[]}`, Spec{Files: map[string]File{}, Artifacts: []string{}}},
		{"unicode and escapes", `{"steps":[{"run":"echo \u00e9\t\"q\""}]}`, Spec{Steps: []Step{{Run: "echo é\t\"q\""}}}},
		{"files long and short", `{"files":{"a":"x","run.sh":{"content":"#!/bin/sh","mode":"0755","mtime":"2026-01-02T03:04:05Z"},` +
			`"bin/tool":{"blob":"sha256:` + strings.Repeat("0f", 32) + `","mode":493},"r":{"mode":"444"}}}`,
			Spec{Files: map[string]File{
				"a":        InlineFile("x"),
				"run.sh":   {Content: "#!/bin/sh", Mode: 0o755, ModTime: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
				"bin/tool": {Blob: "sha256:" + strings.Repeat("0f", 32), Mode: 0o755},
				"r":        {Mode: 0o444},
			}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Decode([]byte(tt.in))
			if err != nil {
				t.Fatalf("Decode(%s): %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Decode(%s) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

// problemsOf returns the problems listed by err, failing the test if err is
// not a *ValidationError.
func problemsOf(t *testing.T, err error) []FieldError {
	t.Helper()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %v (%T) is not a *ValidationError", err, err)
	}
	return ve.Problems
}

func TestDecodeRefuses(t *testing.T) {
	t.Parallel()
	type fe = FieldError
	tests := []struct {
		name      string
		in        string
		want      []FieldError
		malformed bool
	}{
		// Unknown fields, named by their full path.
		{"unknown step field", `{"steps":[{"run":"x","imagee":"alpine"}]}`,
			[]fe{{"steps[0].imagee", `unknown field (did you mean "image"?)`}}, false},
		{"unknown resource", `{"resources":{"gpu":1}}`, []fe{{"resources.gpu", "unknown field"}}, false},
		{"unknown top-level field", `{"steps":[],"labels":{}}`, []fe{{"labels", "unknown field"}}, false},
		{"keys are case-sensitive", `{"Steps":[],"maxattempts":2}`, []fe{
			{"Steps", `unknown field (did you mean "steps"?)`},
			{"maxattempts", `unknown field (did you mean "maxAttempts"?)`},
		}, false},
		{"odd keys are quoted", `{"the queue":"x"}`, []fe{{`["the queue"]`, "unknown field"}}, false},
		{"unknown repository field", `{"repository":{"branch":"main"}}`, []fe{{"repository.branch", "unknown field"}}, false},

		// Types.
		{"bad duration", `{"steps":[{},{},{"timeout":"10x"}]}`, []fe{{"steps[2].timeout", `"10x" is not a duration`}}, false},
		{"numeric duration", `{"timeout":600}`, []fe{{"timeout", `600 is not a duration (use a string such as "10m")`}}, false},
		{"negative duration", `{"timeout":"-5m"}`, []fe{{"timeout", `"-5m" is negative`}}, false},
		{"duration object", `{"timeout":{"m":5}}`, []fe{{"timeout", `must be a duration such as "10m", not an object`}}, false},
		{"long bad duration is cut short", `{"timeout":"` + strings.Repeat("x", 200) + `"}`,
			[]fe{{"timeout", `"` + strings.Repeat("x", 100) + `…" is not a duration`}}, false},
		{"bad size", `{"resources":{"memory":"4XB"}}`, []fe{{"resources.memory", `"4XB" is not a size (use e.g. "512MiB" or "4GiB")`}}, false},
		{"negative size", `{"resources":{"disk":-1}}`, []fe{{"resources.disk", `"-1" is negative`}}, false},
		{"size boolean", `{"resources":{"disk":true}}`, []fe{{"resources.disk", `must be a size such as "4GiB", not a boolean`}}, false},
		{"integer as string", `{"maxAttempts":"3"}`, []fe{{"maxAttempts", "must be an integer, not a string"}}, false},
		{"fractional integer", `{"priority":2.5}`, []fe{{"priority", "must be an integer, not 2.5"}}, false},
		{"exponent integer", `{"priority":1e3}`, []fe{{"priority", "must be an integer, not 1e3"}}, false},
		{"huge integer", `{"version":99999999999999999999}`, []fe{{"version", "99999999999999999999 is out of range"}}, false},
		{"number as string", `{"resources":{"cpus":"2"}}`, []fe{{"resources.cpus", "must be a number, not a string"}}, false},
		{"huge number", `{"resources":{"cpus":1e400}}`, []fe{{"resources.cpus", "1e400 is out of range"}}, false},
		{"string as number", `{"queue":5}`, []fe{{"queue", "must be a string, not a number (quote it)"}}, false},
		{"env value boolean", `{"env":{"DEBUG":true}}`, []fe{{"env.DEBUG", "must be a string, not a boolean (quote it)"}}, false},
		{"run object", `{"steps":[{"run":{"sh":"x"}}]}`, []fe{{"steps[0].run", "must be a string, not an object"}}, false},
		{"bool as string", `{"repository":{"fetchTags":"yes"}}`, []fe{{"repository.fetchTags", "must be true or false, not a string"}}, false},
		{"pointer bool as number", `{"repository":{"shallow":1}}`, []fe{{"repository.shallow", "must be true or false, not a number"}}, false},
		{"steps object", `{"steps":{"run":"x"}}`, []fe{{"steps", "must be an array, not an object"}}, false},
		{"files array", `{"files":["a"]}`, []fe{{"files", "must be an object, not an array"}}, false},
		{"resources string", `{"resources":"big"}`, []fe{{"resources", "must be an object, not a string"}}, false},
		{"file content number", `{"files":{"a b/c":1}}`, []fe{{`files["a b/c"]`, "must be a string (the content) or an object with content or blob, not a number"}}, false},
		{"file unknown field", `{"files":{"a":{"contents":"x"}}}`, []fe{{"files.a.contents", `unknown field (did you mean "content"?)`}}, false},
		{"file mode not octal", `{"files":{"a":{"mode":"0789"}}}`, []fe{{"files.a.mode", `"0789" is not a file mode (an octal string such as "0755")`}}, false},
		{"file mode setuid", `{"files":{"a":{"mode":2541}}}`, []fe{{"files.a.mode", "2541: a job file's mode holds permission bits only (at most 0777)"}}, false},
		{"file mtime not a time", `{"files":{"a":{"mtime":"yesterday"}}}`, []fe{{"files.a.mtime", `"yesterday" is not a time (RFC 3339, such as "2026-01-02T15:04:05Z")`}}, false},
		{"artifact number", `{"artifacts":["a",2]}`, []fe{{"artifacts[1]", "must be a string, not a number (quote it)"}}, false},

		// Null is an absent field, but not an element.
		{"null step", `{"steps":[{"run":"x"},null]}`, []fe{{"steps[1]", "must be an object, not null"}}, false},
		{"null env value", `{"env":{"A":null}}`, []fe{{"env.A", "must be a string, not null"}}, false},
		{"null secret", `{"secrets":[null]}`, []fe{{"secrets[0]", "must be a string, not null"}}, false},

		// Duplicate keys.
		{"duplicate field", `{"queue":"a","queue":"b"}`, []fe{{"queue", "appears more than once"}}, false},
		{"duplicate env key", `{"steps":[{"env":{"A":"1","A":"2"}}]}`, []fe{{"steps[0].env.A", "appears more than once"}}, false},
		{"duplicate file", `{"files":{"a/b":"1","a/b":"2"}}`, []fe{{`files["a/b"]`, "appears more than once"}}, false},

		// Versions: another version's fields would be misread, so the version
		// comes first.
		{"newer version", `{"steps":[],"cache":{"key":"x"},"version":2}`, []fe{
			{"version", "2 is not supported; this coordinator understands version 1"},
			{"cache", "unknown field"},
		}, false},

		// Every problem, in document order.
		{"all problems at once", `{
			"steps": [
				{"run": "x", "imagee": "a", "timeout": "10x"},
				{"run": 5, "env": {"A": 1, "A": "y"}}
			],
			"resources": {"gpu": 1, "cpus": "2"},
			"maxAttempts": "3"
		}`, []fe{
			{"steps[0].imagee", `unknown field (did you mean "image"?)`},
			{"steps[0].timeout", `"10x" is not a duration`},
			{"steps[1].run", "must be a string, not a number (quote it)"},
			{"steps[1].env.A", "must be a string, not a number (quote it)"},
			{"steps[1].env.A", "appears more than once"},
			{"resources.gpu", "unknown field"},
			{"resources.cpus", "must be a number, not a string"},
			{"maxAttempts", "must be an integer, not a string"},
		}, false},

		// Not an object.
		{"array", `[{"run":"x"}]`, []fe{{"", "the spec must be a JSON object, not an array"}}, false},
		{"string", `"steps"`, []fe{{"", "the spec must be a JSON object, not a string"}}, false},
		{"null", `null`, []fe{{"", "the spec must be a JSON object, not null"}}, false},

		// Malformed JSON stops the walk; problems found before it are kept.
		{"empty", ``, []fe{{"", "the spec is empty"}}, true},
		{"blank", " \n\t", []fe{{"", "the spec is empty"}}, true},
		{"trailing comma", `{"steps":[{"run":"x",}]}`,
			[]fe{{"steps[0]", "invalid JSON at line 1, column 22: invalid character '}' looking for beginning of object key string"}}, true},
		{"truncated", `{"steps":[`, []fe{{"steps", "invalid JSON at line 1, column 11: unexpected end of JSON input"}}, true},
		{"position on a later line", "{\n  \"queue\": \"a\",\n  \"steps\": [x]\n}",
			[]fe{{"steps", "invalid JSON at line 3, column 13: invalid character 'x' looking for beginning of value"}}, true},
		{"problems before the syntax error", `{"gpu":1,"queue":}`, []fe{
			{"gpu", "unknown field"},
			{"queue", "invalid JSON at line 1, column 18: invalid character '}' looking for beginning of value"},
		}, true},
		{"two documents", `{} {}`, []fe{{"", "invalid JSON at line 1, column 4: invalid character '{' after top-level value"}}, true},
		{"trailing garbage", `{}x`, []fe{{"", "invalid JSON at line 1, column 3: invalid character 'x' after top-level value"}}, true},
		{"bad skipped value", `{"gpu":[1,}`, []fe{
			{"gpu", "unknown field"},
			{"gpu", "invalid JSON at line 1, column 11: invalid character '}' looking for beginning of value"},
		}, true},
		{"bad literal", `{"repository":{"shallow":tru}}`,
			[]fe{{"repository.shallow", "invalid JSON at line 1, column 29: invalid character '}' in literal true (expecting 'e')"}}, true},
		{"bad escape", `{"queue":"a\x"}`,
			[]fe{{"queue", `invalid JSON at line 1, column 13: invalid character 'x' in string escape code`}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Decode([]byte(tt.in))
			if err == nil {
				t.Fatalf("Decode(%s) = %+v, want an error", tt.in, got)
			}
			if diff := cmp.Diff(tt.want, problemsOf(t, err)); diff != "" {
				t.Errorf("Decode(%s) problems (-want +got):\n%s", tt.in, diff)
			}
			if errors.Is(err, ErrMalformed) != tt.malformed {
				t.Errorf("errors.Is(err, ErrMalformed) = %v, want %v", !tt.malformed, tt.malformed)
			}
			if errors.Is(err, ErrTooLarge) {
				t.Errorf("errors.Is(err, ErrTooLarge) = true, want false")
			}
		})
	}
}

func TestDecodeErrorText(t *testing.T) {
	t.Parallel()
	_, err := Decode([]byte(`{"steps":[{"timeout":"10x"}],"resources":{"gpu":1}}`))
	got := fmt.Sprint(err)
	want := `steps[0].timeout: "10x" is not a duration; resources.gpu: unknown field`
	if got != want {
		t.Errorf("error text = %q, want %q", got, want)
	}
}

func TestDecodeSizeLimit(t *testing.T) {
	t.Parallel()
	// A well-formed spec of exactly n bytes.
	specOfSize := func(n int) []byte {
		prefix, suffix := `{"steps":[{"run":"`, `"}]}`
		return []byte(prefix + strings.Repeat("x", n-len(prefix)-len(suffix)) + suffix)
	}
	tests := []struct {
		name   string
		limits Limits
		size   int
		want   string // "" for no error about the size
	}{
		{"at the limit", Limits{}, 1 << 20, ""},
		{"one byte over", Limits{}, 1<<20 + 1, "spec is 1048577 bytes, the limit is 1 MiB (1048576 bytes)"},
		{"well over", Limits{}, 2202010, "spec is 2.1 MiB, the limit is 1 MiB"},
		{"raised limit", Limits{MaxSpecBytes: 4 << 20}, 2202010, ""},
		{"lowered limit", Limits{MaxSpecBytes: 1000}, 1500, "spec is 1.5 KiB, the limit is 1000 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := tt.limits.Decode(specOfSize(tt.size))
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Decode: %v, want no error", err)
				}
				return
			}
			want := []FieldError{{Message: tt.want}}
			if diff := cmp.Diff(want, problemsOf(t, err)); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
			if !errors.Is(err, ErrTooLarge) {
				t.Errorf("errors.Is(err, ErrTooLarge) = false, want true")
			}
			if got := tt.limits.CheckSize(int64(tt.size)); fmt.Sprint(got) != fmt.Sprint(err) {
				t.Errorf("CheckSize = %v, want the error Decode returns (%v)", got, err)
			}
		})
	}
}

func TestDecodeCapsProblems(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString(`{"steps":[`)
	for i := range 150 {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`{"runn":"x"}`)
	}
	b.WriteString(`]}`)
	got := problemsOf(t, func() error { _, err := Decode([]byte(b.String())); return err }())
	if len(got) != maxProblems+1 {
		t.Fatalf("got %d problems, want %d", len(got), maxProblems+1)
	}
	if want := (FieldError{Field: "steps[99].runn", Message: `unknown field (did you mean "run"?)`}); got[99] != want {
		t.Errorf("problem 100 = %v, want %v", got[99], want)
	}
	if want := (FieldError{Message: "50 more problems not shown"}); got[100] != want {
		t.Errorf("last problem = %v, want %v", got[100], want)
	}
}

// fuzzSeeds are the starting corpus of FuzzDecode.
var fuzzSeeds = []string{
	fullSpecJSON,
	`{"steps":[{"run":"make"}]}`,
	`{"steps":[{"run":"x","imagee":"a","timeout":"10x"},{"run":5,"env":{"A":1,"A":"y"}}],"resources":{"gpu":1}}`,
	`{"version":2,"steps":[]}`,
	`{"steps":[{"run":"x",}]}`,
	`{"files":{"a/b":"c","../x":"","a":""},"artifacts":["[a","out/*"],"secrets":["A","A"]}`,
	`{"resources":{"memory":"1.5GiB","disk":12345,"cpus":0.25},"timeout":"1h30m","maxAttempts":10,"priority":-1000}`,
	`{"repository":{"url":"https://example.com/a.git","commit":"` + strings.Repeat("ab", 32) + `","shallow":false}}`,
	`[[[[{}]]]]`,
	`{"env":{"A":null},"steps":[null]}`,
}

// FuzzDecode: Decode never panics; what it refuses comes with problems; what
// it accepts is what encoding/json would read too, and survives a round trip
// through json.Marshal, before and after Normalize.
func FuzzDecode(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Decode(data)
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) || len(ve.Problems) == 0 {
				t.Fatalf("Decode error %v is not a *ValidationError with problems", err)
			}
			return
		}
		var std Spec
		if err := json.Unmarshal(data, &std); err != nil {
			t.Fatalf("Decode accepted what encoding/json refuses (%v)", err)
		}
		if diff := cmp.Diff(std, s, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("Decode differs from encoding/json (-json +Decode):\n%s", diff)
		}
		roundTrip(t, s)
		s.Normalize()
		if s.Validate(DefaultLimits()) == nil {
			roundTrip(t, s)
		}
	})
}

// roundTrip checks that s reads back equal from json.Marshal(s).
func roundTrip(t *testing.T, s Spec) {
	t.Helper()
	data, err := json.Marshal(s)
	if err != nil {
		t.Fatalf("json.Marshal: %v", err)
	}
	// json.Marshal escapes <, > and &, which can take a spec over the limit.
	got, err := Limits{MaxSpecBytes: 1 << 40}.Decode(data)
	if err != nil {
		t.Fatalf("Decode(json.Marshal(spec)): %v\njson: %s", err, data)
	}
	if diff := cmp.Diff(s, got, cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
}

func TestFileJSONRoundTrip(t *testing.T) {
	t.Parallel()
	for _, f := range []File{
		InlineFile("plain"),
		{Content: "x", Mode: 0o700},
		{Blob: "sha256:" + strings.Repeat("0f", 32), ModTime: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)},
	} {
		data, err := json.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		if f.isShort() != (data[0] == '"') {
			t.Errorf("Marshal(%+v) = %s: short form %v, want %v", f, data, data[0] == '"', f.isShort())
		}
		var got File
		if err := json.Unmarshal(data, &got); err != nil {
			t.Fatalf("Unmarshal(%s): %v", data, err)
		}
		if diff := cmp.Diff(f, got); diff != "" {
			t.Errorf("round trip of %s (-want +got):\n%s", data, diff)
		}
	}
}
