package runtimes

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/airlock-run/airlock/internal/netpolicy"
	"github.com/airlock-run/airlock/internal/sandbox/gvisor"
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
	var shared []Item
	containerItems := func() []Item {
		if shared == nil {
			shared = append(shared, workDirItem(opts.WorkRoot), overlayItem())
			nopts, err := opts.networkOptions()
			if err != nil {
				shared = append(shared, Item{Name: "egress policy", Detail: err.Error()})
			}
			for _, it := range netpolicy.Check(nopts) {
				shared = append(shared, Item{Name: "egress: " + it.Name, OK: it.OK, Detail: it.Detail})
			}
		}
		return shared
	}
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
			for _, it := range oci.Check(oci.Options{Root: filepath.Join(opts.WorkRoot, "oci"), Binary: opts.OCIBinary, Init: opts.Init}) {
				r.Items = append(r.Items, Item{Name: it.Name, OK: it.OK, Detail: it.Detail})
			}
			r.Items = append(r.Items, containerItems()...)
		case gvisor.Name:
			for _, it := range gvisor.Check(gvisor.Options{Root: filepath.Join(opts.WorkRoot, "gvisor"), Runsc: opts.Runsc, Platform: opts.GVisorPlatform, Init: opts.Init}) {
				r.Items = append(r.Items, Item{Name: it.Name, OK: it.OK, Detail: it.Detail})
			}
			r.Items = append(r.Items, containerItems()...)
		}
		r.Ready = true
		for _, it := range r.Items {
			r.Ready = r.Ready && it.OK
		}
		out = append(out, r)
	}
	return out
}

// workDirItem reports whether the directories above the work directory
// let containers reach their mounts from a user namespace (the executor
// makes the work directory itself mode 0711).
func workDirItem(dir string) Item {
	it := Item{Name: "work directory", OK: true, Detail: dir}
	if dir == "" {
		return it
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Item{Name: "work directory", Detail: err.Error()}
	}
	for p := filepath.Dir(abs); ; p = filepath.Dir(p) {
		if fi, err := os.Stat(p); err == nil && fi.Mode().Perm()&0o001 == 0 {
			return Item{Name: "work directory", Detail: fmt.Sprintf("%s is mode %v: every directory above the work directory must be searchable by others (chmod o+x), since containers reach their mounts from a user namespace", p, fi.Mode().Perm())}
		}
		if p == "/" {
			return it
		}
	}
}

// overlayItem reports whether the kernel has overlayfs, which the image
// overlays of the container runtimes need.
func overlayItem() Item {
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return Item{Name: "overlayfs", Detail: err.Error()}
	}
	if !strings.Contains(string(b), "\toverlay\n") {
		return Item{Name: "overlayfs", Detail: "the kernel has no overlay file system (modprobe overlay)"}
	}
	return Item{Name: "overlayfs", OK: true}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
