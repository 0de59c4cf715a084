package bench

// The stores the API benchmarks run on, side by side in one run, each a
// sub-benchmark store=<kind>:
//
//	sqlite       one coordinator over SQLite in b.TempDir(), the default
//	             deployment.
//	postgres     one coordinator over PostgreSQL, in a schema of its own,
//	             with Peers set as `airlock coordinator --store postgres://…`
//	             sets them (it then also hears its own notifications).
//	postgres-x2  two coordinators (replicas) in this process, each with its
//	             own postgres.Store on the same schema and Peers set, each on
//	             its own loopback listener. A job submitted through one
//	             reaches a claimer parked on the other only through
//	             PostgreSQL's LISTEN/NOTIFY. (Not "postgres-2": go test
//	             appends -GOMAXPROCS to a benchmark's name, and
//	             store=postgres-2 would read as store=postgres on 2 CPUs.)
//
// Every postgres.Store has the pool the real binary has (Options.MaxConns 0:
// pgxpool's default, 4 connections on this 2-core machine) plus its two
// listening connections.
//
// The server is the one AIRLOCK_TEST_POSTGRES names, as for the store's own
// tests. Each benchmark gets a fresh schema with a random name, dropped when
// it ends; without a reachable server the postgres benchmarks skip, saying
// why (benchmarks never run in CI, so there is nothing to fail).
//
// The server's CPU. The backends serving a benchmark's connections are
// processes of the server, which this process's rusage does not see. Their
// connections carry the schema's name as application_name, so
// pg_stat_activity names their process IDs, and when the server runs on this
// machine /proc has their CPU time. The server's shared background processes
// (WAL writer, checkpointer, autovacuum) are not counted.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/airlock-run/airlock/internal/testenv"
)

// Store kinds.
const (
	storeSQLite    = "sqlite"
	storePostgres  = "postgres"
	storePostgres2 = "postgres-x2"
)

// storeKinds are the store kinds the API benchmarks compare, in order.
var storeKinds = []string{storeSQLite, storePostgres, storePostgres2}

// pgBench is one benchmark's schema on the PostgreSQL server.
type pgBench struct {
	dsn    string // the connection string, with application_name = schema
	schema string
	admin  *pgxpool.Pool // outside the stores: drops the schema, finds the backends
}

// newPostgres connects to the server, or skips b if it cannot, and returns a
// fresh schema, dropped when b ends. Stores opened on it must be closed by
// cleanups registered after this call, which run before the drop.
func newPostgres(b *testing.B) *pgBench {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dsn := testenv.PostgresDSN() // the same server as the store's own tests
	// A pool, not a connection, so that the connection string may carry
	// pgxpool's settings (pool_max_conns…) as the coordinator's may.
	admin, err := pgxpool.New(ctx, dsn)
	if err == nil {
		if err = admin.Ping(ctx); err != nil {
			admin.Close()
		}
	}
	if err != nil {
		b.Skipf("PostgreSQL is unavailable at %q (set %s to a connection string): %v", dsn, testenv.PostgresEnv, err)
	}
	var r [6]byte
	rand.Read(r[:])
	schema := "airlock_bench_" + hex.EncodeToString(r[:])
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := admin.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
			b.Errorf("dropping schema %s: %v", schema, err)
		}
		admin.Close()
	})
	return &pgBench{dsn: withParam(dsn, "application_name", schema), schema: schema, admin: admin}
}

// withParam sets a connection parameter in a postgres:// URL or a key=value
// connection string.
func withParam(dsn, key, value string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return dsn // pgx will say what is wrong with it
		}
		q := u.Query()
		q.Set(key, value)
		u.RawQuery = q.Encode()
		return u.String()
	}
	quoted := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(value)
	return dsn + " " + key + "='" + quoted + "'"
}

// serverCPU returns the CPU time (user and system) used so far by each
// server process serving this schema's connections, by process ID, or nil
// when /proc does not show them (a server on another machine).
func (p *pgBench) serverCPU(b *testing.B) map[int]time.Duration {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := p.admin.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE application_name = $1`, p.schema)
	if err != nil {
		b.Fatalf("listing the benchmark's backends: %v", err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		b.Fatalf("listing the benchmark's backends: %v", err)
	}
	cpu := make(map[int]time.Duration, len(pids))
	for _, pid := range pids {
		t, ok := postgresProcessCPU(int(pid))
		if !ok {
			return nil
		}
		cpu[int(pid)] = t
	}
	return cpu
}

// clockTick is the unit of /proc/<pid>/stat's times (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// postgresProcessCPU reads a local PostgreSQL process's CPU time from /proc.
func postgresProcessCPU(pid int) (time.Duration, bool) {
	dir := "/proc/" + strconv.Itoa(pid)
	comm, err := os.ReadFile(dir + "/comm")
	if err != nil || strings.TrimSpace(string(comm)) != "postgres" {
		return 0, false
	}
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return 0, false
	}
	// Fields after "(comm)": state is field 3, utime 14 and stime 15.
	s := string(stat)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(utime+stime) * clockTick, true
}

// cpuSince sums the CPU the processes of after used since before; a process
// not in before started since, and counts from zero.
func cpuSince(before, after map[int]time.Duration) time.Duration {
	var d time.Duration
	for pid, t := range after {
		d += t - before[pid]
	}
	return d
}
