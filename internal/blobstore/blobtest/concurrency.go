package blobtest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/airlock-run/airlock/internal/blobstore"
)

var concurrencyCases = []testCase{
	{"concurrent puts of one key leave one whole blob, and readers see whole blobs", func(t *testing.T, h *harness) {
		const writers = 8
		versions := make(map[string]bool) // content → true
		contents := make([]string, writers)
		for i := range contents {
			contents[i] = strings.Repeat(fmt.Sprintf("writer %d; ", i), 8000+i*100)
			versions[contents[i]] = true
		}

		var wg sync.WaitGroup
		done := make(chan struct{})
		for i := range writers {
			wg.Go(func() {
				r := &chunkReader{r: strings.NewReader(contents[i]), n: 1500 + i}
				if _, err := h.store.Put(h.ctx, "jobs/1/k", r, 0); err != nil {
					t.Errorf("writer %d: %v", i, err)
				}
			})
		}
		var readers sync.WaitGroup
		for range 2 {
			readers.Go(func() {
				for {
					select {
					case <-done:
						return
					default:
					}
					got, info, err := h.tryGet("jobs/1/k")
					if errors.Is(err, blobstore.ErrNotFound) {
						continue
					}
					if err != nil {
						t.Errorf("Get during puts: %v", err)
						return
					}
					if !versions[got] {
						t.Errorf("Get during puts returned %s, which no writer wrote", abbrev(got))
						return
					}
					if sum := sha256.Sum256([]byte(got)); hex.EncodeToString(sum[:]) != info.SHA256 {
						t.Errorf("Get during puts returned an Info that does not match its content")
						return
					}
				}
			})
		}
		wg.Wait()
		close(done)
		readers.Wait()

		got, info := h.get("jobs/1/k")
		if !versions[got] {
			t.Fatalf("after concurrent puts the blob is %s, which no writer wrote", abbrev(got))
		}
		if want := infoOf("jobs/1/k", got); info.Size != want.Size || info.SHA256 != want.SHA256 {
			t.Errorf("Info after concurrent puts = size %d sha256 %s, want size %d sha256 %s", info.Size, info.SHA256, want.Size, want.SHA256)
		}
		if keys := h.keys("", 0); len(keys) != 1 {
			t.Errorf("List after concurrent puts of one key = %q, want one key", keys)
		}
	}},
	{"concurrent puts, deletes and lists of neighbouring keys", func(t *testing.T, h *harness) {
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				for i := range 20 {
					key := fmt.Sprintf("jobs/%d/%d/blob", w, i%3)
					if _, err := h.store.Put(h.ctx, key, strings.NewReader(key), 0); err != nil {
						t.Errorf("Put(%q): %v", key, err)
						return
					}
					if i%2 == 0 {
						if err := h.store.Delete(h.ctx, key); err != nil {
							t.Errorf("Delete(%q): %v", key, err)
							return
						}
					}
					if i%5 == 0 {
						if _, err := h.store.DeletePrefix(h.ctx, fmt.Sprintf("jobs/%d/", w)); err != nil {
							t.Errorf("DeletePrefix: %v", err)
							return
						}
					}
					if _, err := h.store.List(h.ctx, blobstore.ListParams{Prefix: "jobs/"}); err != nil {
						t.Errorf("List: %v", err)
						return
					}
				}
			})
		}
		wg.Wait()
		// Worker w ends with i = 19: it put jobs/w/1/blob (19%3 = 1) and kept it.
		for w := range 4 {
			key := fmt.Sprintf("jobs/%d/1/blob", w)
			h.wantContent(key, key)
		}
		for _, key := range h.keys("", 0) {
			h.wantContent(key, key)
		}
	}},
}
