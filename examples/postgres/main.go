// The Go side of examples/postgres: PostgreSQL through pgx, a driver whose
// calls block, kept off the Python program's Trio loop. Each call runs on a
// goroutine of its own, with a connection from pgx's pool, and its context is
// the Python caller's: a Trio timeout cancels the query on the server.
// Run it with: python examples/postgres/events.py
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/trio-gotask/trio-gotask/go/gotask"
)

// DB serves queries over a table of events.
type DB struct {
	pool *pgxpool.Pool
}

// Event is one row of the table; the msgpack tags are the keys Python sees.
type Event struct {
	ID   int64     `db:"id" msgpack:"id"`
	User int32     `db:"user_id" msgpack:"user"`
	Kind string    `db:"kind" msgpack:"kind"`
	At   time.Time `db:"at" msgpack:"at"`
}

// Seed recreates the table gotask_example_events with n events spread over
// 50 users and the last 30 days, loaded with COPY, and indexes it by user.
func (d *DB) Seed(ctx context.Context, n int, loaded *int64) error {
	if _, err := d.pool.Exec(ctx, `
		DROP TABLE IF EXISTS gotask_example_events;
		CREATE TABLE gotask_example_events (
			id bigint PRIMARY KEY, user_id int NOT NULL, kind text NOT NULL, at timestamptz NOT NULL);`); err != nil {
		return err
	}
	kinds := []string{"login", "view", "search", "purchase", "logout"}
	random := rand.New(rand.NewPCG(1, 2))
	start := time.Now().Add(-30 * 24 * time.Hour)
	rows := pgx.CopyFromSlice(n, func(i int) ([]any, error) {
		at := start.Add(time.Duration(random.Int64N(int64(30 * 24 * time.Hour))))
		return []any{int64(i + 1), int32(random.IntN(50) + 1), kinds[random.IntN(len(kinds))], at}, nil
	})
	var err error
	*loaded, err = d.pool.CopyFrom(ctx, pgx.Identifier{"gotask_example_events"}, []string{"id", "user_id", "kind", "at"}, rows)
	if err != nil {
		return err
	}
	_, err = d.pool.Exec(ctx, `CREATE INDEX ON gotask_example_events (user_id, at); ANALYZE gotask_example_events`)
	return err
}

// Recent returns the latest five events of a user: a quick, indexed query.
func (d *DB) Recent(ctx context.Context, user int32, events *[]Event) error {
	rows, err := d.pool.Query(ctx, `
		SELECT id, user_id, kind, at FROM gotask_example_events
		WHERE user_id = $1 ORDER BY at DESC LIMIT 5`, user)
	if err != nil {
		return err
	}
	*events, err = pgx.CollectRows(rows, pgx.RowToStructByName[Event])
	return err
}

// Busy is a row of Report: a user and how many pairs of their events lie
// within an hour of each other.
type Busy struct {
	User  int32 `db:"user_id" msgpack:"user"`
	Pairs int64 `db:"pairs" msgpack:"pairs"`
}

// reportTag begins the text of Report's query, for ReportRunning to find it
// in pg_stat_activity, among the queries of every other process too.
var reportTag = fmt.Sprintf("/* gotask example: DB.Report of sidecar %d */", os.Getpid())

// Report counts, for each user, the pairs of events less than an hour apart.
// Written as a self-join on user_id, it compares every pair of a user's
// events: a minute of work on a big table, the kind of query a timeout is for.
// It goes as one message (the simple protocol): from when pg_stat_activity
// shows it running until it ends, a cancel request stops it. (With the
// extended protocol, pgx first prepares it, and a cancel request that arrives
// between preparing and running is ignored.)
func (d *DB) Report(ctx context.Context, _ any, report *[]Busy) error {
	rows, err := d.pool.Query(ctx, reportTag+`
		SELECT a.user_id, count(*) AS pairs
		FROM gotask_example_events a JOIN gotask_example_events b
			ON a.user_id = b.user_id AND a.id < b.id AND abs(extract(epoch FROM a.at - b.at)) < 3600
		GROUP BY a.user_id ORDER BY pairs DESC`, pgx.QueryExecModeSimpleProtocol)
	if err == nil {
		*report, err = pgx.CollectRows(rows, pgx.RowToStructByName[Busy])
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "57014" { // query_canceled
		log.Printf("DB.Report: PostgreSQL stopped the query: %v", err)
	}
	return err
}

// ReportRunning waits until PostgreSQL runs Report's query (running is true)
// or runs it no more (false), as pg_stat_activity shows, which it reads every
// 10 ms: the server announces neither.
func (d *DB) ReportRunning(ctx context.Context, running bool, _ *struct{}) error {
	for {
		var n int
		if err := d.pool.QueryRow(ctx, `
			SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND starts_with(query, $1)`,
			reportTag).Scan(&n); err != nil {
			return err
		}
		if (n > 0) == running {
			return nil
		}
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func main() {
	log.SetFlags(0)
	// An empty DATABASE_URL lets pgx read PGHOST, PGUSER, PGDATABASE... as libpq does.
	config, err := pgxpool.ParseConfig(os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatalf("DATABASE_URL: %v", err)
	}
	// pgx's default answer to a cancelled context is to drop the connection,
	// which leaves the server running the query. Ask the server to cancel it
	// instead, and drop the connection only if the server has not answered
	// within a minute: a loaded server may be slow to.
	config.ConnConfig.BuildContextWatcherHandler = func(conn *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: conn, DeadlineDelay: time.Minute}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, config)
	if err == nil {
		err = pool.Ping(ctx) // fail at start, where the message reaches the user, not at the first call
	}
	if err != nil {
		log.Fatalf("cannot connect to PostgreSQL: %v; set DATABASE_URL (postgres://user:password@host:5432/dbname) or PGHOST, PGUSER...", err)
	}
	if err := gotask.Register(&DB{pool: pool}); err != nil {
		log.Fatal(err)
	}
	gotask.Run()
}
