package kinds

import (
	"strings"
	"testing"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
)

// The insert lock is named after the table the adapter's INSERT writes,
// qualified or not; other statements take none; an INSERT the sink cannot
// read is refused rather than run without the lock.
func TestMySQLInsertLockName(t *testing.T) {
	e := &mysqlOrderedInserts{database: "app"}
	for _, c := range []struct {
		schema, table, want string
	}{
		{"", "orders", "loombridge.sql.app.orders"},
		{"other", "orders", "loombridge.sql.other.orders"},
	} {
		tbl := SQLTable{Table: c.table, Schema: c.schema, PayloadType: "LONGBLOB"}
		schema, _ := tbl.adapters("mysql", 0)
		q, err := schema.InsertQuery(wsql.InsertQueryParams{Topic: c.table, Msgs: message.Messages{message.NewMessage("u", nil)}})
		if err != nil {
			t.Fatal(err)
		}
		got, err := e.insertLock(q.Query)
		if err != nil || got != c.want {
			t.Errorf("schema %q table %q: lock %q, %v; want %q", c.schema, c.table, got, err, c.want)
		}
	}
	if got, err := e.insertLock("CREATE TABLE IF NOT EXISTS `orders` (x INT)"); got != "" || err != nil {
		t.Errorf("CREATE TABLE: lock %q, %v; want none", got, err)
	}
	if _, err := e.insertLock("INSERT INTO orders (uuid) VALUES (?)"); err == nil {
		t.Error("an INSERT of another form was not refused")
	}
	long := mysqlInsertLockName(strings.Repeat("d", 64), strings.Repeat("t", 55))
	if len(long) > 64 || long == mysqlInsertLockName(strings.Repeat("d", 64), strings.Repeat("t", 54)) {
		t.Errorf("long names: %q (%d characters) must fit 64 and stay distinct", long, len(long))
	}
}
