package netpolicy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/airlock-run/airlock/internal/sandbox"
)

// RemoveLeftovers deletes the network state of every sandbox that is
// neither open in this Manager nor kept by keep (nil keeps none): namespace
// files in Options.NetnsDir, sandbox links in the host namespace, and their
// rules. It finds sandboxes by the names on what they left — file names,
// link aliases, chain names — and also deletes sandbox links and files that
// carry no valid name. It returns every failure; what it could remove is
// removed.
func (m *Manager) RemoveLeftovers(ctx context.Context, keep func(name string) bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	host, err := m.openHost()
	if err != nil {
		return err
	}
	defer host.close()

	var errs []error
	names := map[string]bool{}
	chains, err := sandboxChains(host.nft)
	if err != nil {
		errs = append(errs, err)
	}
	for _, n := range chains {
		names[n] = true
	}
	links, err := retryDump(host.link.LinkList)
	if err != nil {
		errs = append(errs, fmt.Errorf("listing host interfaces: %w", err))
	}
	for _, l := range links {
		a := l.Attrs()
		if !strings.HasPrefix(a.Name, VethPrefix) {
			continue
		}
		if sandbox.ValidName(a.Alias) == nil && VethName(a.Alias) == a.Name {
			names[a.Alias] = true
			continue
		}
		m.log.Info("removing a sandbox link without a sandbox name", "link", a.Name, "alias", a.Alias)
		if err := host.link.LinkDel(l); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting link %s: %w", a.Name, err))
		}
	}
	entries, err := os.ReadDir(m.opts.NetnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("listing namespace files: %w", err))
	}
	for _, e := range entries {
		if sandbox.ValidName(e.Name()) == nil {
			names[e.Name()] = true
			continue
		}
		if err := RemoveNamespace(filepath.Join(m.opts.NetnsDir, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}

	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	slices.Sort(sorted)
	for _, name := range sorted {
		if keep != nil && keep(name) {
			continue
		}
		m.mu.Lock()
		busy := m.busy[name]
		m.busy[name] = true
		m.mu.Unlock()
		if busy {
			continue
		}
		m.log.Info("removing a leftover sandbox network", "sandbox", name)
		if err := m.remove(name, netip.Addr{}); err != nil {
			errs = append(errs, err)
		}
		m.mu.Lock()
		delete(m.busy, name)
		m.mu.Unlock()
	}
	return errors.Join(errs...)
}
