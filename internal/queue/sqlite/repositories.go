package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

var (
	qPutRepository = prepared(`INSERT INTO repositories (name, remote, created_at, updated_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET remote = excluded.remote, updated_at = excluded.updated_at
		RETURNING remote, created_at, updated_at`)
	qRepository       = prepared(`SELECT remote, created_at, updated_at FROM repositories WHERE name = ?`)
	qRepositories     = prepared(`SELECT remote, created_at, updated_at FROM repositories ORDER BY name`)
	qDeleteRepository = prepared(`DELETE FROM repositories WHERE name = ?`)
)

// PutRepository implements queue.Store.
func (s *Store) PutRepository(ctx context.Context, r job.Remote) (*queue.Repository, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("registering repository %q: %w", r.Name, err)
	}
	var out *queue.Repository
	err = s.write(ctx, func(tx txn, now int64) error {
		var err error
		out, err = scanRepository(tx.QueryRowContext(ctx, qPutRepository, r.Name, string(b), now, now))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("registering repository %q: %w", r.Name, err)
	}
	return out, nil
}

// Repository implements queue.Store.
func (s *Store) Repository(ctx context.Context, name string) (*queue.Repository, error) {
	r, err := scanRepository(s.rstmts[qRepository].QueryRowContext(ctx, name))
	if errors.Is(err, sql.ErrNoRows) {
		err = queue.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading repository %q: %w", name, err)
	}
	return r, nil
}

// Repositories implements queue.Store.
func (s *Store) Repositories(ctx context.Context) ([]queue.Repository, error) {
	rows, err := s.rstmts[qRepositories].QueryContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing repositories: %w", err)
	}
	defer rows.Close()
	var out []queue.Repository
	for rows.Next() {
		r, err := scanRepository(rows)
		if err != nil {
			return nil, fmt.Errorf("listing repositories: %w", err)
		}
		out = append(out, *r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing repositories: %w", err)
	}
	return out, nil
}

// DeleteRepository implements queue.Store.
func (s *Store) DeleteRepository(ctx context.Context, name string) error {
	err := s.write(ctx, func(tx txn, now int64) error {
		res, err := tx.ExecContext(ctx, qDeleteRepository, name)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return queue.ErrNotFound
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("removing repository %q: %w", name, err)
	}
	return nil
}

func scanRepository(row interface{ Scan(...any) error }) (*queue.Repository, error) {
	var (
		remote           string
		created, updated int64
		r                queue.Repository
	)
	if err := row.Scan(&remote, &created, &updated); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(remote), &r.Remote); err != nil {
		return nil, fmt.Errorf("decoding repository: %w", err)
	}
	r.CreatedAt, r.UpdatedAt = fromNanos(created), fromNanos(updated)
	return &r, nil
}
