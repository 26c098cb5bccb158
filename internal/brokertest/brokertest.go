// Package brokertest holds what the tests of the broker kinds share: the
// servers on loopback that .ci/services starts, and the clean-up of what a
// test created there.
package brokertest

import (
	"context"
	"database/sql"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The servers the integration tests use (.ci/services starts them).
const (
	RedisAddr   = "127.0.0.1:6379"
	PostgresDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	MySQLDSN    = "root@tcp(127.0.0.1:3306)/test"
)

// DropTables drops the tables of the current schema (PostgreSQL) or
// database (MySQL) whose names start with prefix.
func DropTables(db *sql.DB, driver, prefix string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	q := `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_name LIKE $1`
	quote := func(s string) string { return `"` + s + `"` }
	if driver == "mysql" {
		q = "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name LIKE ?"
		quote = func(s string) string { return "`" + s + "`" }
	}
	rows, err := db.QueryContext(ctx, q, prefix+"%")
	if err != nil {
		return err
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return err
		}
		names = append(names, quote(n))
	}
	rows.Close()
	if len(names) == 0 {
		return nil
	}
	_, err = db.ExecContext(ctx, "DROP TABLE IF EXISTS "+strings.Join(names, ", "))
	return err
}

// DropKeys deletes the Redis keys (streams) whose names start with prefix.
func DropKeys(cl *redis.Client, prefix string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	keys, err := cl.Keys(ctx, prefix+"*").Result()
	if err != nil || len(keys) == 0 {
		return err
	}
	return cl.Del(ctx, keys...).Err()
}
