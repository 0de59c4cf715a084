package job

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Sentinels that errors.Is matches on what Decode returns, beside the
// *ValidationError that errors.As finds. The HTTP edge uses them to pick a
// status: ErrTooLarge is 413, ErrMalformed is 400, any other problem 422.
var (
	// ErrTooLarge marks a spec over Limits.MaxSpecBytes.
	ErrTooLarge = errors.New("spec too large")
	// ErrMalformed marks a spec that cannot be parsed: malformed JSON (or,
	// from package specfile, malformed YAML).
	ErrMalformed = errors.New("malformed spec")
)

// FieldError is one problem with a spec. Field is the path of the offending
// field as written on the wire ("steps[2].timeout", `files["a b"]`), or empty
// when the problem concerns the spec as a whole.
type FieldError struct {
	Field   string
	Message string
}

// Error writes "field: message".
func (e FieldError) Error() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

// ValidationError lists every problem found in a spec, in the order of the
// document (Decode) or of the Spec's fields (Validate).
type ValidationError struct {
	Problems []FieldError
}

// Error writes every problem as "field: message", joined with "; ".
func (e *ValidationError) Error() string {
	if len(e.Problems) == 0 {
		return "invalid spec"
	}
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.Error()
	}
	return strings.Join(parts, "; ")
}

// kindError is a *ValidationError that also matches a sentinel.
type kindError struct {
	err  *ValidationError
	kind error
}

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.err, e.kind} }

// maxProblems caps the list a single spec can produce; a hostile spec must
// not turn into a megabyte of error text.
const maxProblems = 100

// problems collects FieldErrors up to maxProblems.
type problems struct {
	list    []FieldError
	dropped int
}

func (p *problems) add(field, msg string) {
	if len(p.list) >= maxProblems {
		p.dropped++
		return
	}
	p.list = append(p.list, FieldError{Field: field, Message: msg})
}

func (p *problems) addf(field, format string, args ...any) {
	p.add(field, fmt.Sprintf(format, args...))
}

func (p *problems) full() bool { return len(p.list) >= maxProblems }

func (p *problems) empty() bool { return len(p.list) == 0 }

func (p *problems) validationError() *ValidationError {
	list := p.list
	if p.dropped > 0 {
		more := fmt.Sprintf("%d more problems not shown", p.dropped)
		if p.dropped == 1 {
			more = "1 more problem not shown"
		}
		list = append(list, FieldError{Message: more})
	}
	return &ValidationError{Problems: list}
}

func (p *problems) err() error {
	if p.empty() {
		return nil
	}
	return p.validationError()
}

// Normalize fills in the defaults a spec leaves out: version 1, the
// "default" queue, the internet network policy, 3 attempts and step names
// "step-1", "step-2"… by position. Validate accepts a spec before or after
// Normalize alike.
func (s *Spec) Normalize() {
	if s.Version == 0 {
		s.Version = SpecVersion
	}
	if s.Queue == "" {
		s.Queue = DefaultQueue
	}
	if s.Network == "" {
		s.Network = NetworkInternet
	}
	if s.MaxAttempts == 0 {
		s.MaxAttempts = DefaultMaxAttempts
	}
	for i := range s.Steps {
		if s.Steps[i].Name == "" {
			s.Steps[i].Name = defaultStepName(i)
		}
	}
}

func unsupportedVersion(v int) string {
	return fmt.Sprintf("%d is not supported; this coordinator understands version %d", v, SpecVersion)
}

func defaultStepName(i int) string { return "step-" + strconv.Itoa(i+1) }

// Validate checks s against the rules of docs/job-spec.md and the limits l
// (zero fields of l mean the defaults). It returns nil or a
// *ValidationError naming every problem by its path. Zero values that
// Normalize would fill in are accepted. The size of the spec as a whole is
// checked by Decode, which sees the bytes.
func (s Spec) Validate(l Limits) error {
	l = l.WithDefaults()
	var p problems

	if s.Version != 0 && s.Version != SpecVersion {
		p.add("version", unsupportedVersion(s.Version))
	}
	if s.Queue != "" && !validName(s.Queue, false) {
		p.addf("queue", "%s is not a valid queue name (lowercase letters, digits, '.', '_' and '-', starting with a letter or digit, at most %d)", quote(s.Queue), MaxNameLen)
	}
	if s.Repository != nil {
		validateRepository(&p, s.Repository)
	}
	validateFiles(&p, s.Files, l)
	validateSteps(&p, s, l)
	validateResources(&p, s.Resources)
	if s.Network != "" && s.Network != NetworkInternet && s.Network != NetworkNone {
		p.addf("network", "%s is not a network policy (use %q or %q)", quote(string(s.Network)), NetworkInternet, NetworkNone)
	}
	validateTimeout(&p, "timeout", s.Timeout, l)
	if s.MaxAttempts != 0 && (s.MaxAttempts < 1 || s.MaxAttempts > MaxAttemptsCap) {
		p.addf("maxAttempts", "%d is out of range (1 to %d)", s.MaxAttempts, MaxAttemptsCap)
	}
	validateArtifacts(&p, s.Artifacts, l)
	switch s.ArtifactsWhen {
	case "", ArtifactsOnSuccess, ArtifactsOnFailure, ArtifactsAlways:
	default:
		p.addf("artifactsWhen", "%s is not one of %q, %q and %q", quote(string(s.ArtifactsWhen)), ArtifactsOnSuccess, ArtifactsOnFailure, ArtifactsAlways)
	}
	validateSecrets(&p, s, l)
	if s.Priority < MinPriority || s.Priority > MaxPriority {
		p.addf("priority", "%d is out of range (%d to %d)", s.Priority, MinPriority, MaxPriority)
	}
	validateEnv(&p, "env", s.Env, l)
	return p.err()
}

func validateRepository(p *problems, r *Repository) {
	switch {
	case r.Name != "" && r.URL != "":
		p.add("repository", "set name or url, not both")
	case r.Name == "" && r.URL == "":
		p.add("repository", "name or url is required")
	}
	if r.Name != "" {
		switch {
		case len(r.Name) > MaxRepoNameLen:
			p.addf("repository.name", "%d characters, the limit is %d", len(r.Name), MaxRepoNameLen)
		case !validRepoName(r.Name):
			p.addf("repository.name", "%s is not a valid repository name (path segments of letters, digits, '.', '_' and '-', such as \"acme/api\")", quote(r.Name))
		}
	}
	if r.URL != "" {
		if msg := checkURL(r.URL); msg != "" {
			p.add("repository.url", msg)
		} else if !strings.HasPrefix(r.URL, "https://") && !strings.HasPrefix(r.URL, "http://") {
			p.addf("repository.url", "%s: a public repository is fetched over https:// or http://; register other remotes on the coordinator (airlock repos add) and name them", quote(r.URL))
		}
	}
	switch {
	case r.Commit == "":
		p.add("repository.commit", "is required (a full 40- or 64-character commit hash)")
	case !ValidCommit(r.Commit):
		p.addf("repository.commit", "%s is not a full commit hash (40 or 64 lowercase hex digits)", quote(r.Commit))
	}
	if len(r.Sparse) > MaxSparse {
		p.addf("repository.sparse", "%d entries, the limit is %d", len(r.Sparse), MaxSparse)
	}
	for i, e := range r.Sparse {
		// Sparse entries are directories; a trailing slash is allowed.
		msg := "must be relative to the repository root"
		if !path.IsAbs(e) {
			msg = checkRelPath(strings.TrimSuffix(e, "/"), "repository root")
		}
		if msg != "" {
			p.add(IndexPath("repository.sparse", i), msg)
		}
	}
}

func validateFiles(p *problems, files map[string]File, l Limits) {
	if len(files) > l.MaxFiles {
		p.addf("files", "%d files, the limit is %d", len(files), l.MaxFiles)
	}
	var total int64
	for _, k := range sortedKeys(files) {
		f := files[k]
		total += int64(len(f.Content))
		kp := FieldPath("files", k)
		if f.Blob != "" {
			if f.Content != "" {
				p.add(kp, "has both content and blob: give one")
			} else if _, err := ParseBlob(f.Blob); err != nil {
				p.add(kp+".blob", err.Error())
			}
		}
		if f.Mode > MaxFileMode {
			p.addf(kp+".mode", "%s: a job file's mode holds permission bits only (at most 0777)", f.Mode)
		}
		if msg := checkRelPath(k, "workspace"); msg != "" {
			p.add(kp, msg)
			continue
		}
		// A file cannot also be a directory that holds another file.
		for dir := path.Dir(k); dir != "."; dir = path.Dir(dir) {
			if _, ok := files[dir]; ok {
				p.addf(kp, "%s is also a file", quote(dir))
				break
			}
		}
	}
	if total > int64(l.MaxFileBytes) {
		a, b := sizes(total, int64(l.MaxFileBytes))
		p.addf("files", "%s in total, the limit is %s", a, b)
	}
}

func validateSteps(p *problems, s Spec, l Limits) {
	switch {
	case len(s.Steps) == 0:
		p.add("steps", "at least one step is required")
	case len(s.Steps) > l.MaxSteps:
		p.addf("steps", "%d steps, the limit is %d", len(s.Steps), l.MaxSteps)
	}
	used := make(map[string]int, len(s.Steps))
	for i, st := range s.Steps {
		sp := IndexPath("steps", i)
		name := st.Name
		if name == "" {
			name = defaultStepName(i)
		}
		if st.Name != "" && !validName(st.Name, true) {
			p.addf(sp+".name", "%s is not a valid step name (letters, digits, '.', '_' and '-', starting with a letter or digit, at most %d)", quote(st.Name), MaxNameLen)
		} else if j, ok := used[name]; ok {
			p.addf(sp+".name", "%s is already used by steps[%d]", quote(name), j)
		} else {
			used[name] = i
		}
		if st.Image != "" {
			if msg := checkImage(st.Image); msg != "" {
				p.add(sp+".image", msg)
			}
		}
		if st.User != "" {
			if msg := checkUser(st.User); msg != "" {
				p.add(sp+".user", msg)
			}
		}
		switch {
		case strings.TrimSpace(st.Run) == "":
			p.add(sp+".run", "is required")
		case int64(len(st.Run)) > int64(l.MaxRunBytes):
			a, b := sizes(int64(len(st.Run)), int64(l.MaxRunBytes))
			p.addf(sp+".run", "%s, the limit is %s", a, b)
		case strings.IndexByte(st.Run, 0) >= 0:
			p.add(sp+".run", "must not contain a NUL byte")
		}
		validateEnv(p, sp+".env", st.Env, l)
		if st.Dir != "" {
			if msg := checkDir(st.Dir); msg != "" {
				p.add(sp+".dir", msg)
			}
		}
		validateTimeout(p, sp+".timeout", st.Timeout, l)
		if s.Timeout > 0 && st.Timeout > s.Timeout && st.Timeout <= l.MaxTimeout {
			p.addf(sp+".timeout", "%s is longer than the job's timeout (%s)", humanDuration(st.Timeout), humanDuration(s.Timeout))
		}
	}
}

func validateTimeout(p *problems, field string, d Duration, l Limits) {
	switch {
	case d < 0:
		p.addf(field, "%s is negative", humanDuration(d))
	case d > l.MaxTimeout:
		p.addf(field, "%s, the limit is %s", humanDuration(d), humanDuration(l.MaxTimeout))
	}
}

func validateEnv(p *problems, field string, env map[string]string, l Limits) {
	if len(env) > l.MaxEnv {
		p.addf(field, "%d variables, the limit is %d", len(env), l.MaxEnv)
	}
	for _, k := range sortedKeys(env) {
		kp := FieldPath(field, k)
		switch {
		case !validEnvName(k):
			p.add(kp, "invalid variable name (use letters, digits and '_', not starting with a digit)")
		case strings.HasPrefix(k, ReservedEnvPrefix):
			p.add(kp, "names starting with "+ReservedEnvPrefix+" are reserved")
		}
		if strings.IndexByte(env[k], 0) >= 0 {
			p.add(kp, "value must not contain a NUL byte")
		}
	}
}

func validateResources(p *problems, r Resources) {
	switch {
	case math.IsNaN(r.CPUs):
		p.add("resources.cpus", "NaN is not a number")
	case r.CPUs < 0:
		p.addf("resources.cpus", "%s is negative", formatFloat(r.CPUs))
	case r.CPUs > MaxCPUs:
		p.addf("resources.cpus", "%s, the limit is %d", formatFloat(r.CPUs), MaxCPUs)
	}
	if r.Memory < 0 {
		p.addf("resources.memory", "%d is negative", int64(r.Memory))
	}
	if r.Pids < 0 {
		p.addf("resources.pids", "%d is negative", r.Pids)
	}
	if r.Disk < 0 {
		p.addf("resources.disk", "%d is negative", int64(r.Disk))
	}
}

func validateArtifacts(p *problems, artifacts []string, l Limits) {
	if len(artifacts) > l.MaxArtifacts {
		p.addf("artifacts", "%d patterns, the limit is %d", len(artifacts), l.MaxArtifacts)
	}
	for i, a := range artifacts {
		ap := IndexPath("artifacts", i)
		if msg := checkRelPath(a, "workspace"); msg != "" {
			p.add(ap, msg)
			continue
		}
		if _, err := path.Match(a, ""); err != nil {
			p.addf(ap, "%s is not a valid pattern (syntax error)", quote(a))
		}
	}
}

func validateSecrets(p *problems, s Spec, l Limits) {
	if len(s.Secrets) > l.MaxSecrets {
		p.addf("secrets", "%d secrets, the limit is %d", len(s.Secrets), l.MaxSecrets)
	}
	if len(s.Secrets) == 0 {
		return
	}
	// A secret is injected as an env variable; a spec that also sets it
	// would make one of the two silently win.
	inStep := make(map[string]int) // variable → first step that sets it
	for j := len(s.Steps) - 1; j >= 0; j-- {
		for k := range s.Steps[j].Env {
			inStep[k] = j
		}
	}
	seen := make(map[string]int, len(s.Secrets))
	for i, name := range s.Secrets {
		sp := IndexPath("secrets", i)
		switch {
		case !validEnvName(name):
			p.addf(sp, "%s is not a valid variable name (use letters, digits and '_', not starting with a digit)", quote(name))
			continue
		case strings.HasPrefix(name, ReservedEnvPrefix):
			p.addf(sp, "%s: names starting with %s are reserved", quote(name), ReservedEnvPrefix)
			continue
		}
		if j, ok := seen[name]; ok {
			p.addf(sp, "%s is already listed at secrets[%d]", quote(name), j)
			continue
		}
		seen[name] = i
		if _, ok := s.Env[name]; ok {
			p.addf(sp, "%s is also set in env", quote(name))
		}
		if j, ok := inStep[name]; ok {
			p.addf(sp, "%s is also set in steps[%d].env", quote(name), j)
		}
	}
}

// checkRelPath checks a path that must stay inside root (the workspace or
// the repository): relative, clean, no NUL, not too long, not root itself.
// It returns a problem or "".
func checkRelPath(s, root string) string {
	clean := path.Clean(s)
	switch {
	case s == "":
		return "is empty"
	case strings.IndexByte(s, 0) >= 0:
		return "must not contain a NUL byte"
	case len(s) > MaxPathLen:
		return fmt.Sprintf("%d characters, the limit is %d", len(s), MaxPathLen)
	case path.IsAbs(s):
		return "must be relative to the " + root
	case clean == ".." || strings.HasPrefix(clean, "../"):
		return "escapes the " + root
	case clean == ".":
		return "names the " + root + " itself"
	case clean != s:
		return fmt.Sprintf("is not clean (write %s)", quote(clean))
	}
	return ""
}

// checkDir checks a step's working directory: relative and inside the
// workspace; unlike file paths it need not be clean ("./src/" is fine).
func checkDir(s string) string {
	clean := path.Clean(s)
	switch {
	case strings.IndexByte(s, 0) >= 0:
		return "must not contain a NUL byte"
	case len(s) > MaxPathLen:
		return fmt.Sprintf("%d characters, the limit is %d", len(s), MaxPathLen)
	case path.IsAbs(s):
		return fmt.Sprintf("%s must be relative to the workspace", quote(s))
	case clean == ".." || strings.HasPrefix(clean, "../"):
		return fmt.Sprintf("%s escapes the workspace", quote(s))
	}
	return ""
}

// userPattern is a user as an image config names it: "uid", "uid:gid",
// "name", "name:group" (names as useradd allows them).
var userPattern = regexp.MustCompile(`^([0-9]{1,10}|[a-z_][a-z0-9_.-]{0,31})(:([0-9]{1,10}|[a-z_][a-z0-9_.-]{0,31}))?$`)

// checkUser checks a step's user.
func checkUser(s string) string {
	if !userPattern.MatchString(s) {
		return fmt.Sprintf("%s is not a user: want uid, uid:gid, name or name:group (names of lowercase letters, digits, '_', '.' and '-')", quote(s))
	}
	return ""
}

// checkImage checks that an image reference is plausible. Resolving it is
// the image package's business; here we only refuse what can never be an
// image and what could be read as a command-line flag.
func checkImage(s string) string {
	if len(s) > MaxImageLen {
		return fmt.Sprintf("%d characters, the limit is %d", len(s), MaxImageLen)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return fmt.Sprintf("%s is not a valid image reference (spaces, control and non-ASCII characters are not allowed)", quote(s))
		}
	}
	if s[0] == '-' {
		return fmt.Sprintf("%s is not a valid image reference (it must not start with '-')", quote(s))
	}
	return ""
}

// checkURL checks a repository URL: a network scheme, a host, and no
// credentials (those live on the coordinator).
func checkURL(s string) string {
	if len(s) > MaxURLLen {
		return fmt.Sprintf("%d characters, the limit is %d", len(s), MaxURLLen)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f {
			return fmt.Sprintf("%s is not a valid URL (spaces and control characters are not allowed)", quote(s))
		}
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" && u.Scheme != "http" && u.Scheme != "ssh" && u.Scheme != "git" {
		return fmt.Sprintf("%s is not a valid repository URL (use https://, http://, ssh:// or git://)", quote(s))
	}
	if u.Host == "" {
		return fmt.Sprintf("%s has no host", quote(s))
	}
	if u.User != nil {
		_, hasPassword := u.User.Password()
		if hasPassword || u.Scheme == "https" || u.Scheme == "http" {
			return "must not contain credentials; the coordinator holds them"
		}
	}
	return ""
}

// validName reports whether s matches [A-Za-z0-9][A-Za-z0-9._-]{0,63}, or
// its lowercase-only form when upper is false.
func validName(s string, upper bool) bool {
	if s == "" || len(s) > MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case upper && c >= 'A' && c <= 'Z':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// validEnvName reports whether s matches [A-Za-z_][A-Za-z0-9_]*.
func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c == '_':
		case i > 0 && c >= '0' && c <= '9':
		default:
			return false
		}
	}
	return true
}

// validRepoName reports whether s is slash-separated segments of
// [A-Za-z0-9._-], none of them "." or "..", none starting with '-'.
func validRepoName(s string) bool {
	for _, seg := range strings.Split(s, "/") {
		if seg == "" || seg == "." || seg == ".." || seg[0] == '-' {
			return false
		}
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			switch {
			case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			case c == '.' || c == '_' || c == '-':
			default:
				return false
			}
		}
	}
	return true
}

// ValidCommit reports whether s is a full SHA-1 or SHA-256 object name in
// lowercase hex.
func ValidCommit(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// FieldPath extends a path by an object key, as problems name fields:
// "steps[0].env.HOME" for a key that is an identifier,
// `files["config/input.json"]` for any other (quoted, and cut short if
// long).
func FieldPath(parent, key string) string {
	if validEnvName(key) {
		if parent == "" {
			return key
		}
		return parent + "." + key
	}
	return parent + "[" + quote(key) + "]"
}

// IndexPath extends a path by an array index: "steps[2]".
func IndexPath(parent string, i int) string {
	return parent + "[" + strconv.Itoa(i) + "]"
}

// maxQuoted is how much of a user's string a message repeats.
const maxQuoted = 100

// quote quotes s for a message, cut short if it is long.
func quote(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut] + "…")
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
