// Background WAL checkpoints.
//
// In WAL mode every committed page is written twice: to the WAL at commit,
// and into the database file by a checkpoint, which also syncs both files.
// Left to itself SQLite runs the checkpoint inside the commit that pushes the
// WAL past wal_autocheckpoint pages, so every few megabytes one unlucky write
// pays for copying and syncing everything written since the last one.
//
// The store turns that off on its write connection and runs checkpoints on a
// connection of their own. Writers count roughly what they commit; past
// checkpointEvery bytes the checkpointer runs a PASSIVE checkpoint, which
// copies what it can without blocking anyone while the writer goes on.
//
// A passive checkpoint cannot let the WAL start over while writes keep
// coming, so once the WAL holds more than walRestartBytes the checkpointer
// follows it with a RESTART checkpoint, which holds writers back while it
// copies the little the passive one left; the next write then starts the WAL
// from the beginning. Log bytes do not pass through SQLite (see logfiles.go),
// so every write is a few pages and none can outrun the checkpointer.

package sqlite

import (
	"context"
	"database/sql"
	"log/slog"
	"sync"
)

const (
	// checkpointEvery is how many bytes (roughly) are written between
	// background checkpoints.
	checkpointEvery = 8 << 20
	// walRestartBytes is the WAL size past which a checkpoint makes the WAL
	// start over.
	walRestartBytes = 64 << 20
	// txOverhead is what a write transaction counts as: a few pages of the
	// WAL.
	txOverhead = 4 * pageSize
)

type checkpointer struct {
	db     *sql.DB
	logger *slog.Logger
	kick   chan struct{} // buffered: a checkpoint is wanted
	done   chan struct{} // closed by stop
	wg     sync.WaitGroup

	mu      sync.Mutex
	pending int64 // bytes committed since the running or last checkpoint began
}

func startCheckpointer(db *sql.DB, logger *slog.Logger) *checkpointer {
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	c := &checkpointer{db: db, logger: logger, kick: make(chan struct{}, 1), done: make(chan struct{})}
	c.wg.Go(c.run)
	return c
}

// wrote counts n bytes committed and wakes the checkpointer once enough have
// been. Safe on a nil checkpointer (during migrations).
func (c *checkpointer) wrote(n int) {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.pending += int64(n)
	wake := c.pending >= checkpointEvery
	c.mu.Unlock()
	if wake {
		select {
		case c.kick <- struct{}{}:
		default: // already asked
		}
	}
}

func (c *checkpointer) run() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var pageSize int64
	if err := c.db.QueryRowContext(ctx, "PRAGMA page_size").Scan(&pageSize); err != nil {
		c.logger.Warn("reading the queue database's page size", "error", err)
		pageSize = 4096
	}
	for {
		select {
		case <-c.done:
			return
		case <-c.kick:
		}
		c.mu.Lock()
		c.pending = 0
		c.mu.Unlock()

		frames, err := c.checkpoint(ctx, "PASSIVE")
		if err == nil && frames*pageSize > walRestartBytes {
			_, err = c.checkpoint(ctx, "RESTART")
		}
		if err != nil {
			c.logger.Warn("checkpointing the queue database", "error", err)
		}
	}
}

// checkpoint runs one checkpoint and returns how many frames the WAL held.
func (c *checkpointer) checkpoint(ctx context.Context, mode string) (frames int64, err error) {
	var busy, done int64
	err = c.db.QueryRowContext(ctx, "PRAGMA wal_checkpoint("+mode+")").Scan(&busy, &frames, &done)
	return frames, err
}

func (c *checkpointer) stop() error {
	close(c.done)
	c.wg.Wait()
	return c.db.Close()
}
