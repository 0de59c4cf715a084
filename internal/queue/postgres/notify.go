// LISTEN/NOTIFY.
//
// A listener holds a connection of its own, outside the pool (a pooled
// connection goes back to the pool between statements; a listening one must
// not). One goroutine waits for notifications on it and adds their payloads
// to a pending list that drops duplicates; another hands the list out on
// the caller's channel. So a slow consumer never stalls the connection (the
// server would otherwise hold its notification queue for us), and a burst of
// notifications for one queue or job reaches the consumer as one wake-up.
//
// When the connection breaks, the receiver reconnects with backoff and
// LISTENs again; notifications sent in between are lost, so it then delivers
// an empty payload, which means "you may have missed some: re-check
// everything". It does the same if the pending list grows past maxPending.

package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Notification channels. Stores sharing a database share them, whatever
// their schema.
const (
	// ChannelClaimable carries the name of a queue that has a new claimable
	// job.
	ChannelClaimable = "airlock_claimable"
	// ChannelJob carries the decimal ID of a job whose log grew, whose
	// attempt ended, or whose cancellation was requested or done.
	ChannelJob = "airlock_job"
)

// maxPending bounds the distinct payloads a listener keeps for a consumer
// that is not reading; beyond it they collapse into one empty payload.
const maxPending = 4096

// Notify sends payload on channel to every listener of the database (at
// most 8000 bytes; PostgreSQL's limit). A notification may be delivered
// twice if the connection breaks while it is sent.
func (s *Store) Notify(ctx context.Context, channel, payload string) error {
	err := s.retry(ctx, true, maxTries, func() (bool, error) {
		_, err := s.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, channel, payload)
		return false, err
	})
	if err != nil {
		return fmt.Errorf("notifying %s: %w", channel, err)
	}
	return nil
}

// Listen subscribes to channel on a dedicated connection and returns the
// payloads of the notifications sent on it from now on, duplicates that the
// consumer has not yet read merged into one. An empty payload means that
// notifications may have been lost (the connection broke and was made
// again): the consumer must re-check whatever it waits for. The channel is
// closed when ctx ends or the Store is closed. Listen fails only if the
// first connection or LISTEN does; later failures are retried for as long
// as ctx lasts.
func (s *Store) Listen(ctx context.Context, channel string) (<-chan string, error) {
	if channel == "" {
		return nil, errors.New("listening: empty channel name")
	}
	conn, err := s.listenConn(ctx, channel)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", channel, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		cancel()
		closeConn(conn)
		return nil, fmt.Errorf("listening on %s: store is closed", channel)
	}
	s.listeners.Add(2)
	s.mu.Unlock()
	stopWatching := context.AfterFunc(s.closing, cancel)
	l := &listener{queued: make(map[string]bool), wake: make(chan struct{}, 1)}
	out := make(chan string)
	go func() {
		defer s.listeners.Done()
		defer stopWatching()
		s.receive(ctx, conn, channel, l)
	}()
	go func() {
		defer s.listeners.Done()
		defer cancel()
		l.deliver(ctx, out)
	}()
	return out, nil
}

// listenConn opens a connection outside the pool and listens on channel.
func (s *Store) listenConn(ctx context.Context, channel string) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{channel}.Sanitize()); err != nil {
		closeConn(conn)
		return nil, err
	}
	return conn, nil
}

func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = conn.Close(ctx) // closing; nothing to do about a failure
}

// receive waits for notifications on conn until ctx ends, reconnecting when
// the connection breaks.
func (s *Store) receive(ctx context.Context, conn *pgx.Conn, channel string, l *listener) {
	defer func() {
		if conn != nil {
			closeConn(conn)
		}
	}()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err == nil {
			l.add(n.Payload)
			continue
		}
		if ctx.Err() != nil {
			return
		}
		s.logger.Warn("lost the connection listening for notifications; reconnecting", "channel", channel, "error", err)
		closeConn(conn)
		conn = nil
		for try := 1; conn == nil; try++ {
			if sleep(ctx, backoff(try)) != nil {
				return
			}
			if conn, err = s.listenConn(ctx, channel); err != nil {
				s.logger.Debug("reconnecting to listen", "channel", channel, "try", try, "error", err)
			}
		}
		s.logger.Info("listening for notifications again", "channel", channel)
		l.add("") // whatever was sent meanwhile is lost
	}
}

// listener is the pending payloads between receive and deliver.
type listener struct {
	mu      sync.Mutex
	pending []string
	queued  map[string]bool // the payloads in pending
	wake    chan struct{}   // capacity 1: pending has something
}

func (l *listener) add(payload string) {
	l.mu.Lock()
	switch {
	case l.queued[""] || l.queued[payload]:
		// Already pending, or covered by a pending re-check of everything.
	case payload == "" || len(l.pending) >= maxPending:
		clear(l.queued)
		l.pending = append(l.pending[:0], "")
		l.queued[""] = true
	default:
		l.pending = append(l.pending, payload)
		l.queued[payload] = true
	}
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *listener) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.pending
	l.pending = nil
	clear(l.queued)
	return p
}

// deliver hands pending payloads to out until ctx ends, then closes it.
func (l *listener) deliver(ctx context.Context, out chan<- string) {
	defer close(out)
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.wake:
		}
		for _, p := range l.take() {
			select {
			case out <- p:
			case <-ctx.Done():
				return
			}
		}
	}
}

// Peers is what a coordinator replica hears of the others through a Store
// (it satisfies coordinator.Peers).
type Peers struct{ Store *Store }

// Claimable delivers the names of queues that got a claimable job.
func (p Peers) Claimable(ctx context.Context) (<-chan string, error) {
	return p.Store.Listen(ctx, ChannelClaimable)
}

// JobChanges delivers the decimal IDs of jobs that changed.
func (p Peers) JobChanges(ctx context.Context) (<-chan string, error) {
	return p.Store.Listen(ctx, ChannelJob)
}
