package runtimes

import (
	"os"

	"github.com/airlock-run/airlock/internal/sandbox/oci"
)

// Item is one thing a runtime needs, and whether this host has it.
type Item struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// Report is what a runtime needs and has on this host.
type Report struct {
	Runtime  string `json:"runtime"`
	Isolates bool   `json:"isolates"`
	Ready    bool   `json:"ready"` // every item is OK
	Items    []Item `json:"items"`
}

// Check reports, for every runtime this build knows, what is present and
// what is missing on this host. It changes nothing.
func Check(opts Options) []Report {
	var out []Report
	for _, name := range Names() {
		r := Report{Runtime: name, Isolates: known[name].isolates}
		switch name {
		case "shell":
			_, err := os.Stat("/bin/sh")
			r.Items = append(r.Items, Item{Name: "/bin/sh", OK: err == nil, Detail: errText(err)})
			_, err = os.Stat("/proc/self/environ")
			r.Items = append(r.Items, Item{Name: "/proc (process sweep)", OK: err == nil, Detail: errText(err)})
			r.Items = append(r.Items, Item{Name: "isolation", OK: true, Detail: "none: development only"})
		case oci.Name:
			for _, it := range oci.Check(oci.Options{Root: opts.WorkRoot, Binary: opts.OCIBinary}) {
				r.Items = append(r.Items, Item{Name: it.Name, OK: it.OK, Detail: it.Detail})
			}
			r.Items = append(r.Items, Item{Name: "image source", OK: false,
				Detail: "not wired into the executor yet (sandboxes issue)"})
		}
		r.Ready = true
		for _, it := range r.Items {
			r.Ready = r.Ready && it.OK
		}
		out = append(out, r)
	}
	return out
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
