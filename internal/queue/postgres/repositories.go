package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

const repositoryColumns = `remote, created_at, updated_at`

// PutRepository implements queue.Store.
func (s *Store) PutRepository(ctx context.Context, r job.Remote) (*queue.Repository, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("registering repository %q: %w", r.Name, err)
	}
	var out *queue.Repository
	err = s.tx(ctx, replayable, func(ctx context.Context, tx *txn) error {
		var err error
		out, err = scanRepository(tx.QueryRow(ctx, `INSERT INTO repositories (name, remote, created_at, updated_at)
			VALUES ($1, $2, $3, $3)
			ON CONFLICT (name) DO UPDATE SET remote = excluded.remote, updated_at = excluded.updated_at
			RETURNING `+repositoryColumns, r.Name, string(b), tx.now))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("registering repository %q: %w", r.Name, err)
	}
	return out, nil
}

// Repository implements queue.Store.
func (s *Store) Repository(ctx context.Context, name string) (*queue.Repository, error) {
	var r *queue.Repository
	err := s.read(ctx, func(ctx context.Context, q querier) error {
		var err error
		r, err = scanRepository(q.QueryRow(ctx, `SELECT `+repositoryColumns+` FROM repositories WHERE name = $1`, name))
		if errors.Is(err, pgx.ErrNoRows) {
			return queue.ErrNotFound
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("reading repository %q: %w", name, err)
	}
	return r, nil
}

// Repositories implements queue.Store.
func (s *Store) Repositories(ctx context.Context) ([]queue.Repository, error) {
	var out []queue.Repository
	err := s.read(ctx, func(ctx context.Context, q querier) error {
		out = nil
		rows, err := q.Query(ctx, `SELECT `+repositoryColumns+` FROM repositories ORDER BY name`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			r, err := scanRepository(rows)
			if err != nil {
				return err
			}
			out = append(out, *r)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("listing repositories: %w", err)
	}
	return out, nil
}

// DeleteRepository implements queue.Store.
func (s *Store) DeleteRepository(ctx context.Context, name string) error {
	err := s.tx(ctx, once, func(ctx context.Context, tx *txn) error {
		tag, err := tx.Exec(ctx, `DELETE FROM repositories WHERE name = $1`, name)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return queue.ErrNotFound
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("removing repository %q: %w", name, err)
	}
	return nil
}

func scanRepository(row scanner) (*queue.Repository, error) {
	var (
		remote           []byte
		created, updated pgtype.Timestamptz
		r                queue.Repository
	)
	if err := row.Scan(&remote, &created, &updated); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(remote, &r.Remote); err != nil {
		return nil, fmt.Errorf("decoding repository: %w", err)
	}
	r.CreatedAt, r.UpdatedAt = ts(created), ts(updated)
	return &r, nil
}
