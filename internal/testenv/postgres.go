package testenv

import "os"

// PostgresEnv names the PostgreSQL server tests use, as a connection string
// (a postgres:// URL or key=value pairs). scripts/test sets it after starting
// the local cluster.
const PostgresEnv = "AIRLOCK_TEST_POSTGRES"

// DefaultPostgres is the server tests use when PostgresEnv is unset: the
// local cluster over its Unix socket, as root, which scripts/test sets up.
const DefaultPostgres = "host=/var/run/postgresql user=root dbname=postgres"

// PostgresDSN is the connection string of the tests' PostgreSQL server. Tests
// make their own schema or database in it and drop it afterwards; a server
// they cannot reach is testenv.Missing.
func PostgresDSN() string {
	if s := os.Getenv(PostgresEnv); s != "" {
		return s
	}
	return DefaultPostgres
}
