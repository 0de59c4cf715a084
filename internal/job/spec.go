package job

// SpecVersion is the only job-spec version this build understands. A spec
// without a version is read as version 1; any other value is refused so that a
// newer client never has its fields silently ignored by an older coordinator.
const SpecVersion = 1

// Spec is what a user submits. The field names are the wire names; see the
// job spec reference, docs/job-spec.md, for the meaning and the limits of each.
type Spec struct {
	Version     int             `json:"version"`
	Queue       string          `json:"queue,omitempty"`
	Repository  *Repository     `json:"repository,omitempty"`
	Files       map[string]File `json:"files,omitempty"`
	Steps       []Step          `json:"steps"`
	Resources   Resources       `json:"resources,omitempty"`
	Network     Network         `json:"network,omitempty"`
	Timeout     Duration        `json:"timeout,omitempty"`
	MaxAttempts int             `json:"maxAttempts,omitempty"`
	Artifacts   []string        `json:"artifacts,omitempty"`
	// ArtifactsWhen says after which outcomes the artifacts are collected.
	ArtifactsWhen ArtifactsWhen     `json:"artifactsWhen,omitempty"`
	Secrets       []string          `json:"secrets,omitempty"`
	Priority      int               `json:"priority,omitempty"`
	Env           map[string]string `json:"env,omitempty"`
}

// Repository names the source checked out into the workspace before the steps.
// Checkout is the workspace issue's business; the core only carries it.
type Repository struct {
	Name      string   `json:"name,omitempty"`
	URL       string   `json:"url,omitempty"`
	Commit    string   `json:"commit"`
	FetchTags bool     `json:"fetchTags,omitempty"`
	Shallow   *bool    `json:"shallow,omitempty"`
	Sparse    []string `json:"sparse,omitempty"`
}

// Step is one command run in a fresh sandbox over the shared workspace.
type Step struct {
	Name    string            `json:"name,omitempty"`
	Image   string            `json:"image,omitempty"`
	User    string            `json:"user,omitempty"`
	Run     string            `json:"run"`
	Env     map[string]string `json:"env,omitempty"`
	Dir     string            `json:"dir,omitempty"`
	Timeout Duration          `json:"timeout,omitempty"`
}

// Resources are the limits a job asks for. Zero means "the executor's default".
type Resources struct {
	CPUs   float64  `json:"cpus,omitempty"`
	Memory ByteSize `json:"memory,omitempty"`
	Pids   int      `json:"pids,omitempty"`
	Disk   ByteSize `json:"disk,omitempty"`
}

// ArtifactsWhen says when a job's artifacts are collected.
type ArtifactsWhen string

const (
	// ArtifactsOnSuccess collects them once every step succeeded (the default).
	ArtifactsOnSuccess ArtifactsWhen = "success"
	// ArtifactsOnFailure collects them only when a step failed: exited
	// non-zero, timed out or ran out of memory.
	ArtifactsOnFailure ArtifactsWhen = "failure"
	// ArtifactsAlways collects them after success and after a step's failure.
	ArtifactsAlways ArtifactsWhen = "always"
)

// After reports whether artifacts are collected after a run that succeeded
// (true) or whose step failed (false).
func (w ArtifactsWhen) After(succeeded bool) bool {
	switch w {
	case ArtifactsAlways:
		return true
	case ArtifactsOnFailure:
		return !succeeded
	}
	return succeeded
}

// Network is a job's egress policy.
type Network string

const (
	// NetworkInternet allows public destinations only (the default).
	NetworkInternet Network = "internet"
	// NetworkNone allows loopback only.
	NetworkNone Network = "none"
)
