package sqlite

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
)

// These tests drive the group-commit path directly: many concurrent write
// transactions, some failing, some panicking, some cancelled, must each be
// applied or not exactly as if each had its own transaction.

func openForTest(t *testing.T) *Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "q.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.write(context.Background(), func(tx txn, now int64) error {
		_, err := tx.ExecContext(context.Background(), `CREATE TABLE gc (k INTEGER PRIMARY KEY)`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return s
}

func count(t *testing.T, s *Store) map[int]bool {
	t.Helper()
	rows, err := s.w.Query(`SELECT k FROM gc`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[int]bool{}
	for rows.Next() {
		var k int
		rows.Scan(&k)
		got[k] = true
	}
	return got
}

func TestGroupCommitAppliesEachTransactionOnItsOwnMerits(t *testing.T) {
	s := openForTest(t)
	const n = 400
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ctx := context.Background()
			if i%7 == 3 {
				ctx = cancelled
			}
			errs[i] = s.write(ctx, func(tx txn, now int64) error {
				// Two inserts: a failure after the first must undo it.
				if _, err := tx.ExecContext(context.Background(), `INSERT INTO gc (k) VALUES (?)`, i); err != nil {
					return err
				}
				switch i % 7 {
				case 1:
					return fmt.Errorf("transaction %d refuses", i)
				case 2:
					panic("transaction panics")
				case 4:
					// A constraint error inside the batch: a duplicate key.
					_, err := tx.ExecContext(context.Background(), `INSERT INTO gc (k) VALUES (?)`, i)
					return err
				}
				_, err := tx.ExecContext(context.Background(), `INSERT INTO gc (k) VALUES (?)`, n+i)
				return err
			})
		}(i)
	}
	wg.Wait()
	got := count(t, s)
	for i := 0; i < n; i++ {
		ok := i%7 == 0 || i%7 >= 5
		if (errs[i] == nil) != ok {
			t.Errorf("transaction %d: error %v, want success %v", i, errs[i], ok)
		}
		if got[i] != ok || got[n+i] != ok {
			t.Errorf("transaction %d: rows present %v/%v, want %v (all or nothing)", i, got[i], got[n+i], ok)
		}
		if i%7 == 3 && !errors.Is(errs[i], context.Canceled) {
			t.Errorf("transaction %d with a cancelled context: error %v, want context.Canceled", i, errs[i])
		}
	}
	// The write path is not wedged by the panics.
	if err := s.write(context.Background(), func(tx txn, now int64) error { return nil }); err != nil {
		t.Fatalf("write after the batch: %v", err)
	}
}
