// Package specfile reads job spec files: YAML for people, or JSON.
//
// YAML is converted to JSON and read by job.Decode, so a problem has the
// same path and the same words whichever form the spec was written in, and
// the same as when the spec arrives over the wire. A file whose first
// character is '{' is read as JSON directly (YAML flow style, which also
// starts with '{', is tried when it is not JSON).
//
// The conversion is done here over go.yaml.in/yaml/v2 (the parser under
// sigs.k8s.io/yaml) rather than by sigs.k8s.io/yaml.YAMLToJSON, for two
// reasons. YAMLToJSON turns keys that YAML 1.1 reads as booleans or numbers
// into strings, so `env: {N: "1"}` would silently set a variable named
// "false"; here such a key is refused by its path. And anchors and aliases
// can make a small file expand into a huge spec; here the size of the JSON
// is added up, and checked against the limit, before any JSON is written.
//
// Beyond job.Decode, a file must hold exactly one YAML document and no key
// twice. YAML syntax errors name the line, as the YAML library gives it.
package specfile

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"

	yamlv2 "go.yaml.in/yaml/v2"

	"github.com/airlock-run/airlock/internal/job"
)

// Parse reads a spec from YAML or JSON, with the default limits. Errors are
// a *job.ValidationError (errors.As), and match job.ErrMalformed or
// job.ErrTooLarge (errors.Is) where they apply. Parse neither fills in
// defaults nor validates values; see ParseValid.
func Parse(data []byte) (job.Spec, error) {
	return parse(data, job.DefaultLimits())
}

// ParseValid reads a spec as Parse does, under the limits l, then
// normalizes and validates it.
func ParseValid(data []byte, l job.Limits) (job.Spec, error) {
	s, err := parse(data, l)
	if err != nil {
		return job.Spec{}, err
	}
	s.Normalize()
	if err := s.Validate(l); err != nil {
		return job.Spec{}, err
	}
	return s, nil
}

// Load reads the spec file at path, as Parse does. Errors begin with the
// file name.
func Load(path string) (job.Spec, error) {
	return load(path, job.DefaultLimits(), false)
}

// LoadValid reads the spec file at path under the limits l, then
// normalizes and validates it. Errors begin with the file name.
func LoadValid(path string, l job.Limits) (job.Spec, error) {
	return load(path, l, true)
}

func load(path string, l job.Limits, valid bool) (job.Spec, error) {
	l = l.WithDefaults()
	f, err := os.Open(path)
	if err != nil {
		return job.Spec{}, fmt.Errorf("reading job spec: %w", err)
	}
	defer f.Close()
	// Refuse a large file by its size, without reading it.
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
		if err := l.CheckSize(st.Size()); err != nil {
			return job.Spec{}, fmt.Errorf("%s: %w", path, err)
		}
	}
	data, err := io.ReadAll(io.LimitReader(f, int64(l.MaxSpecBytes)+1))
	if err != nil {
		return job.Spec{}, fmt.Errorf("reading job spec: %w", err)
	}
	var s job.Spec
	if valid {
		s, err = ParseValid(data, l)
	} else {
		s, err = parse(data, l)
	}
	if err != nil {
		return job.Spec{}, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

var bom = []byte("\xef\xbb\xbf")

func parse(data []byte, l job.Limits) (job.Spec, error) {
	if err := l.CheckSize(int64(len(data))); err != nil {
		return job.Spec{}, err
	}
	data = bytes.TrimPrefix(data, bom)
	var jsonErr error
	if trimmed := bytes.TrimLeft(data, " \t\r\n"); len(trimmed) > 0 && trimmed[0] == '{' {
		s, err := l.Decode(data)
		if !errors.Is(err, job.ErrMalformed) {
			return s, err
		}
		jsonErr = err // perhaps YAML flow style: try that before giving up
	}
	js, shape, err := toJSON(data, l)
	if err != nil {
		if jsonErr != nil && errors.Is(err, job.ErrMalformed) {
			return job.Spec{}, jsonErr
		}
		return job.Spec{}, err
	}
	s, err := l.Decode(js)
	if errors.Is(err, job.ErrTooLarge) {
		return job.Spec{}, fmt.Errorf("converting YAML to JSON: %w", err)
	}
	if len(shape) > 0 {
		// The values YAML could not hand over come first, then the rest.
		var ve *job.ValidationError
		if errors.As(err, &ve) {
			shape = append(shape, ve.Problems...)
		}
		return job.Spec{}, &job.ValidationError{Problems: shape}
	}
	return s, err
}

// probe notes whether a YAML document holds anything, without building it:
// yaml.v2 calls UnmarshalYAML only for a document that is not null.
type probe struct{ set bool }

func (p *probe) UnmarshalYAML(func(any) error) error {
	p.set = true
	return nil
}

// toJSON converts a one-document YAML file to JSON. Keys that are not
// strings and numbers JSON cannot write are left out of the JSON and
// returned as problems.
func toJSON(data []byte, l job.Limits) ([]byte, []job.FieldError, error) {
	dec := yamlv2.NewDecoder(bytes.NewReader(data))
	dec.SetStrict(true) // refuse duplicate keys
	var doc any
	switch err := dec.Decode(&doc); {
	case err == io.EOF:
		return nil, nil, malformed("the spec is empty")
	case err != nil:
		return nil, nil, yamlError(err)
	}
	for {
		var next probe
		err := dec.Decode(&next)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, yamlError(err)
		}
		if next.set {
			return nil, nil, malformed("the file holds more than one YAML document; write one spec per file")
		}
	}
	if doc == nil {
		return nil, nil, malformed("the spec is empty")
	}

	var c converter
	v := c.convert(doc, "")
	// Anchors and aliases can make a small file a huge spec: measure before
	// writing any JSON.
	if err := l.CheckSize(c.size); err != nil {
		return nil, nil, fmt.Errorf("converting YAML to JSON: %w", err)
	}
	js, err := json.Marshal(v)
	if err != nil {
		return nil, nil, fmt.Errorf("converting YAML to JSON: %w", err)
	}
	slices.SortFunc(c.problems, func(a, b job.FieldError) int {
		return cmp.Or(strings.Compare(a.Field, b.Field), strings.Compare(a.Message, b.Message))
	})
	return js, c.problems, nil
}

// converter turns what yaml.v2 decodes into values encoding/json can write,
// and adds up (a little under) the size of the JSON.
type converter struct {
	problems []job.FieldError
	size     int64
}

func (c *converter) convert(v any, path string) any {
	switch x := v.(type) {
	case map[any]any:
		c.size += 2 + int64(len(x))
		m := make(map[string]any, len(x))
		for k, val := range x {
			key, ok := k.(string)
			if !ok {
				c.problems = append(c.problems, job.FieldError{Field: path, Message: keyProblem(k)})
				continue
			}
			c.size += int64(len(key)) + 3
			m[key] = c.convert(val, job.FieldPath(path, key))
		}
		return m
	case []any:
		c.size += 2 + int64(len(x))
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = c.convert(e, job.IndexPath(path, i))
		}
		return out
	case string:
		c.size += int64(len(x)) + 2
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			c.problems = append(c.problems, job.FieldError{Field: path, Message: fmt.Sprintf("%v has no JSON equivalent", x)})
			return nil
		}
		c.size++
	default:
		c.size++
	}
	return v
}

// keyProblem words the problem with a key YAML did not read as a string.
// All keys in a spec are strings, so there is no reason to convert one,
// and converting would be wrong: the key N would become "false".
func keyProblem(k any) string {
	switch k.(type) {
	case bool:
		return fmt.Sprintf("key %v is a boolean, not a string (YAML reads y, n, yes, no, on and off as booleans; quote the key)", k)
	case int, int64, uint64, float64:
		return fmt.Sprintf("key %v is a number, not a string (quote the key)", k)
	case nil:
		return "key null is not a string (quote the key)"
	}
	return "a key must be a string"
}

// yamlError rewords an error of the YAML library as problems, one per line
// it lists, without the "yaml: " prefix, marked job.ErrMalformed.
func yamlError(err error) error {
	var lines []string
	var te *yamlv2.TypeError
	if errors.As(err, &te) {
		lines = te.Errors
	} else {
		lines = []string{err.Error()}
	}
	problems := make([]job.FieldError, len(lines))
	for i, line := range lines {
		line = strings.TrimPrefix(line, "yaml: ")
		if strings.HasPrefix(line, "invalid map key") {
			line = "a key must be a string" // not Go syntax for a list or a map
		}
		problems[i] = job.FieldError{Message: line}
	}
	return &malformedError{&job.ValidationError{Problems: problems}}
}

func malformed(msg string) error {
	return &malformedError{&job.ValidationError{Problems: []job.FieldError{{Message: msg}}}}
}

// malformedError is a *job.ValidationError that matches job.ErrMalformed.
type malformedError struct{ err *job.ValidationError }

func (e *malformedError) Error() string   { return e.err.Error() }
func (e *malformedError) Unwrap() []error { return []error{e.err, job.ErrMalformed} }
