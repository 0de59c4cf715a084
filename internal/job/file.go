package job

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"time"
)

// File is one job file, written into the workspace before the first step:
// either inline Content or an uploaded Blob (a file the client sent to the
// coordinator first, `airlock submit --file local:remote`). In a spec, a
// plain string is short for {"content": "..."}.
type File struct {
	Content string    `json:"content,omitempty"`
	Blob    string    `json:"blob,omitempty"` // "sha256:<64 hex digits>"
	Mode    FileMode  `json:"mode,omitempty"` // permission bits; 0 means 0644
	ModTime time.Time `json:"mtime,omitzero"` // zero leaves the time of writing
}

// InlineFile is a file with content only, as the short form writes it.
func InlineFile(content string) File { return File{Content: content} }

// isShort reports whether f is content and nothing else.
func (f File) isShort() bool { return f.Blob == "" && f.Mode == 0 && f.ModTime.IsZero() }

// MarshalJSON writes the short form when it says everything.
func (f File) MarshalJSON() ([]byte, error) {
	if f.isShort() {
		return json.Marshal(f.Content)
	}
	type plain File
	return json.Marshal(plain(f))
}

// UnmarshalJSON reads the short or the long form. (Decode walks specs
// itself, strictly; this serves specs already validated, read back from a
// store.)
func (f *File) UnmarshalJSON(data []byte) error {
	if len(data) > 0 && data[0] == '"' {
		*f = File{}
		return json.Unmarshal(data, &f.Content)
	}
	type plain File
	var p plain
	if err := json.Unmarshal(data, &p); err != nil {
		return err
	}
	*f = File(p)
	return nil
}

// BlobPrefix starts every File.Blob.
const BlobPrefix = "sha256:"

// ParseBlob returns the hex digest of a File.Blob reference.
func ParseBlob(ref string) (string, error) {
	h, ok := strings.CutPrefix(ref, BlobPrefix)
	if !ok || len(h) != 64 || strings.ToLower(h) != h {
		return "", fmt.Errorf("%s is not a blob reference (%s and 64 lowercase hex digits)", quote(ref), BlobPrefix)
	}
	if _, err := hex.DecodeString(h); err != nil {
		return "", fmt.Errorf("%s is not a blob reference (%s and 64 lowercase hex digits)", quote(ref), BlobPrefix)
	}
	return h, nil
}

// FileMode is a file's permission bits. In a spec it is an octal string
// ("0755", "755") or a number (YAML's 0755 arrives as 493).
type FileMode uint32

// MaxFileMode is the largest mode a job file may have: permission bits
// only (set-user-ID and the like mean nothing in a sandbox).
const MaxFileMode FileMode = 0o777

// Perm is the mode as an fs.FileMode.
func (m FileMode) Perm() fs.FileMode { return fs.FileMode(m) & fs.ModePerm }

func (m FileMode) String() string { return fmt.Sprintf("%#04o", uint32(m)) }

// MarshalJSON writes the octal string.
func (m FileMode) MarshalJSON() ([]byte, error) { return json.Marshal(m.String()) }

// UnmarshalJSON reads an octal string or a number.
func (m *FileMode) UnmarshalJSON(data []byte) error {
	v, err := parseFileMode(data)
	if err != nil {
		return err
	}
	*m = v
	return nil
}

func parseFileMode(data []byte) (FileMode, error) {
	s := string(data)
	base := 10
	if len(s) > 0 && s[0] == '"' {
		if err := json.Unmarshal(data, &s); err != nil {
			return 0, err
		}
		base = 8
		s = strings.TrimPrefix(strings.TrimPrefix(s, "0o"), "0O")
	}
	n, err := strconv.ParseUint(s, base, 32)
	if err != nil || s == "" {
		return 0, fmt.Errorf("%s is not a file mode (an octal string such as \"0755\")", cut(string(data)))
	}
	if FileMode(n) > MaxFileMode {
		return 0, fmt.Errorf("%s: a job file's mode holds permission bits only (at most 0777)", cut(string(data)))
	}
	return FileMode(n), nil
}

// CheckFilePath says what is wrong with p as a job file's path ("escapes
// the workspace"), or "" when it is fine: relative, clean, inside.
func CheckFilePath(p string) string { return checkRelPath(p, "workspace") }
