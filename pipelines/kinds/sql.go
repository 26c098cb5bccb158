package kinds

import (
	"cmp"
	"context"
	"crypto/sha256"
	stdsql "database/sql"
	"database/sql/driver"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver

	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/pipelines"
)

// SQL is a table of messages in PostgreSQL or MySQL/MariaDB over
// watermill-sql (its default schema and offsets adapters), as source (a
// consumer group whose offset is kept in <table>_offsets) or sink (INSERT):
//
//	connections:
//	  pg: {type: sql, driver: postgres, dsn_file: /run/secrets/pg_dsn}
//	pipelines:
//	  in: {from: {type: sql, connection: pg, table: orders}, to: ...}
//
// A row has the columns offset, uuid (VARCHAR(36)), created_at, payload
// (BYTEA on PostgreSQL, LONGBLOB on MySQL, so binary payloads cross byte for
// byte; the adapter's own default is JSON), metadata (JSON, loom_key in it)
// and, on PostgreSQL, transaction_id. Tables are created when the source or
// sink starts (initialize_schema: false leaves that to you).
var SQL = pipelines.Kind{
	Name:       "sql",
	Summary:    "a PostgreSQL or MySQL/MariaDB table used as a queue (watermill-sql)",
	Source:     func() pipelines.SourceConfig { return &SQLSource{} },
	Sink:       func() pipelines.SinkConfig { return &SQLSink{} },
	Connection: func() pipelines.ConnectionConfig { return &SQLConnection{} },
}

// Limits and defaults of the sql kind.
const (
	// SQLMaxUUIDLength is the width of the adapter's uuid column.
	SQLMaxUUIDLength = 36
	// SQLPostgresMaxMessageBytes is PostgreSQL's limit on one field (1 GB),
	// which the payload column is.
	SQLPostgresMaxMessageBytes = 1<<30 - 1
	// SQLDefaultSubscribeBatchSize is subscribe_batch_size when 0 (the
	// adapter's own default is 100). The adapter reads a batch in one
	// transaction that stays open until the pipeline handled every message
	// of it. On PostgreSQL that transaction holds pg_snapshot_xmin back for
	// the whole server, so no sql source there reads a newer row before it
	// ends; on MySQL its gap locks hold the sinks' INSERTs into that table.
	// Ten messages a transaction keep that short at little cost (one more
	// query per ten messages).
	SQLDefaultSubscribeBatchSize = 10
	// SQLDefaultMaxIdleConns is max_idle_conns when 0: a pipeline's
	// default concurrency, so that a busy sink keeps its connections
	// (database/sql's own default of 2 had PostgreSQL start a backend for
	// most INSERTs: 4,000 rows from 48 goroutines took 24 s instead of 3).
	SQLDefaultMaxIdleConns = 64
	// sqlPacketReserve is what a MySQL INSERT needs beside payload and
	// metadata within max_allowed_packet.
	sqlPacketReserve = 1 << 10
)

// sqlColumnType is what payload_type may be: a column type, not SQL to inject.
var sqlColumnType = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9 ()]*$`)

var sqlIdent = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// SQLConnection is a database: driver postgres (pgx) or mysql (MariaDB too),
// and a DSN, given or read from dsn_file. The DSN never appears in logs or
// errors.
type SQLConnection struct {
	Driver          string        `koanf:"driver"`
	DSN             client.Secret `koanf:"dsn"`
	DSNFile         string        `koanf:"dsn_file"`
	MaxOpenConns    int           `koanf:"max_open_conns"`
	MaxIdleConns    int           `koanf:"max_idle_conns"`
	ConnMaxLifetime time.Duration `koanf:"conn_max_lifetime"`
}

// Check implements pipelines.ConnectionConfig.
func (c *SQLConnection) Check() error {
	var errs []error
	if c.Driver != "postgres" && c.Driver != "mysql" {
		errs = append(errs, fmt.Errorf("driver: must be postgres or mysql (MariaDB too), got %q", c.Driver))
	}
	dsn, err := secretOrFile("dsn", c.DSN, c.DSNFile)
	switch {
	case err != nil:
		errs = append(errs, err)
	case dsn == "":
		errs = append(errs, errors.New("dsn: set dsn or dsn_file"))
	case c.Driver == "mysql":
		if _, err := mysql.ParseDSN(string(dsn)); err != nil {
			errs = append(errs, errors.New("dsn: not a MySQL DSN (user:password@tcp(host:3306)/db)"))
		}
	}
	if c.MaxOpenConns < 0 || c.MaxIdleConns < 0 || c.ConnMaxLifetime < 0 {
		errs = append(errs, errors.New("max_open_conns, max_idle_conns, conn_max_lifetime: must not be negative"))
	}
	return errors.Join(errs...)
}

// Open opens a pool of its own for one publisher or subscriber.
func (c *SQLConnection) Open() (*stdsql.DB, error) {
	dsn, err := secretOrFile("dsn", c.DSN, c.DSNFile)
	if err != nil {
		return nil, err
	}
	driver := "pgx"
	if c.Driver == "mysql" {
		driver = "mysql"
	}
	db, err := stdsql.Open(driver, string(dsn))
	if err != nil {
		return nil, redactDSN(err, string(dsn))
	}
	db.SetMaxOpenConns(c.MaxOpenConns)
	idle := c.MaxIdleConns
	idle = cmp.Or(idle, SQLDefaultMaxIdleConns)
	db.SetMaxIdleConns(idle)
	db.SetConnMaxLifetime(c.ConnMaxLifetime)
	return db, nil
}

// redactDSN removes the DSN and its password from a driver's error.
func redactDSN(err error, dsn string) error {
	if err == nil {
		return nil
	}
	s := err.Error()
	secrets := []string{dsn}
	if u, perr := url.Parse(dsn); perr == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok {
			secrets = append(secrets, pw, url.QueryEscape(pw))
		}
	}
	if cfg, perr := mysql.ParseDSN(dsn); perr == nil && cfg.Passwd != "" {
		secrets = append(secrets, cfg.Passwd)
	}
	changed := false
	for _, sec := range secrets {
		if sec != "" && strings.Contains(s, sec) {
			s, changed = strings.ReplaceAll(s, sec, "[redacted]"), true
		}
	}
	if !changed {
		return err
	}
	return errors.New(s)
}

// SQLTable is the keys a source and a sink share.
type SQLTable struct {
	Connection string `koanf:"connection"`
	// Table holds the messages; <table>_offsets the consumer groups' offsets.
	Table string `koanf:"table"`
	// Schema is the PostgreSQL schema (or the MySQL database) of the tables;
	// empty is the connection's default.
	Schema string `koanf:"schema"`
	// PayloadType is the payload column's type when the table is created
	// (BYTEA on PostgreSQL, LONGBLOB on MySQL).
	PayloadType string `koanf:"payload_type"`
	// InitializeSchema creates the tables at start when they are missing.
	InitializeSchema *bool `koanf:"initialize_schema"`
}

// SQLSource reads a table as consumer group consumer_group (the pipeline's
// name by default), from the offset the group acked last.
type SQLSource struct {
	SQLTable      `koanf:",squash"`
	ConsumerGroup string `koanf:"consumer_group"`
	// The adapter's SubscriberConfig and schema options, in snake_case.
	AckDeadline        *time.Duration `koanf:"ack_deadline"`
	PollInterval       time.Duration  `koanf:"poll_interval"`
	ResendInterval     time.Duration  `koanf:"resend_interval"`
	RetryInterval      time.Duration  `koanf:"retry_interval"`
	SubscribeBatchSize int            `koanf:"subscribe_batch_size"`
}

// SQLSink inserts each message as a row.
type SQLSink struct {
	SQLTable `koanf:",squash"`
	// MaxMessageBytes refuses larger payloads (to the dead letters); on
	// PostgreSQL at most its 1 GB field limit, on MySQL the server's
	// max_allowed_packet also bounds payload and metadata together.
	MaxMessageBytes int64 `koanf:"max_message_bytes"`
}

func (c *SQLTable) check(d pipelines.Deps) (*SQLConnection, []error) {
	var errs []error
	conn, err := connectionOf[*SQLConnection](d, c.Connection, "sql")
	if err != nil {
		errs = append(errs, err)
	}
	if !sqlIdent.MatchString(c.Table) {
		errs = append(errs, fmt.Errorf("table: must be a plain SQL name ([A-Za-z_][A-Za-z0-9_]*), got %q", c.Table))
	} else if len(c.Table)+len("_offsets") > 63 {
		errs = append(errs, fmt.Errorf("table: at most %d characters, so that %s_offsets fits PostgreSQL's and MySQL's 63/64", 63-len("_offsets"), c.Table))
	}
	if c.Schema != "" && !sqlIdent.MatchString(c.Schema) {
		errs = append(errs, fmt.Errorf("schema: must be a plain SQL name, got %q", c.Schema))
	}
	if c.PayloadType == "" && conn != nil {
		c.PayloadType = "BYTEA"
		if conn.Driver == "mysql" {
			c.PayloadType = "LONGBLOB"
		}
	}
	if c.PayloadType != "" && !sqlColumnType.MatchString(c.PayloadType) {
		errs = append(errs, fmt.Errorf("payload_type: must be a column type such as BYTEA or LONGBLOB, got %q", c.PayloadType))
	}
	c.InitializeSchema = boolOr(c.InitializeSchema, true)
	return conn, errs
}

// quote names a table in the connection's dialect, schema-qualified.
func (c *SQLTable) quote(driver, table string) string {
	q := func(s string) string { return `"` + s + `"` }
	if driver == "mysql" {
		q = func(s string) string { return "`" + s + "`" }
	}
	if c.Schema != "" {
		return q(c.Schema) + "." + q(table)
	}
	return q(table)
}

// adapters are the watermill-sql schema and offsets adapters these keys make.
func (c *SQLTable) adapters(driver string, batch int) (wsql.SchemaAdapter, wsql.OffsetsAdapter) {
	messages := func(topic string) string { return c.quote(driver, topic) }
	offsets := func(topic string) string { return c.quote(driver, topic+"_offsets") }
	payload := func(string) string { return c.PayloadType }
	if driver == "mysql" {
		return wsql.DefaultMySQLSchema{GenerateMessagesTableName: messages, GeneratePayloadType: payload, SubscribeBatchSize: batch},
			wsql.DefaultMySQLOffsetsAdapter{GenerateMessagesOffsetsTableName: offsets}
	}
	return wsql.DefaultPostgreSQLSchema{GenerateMessagesTableName: messages, GeneratePayloadType: payload, SubscribeBatchSize: batch},
		wsql.DefaultPostgreSQLOffsetsAdapter{GenerateMessagesOffsetsTableName: offsets}
}

// Check implements pipelines.SourceConfig.
func (c *SQLSource) Check(d pipelines.Deps) error {
	_, errs := c.check(d)
	c.ConsumerGroup = cmp.Or(c.ConsumerGroup, d.Pipeline)
	if len(c.ConsumerGroup) > 255 {
		errs = append(errs, errors.New("consumer_group: at most 255 characters"))
	}
	if c.AckDeadline != nil && *c.AckDeadline < 0 {
		errs = append(errs, fmt.Errorf("ack_deadline: must not be negative (0 turns it off), got %s", *c.AckDeadline))
	}
	errs = append(errs, negativeDurations(duration{"poll_interval", c.PollInterval}, duration{"resend_interval", c.ResendInterval},
		duration{"retry_interval", c.RetryInterval})...)
	if c.SubscribeBatchSize < 0 {
		errs = append(errs, fmt.Errorf("subscribe_batch_size: must not be negative, got %d", c.SubscribeBatchSize))
	}
	c.SubscribeBatchSize = cmp.Or(c.SubscribeBatchSize, SQLDefaultSubscribeBatchSize)
	return errors.Join(errs...)
}

// Topic implements pipelines.SourceConfig.
func (c *SQLSource) Topic() string { return c.Table }

// NewSubscriber implements pipelines.SourceConfig.
func (c *SQLSource) NewSubscriber(_ context.Context, d pipelines.Deps) (message.Subscriber, error) {
	conn, err := connectionOf[*SQLConnection](d, c.Connection, "sql")
	if err != nil {
		return nil, err
	}
	return c.NewSubscriberWith(conn, d.Logger)
}

// NewSubscriberWith builds the subscriber on a connection's keys, with a pool
// of its own that its Close closes.
func (c *SQLSource) NewSubscriberWith(conn *SQLConnection, logger watermill.LoggerAdapter) (message.Subscriber, error) {
	db, err := conn.Open()
	if err != nil {
		return nil, err
	}
	schema, offsets := c.adapters(conn.Driver, c.SubscribeBatchSize)
	s, err := wsql.NewSubscriber(wsql.BeginnerFromStdSQL(db), wsql.SubscriberConfig{
		ConsumerGroup:    c.ConsumerGroup,
		AckDeadline:      c.AckDeadline,
		PollInterval:     c.PollInterval,
		ResendInterval:   c.ResendInterval,
		RetryInterval:    c.RetryInterval,
		SchemaAdapter:    schema,
		OffsetsAdapter:   offsets,
		InitializeSchema: *c.InitializeSchema,
	}, logger)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("sql: %w", err)
	}
	return newSQLSubscriber(s, db), nil
}

// sqlSubscriber closes its own pool after the adapter, which does not, and
// forwards each subscription's messages so that its channel is closed when
// Close returns (the adapter closes its own a moment after).
type sqlSubscriber struct {
	*wsql.Subscriber
	db      *stdsql.DB
	mu      sync.Mutex // orders wg.Add before Close's Wait
	closing chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
	err     error
}

func newSQLSubscriber(s *wsql.Subscriber, db *stdsql.DB) *sqlSubscriber {
	return &sqlSubscriber{Subscriber: s, db: db, closing: make(chan struct{})}
}

func (s *sqlSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.closing:
		return nil, wsql.ErrSubscriberClosed
	default:
	}
	in, err := s.Subscriber.Subscribe(ctx, topic)
	if err != nil {
		return nil, err
	}
	out := make(chan *message.Message)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(out)
		for m := range in {
			select {
			case out <- m:
			case <-s.closing: // not acked: the group reads it again
			}
		}
	}()
	return out, nil
}

func (s *sqlSubscriber) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		close(s.closing)
		s.mu.Unlock()
		err := s.Subscriber.Close()
		s.wg.Wait()
		s.err = errors.Join(err, s.db.Close())
	})
	return s.err
}

// Check implements pipelines.SinkConfig.
func (c *SQLSink) Check(d pipelines.Deps) error {
	conn, errs := c.check(d)
	c.MaxMessageBytes = cmp.Or(c.MaxMessageBytes, SQLPostgresMaxMessageBytes)
	if c.MaxMessageBytes < 0 || conn != nil && conn.Driver == "postgres" && c.MaxMessageBytes > SQLPostgresMaxMessageBytes {
		errs = append(errs, fmt.Errorf("max_message_bytes: must be from 1 to PostgreSQL's field limit of %d (1 GB), got %d", SQLPostgresMaxMessageBytes, c.MaxMessageBytes))
	}
	return errors.Join(errs...)
}

// Topic implements pipelines.SinkConfig: the table, required.
func (c *SQLSink) Topic() string { return c.Table }

// NewPublisher implements pipelines.SinkConfig. It creates the tables now,
// so a bad DSN or a missing right fails the pipeline's start.
func (c *SQLSink) NewPublisher(ctx context.Context, d pipelines.Deps) (message.Publisher, error) {
	conn, err := connectionOf[*SQLConnection](d, c.Connection, "sql")
	if err != nil {
		return nil, err
	}
	return c.NewPublisherWith(ctx, conn, d.Logger)
}

// NewPublisherWith builds the publisher on a connection's keys, with a pool of
// its own that its Close closes.
func (c *SQLSink) NewPublisherWith(ctx context.Context, conn *SQLConnection, logger watermill.LoggerAdapter) (message.Publisher, error) {
	db, err := conn.Open()
	if err != nil {
		return nil, err
	}
	fail := func(err error) (message.Publisher, error) {
		_ = db.Close()
		dsn, _ := secretOrFile("dsn", conn.DSN, conn.DSNFile)
		return nil, fmt.Errorf("sql: %w", redactDSN(err, string(dsn)))
	}
	schema, _ := c.adapters(conn.Driver, 0)
	limit := c.MaxMessageBytes
	packet := int64(0)
	if conn.Driver == "mysql" {
		if err := db.QueryRowContext(ctx, "SELECT @@max_allowed_packet").Scan(&packet); err != nil {
			return fail(fmt.Errorf("read max_allowed_packet: %w", err))
		}
	}
	if *c.InitializeSchema {
		if err := c.createTable(ctx, db, schema); err != nil {
			return fail(err)
		}
	}
	var exec wsql.ContextExecutor = wsql.BeginnerFromStdSQL(db)
	if conn.Driver == "mysql" {
		database := c.Schema
		if database == "" {
			var name stdsql.NullString
			if err := db.QueryRowContext(ctx, "SELECT DATABASE()").Scan(&name); err != nil {
				return fail(fmt.Errorf("connection: read its default database (for the insert lock's name): %w", err))
			}
			database = name.String
		}
		exec = &mysqlOrderedInserts{db: db, database: database}
	}
	p, err := wsql.NewPublisher(exec, wsql.PublisherConfig{SchemaAdapter: schema, AutoInitializeSchema: *c.InitializeSchema}, logger)
	if err != nil {
		return fail(err)
	}
	fits := func(m *message.Message) error {
		if len(m.UUID) > SQLMaxUUIDLength {
			return fmt.Errorf("%w: message UUID %q is %d characters, over the sql uuid column's %d", errTooLarge, m.UUID, len(m.UUID), SQLMaxUUIDLength)
		}
		if n := int64(len(m.Payload)); n > limit {
			return fmt.Errorf("%w: message %s has a %d-byte payload, over the sql sink's max_message_bytes of %d", errTooLarge, m.UUID, n, limit)
		}
		return nil
	}
	if conn.Driver == "mysql" {
		// The combiner checks max_allowed_packet too, with the metadata it
		// encodes anyway to size its INSERTs.
		return &sqlPublisher{Publisher: newInsertCombiner(p, packet, fits), db: db}, nil
	}
	return &sqlPublisher{Publisher: sizeLimited{Publisher: p, limit: fits}, db: db}, nil
}

func (c *SQLSink) createTable(ctx context.Context, db *stdsql.DB, schema wsql.SchemaAdapter) error {
	qs, err := schema.SchemaInitializingQueries(wsql.SchemaInitializingQueriesParams{Topic: c.Table})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("create table %s: %w", c.Table, err)
	}
	for _, q := range qs {
		if _, err := tx.ExecContext(ctx, q.Query, q.Args...); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("create table %s: %w", c.Table, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("create table %s: %w", c.Table, err)
	}
	return nil
}

// sqlPublisher closes its own pool after the adapter, which does not.
type sqlPublisher struct {
	message.Publisher
	db   *stdsql.DB
	once sync.Once
	err  error
}

func (p *sqlPublisher) Close() error {
	p.once.Do(func() { p.err = errors.Join(p.Publisher.Close(), p.db.Close()) })
	return p.err
}

// mysqlInsertLockTimeout bounds the wait for another writer's INSERT, which
// itself may wait up to innodb_lock_wait_timeout (50 s by default) for a
// consumer group's gap lock.
const mysqlInsertLockTimeout = 2 * time.Minute

// mysqlOrderedInserts runs the adapter's INSERTs into one table one at a
// time, each inside the server's named lock of that table (GET_LOCK), so
// that offsets become visible in the order they were taken.
//
// The offset of the MySQL schema is an AUTO_INCREMENT value, taken when an
// INSERT starts and visible only when it commits. With INSERTs running at
// once, offset 11 can commit and be read (and acked: the group then reads
// offset > 11) while the INSERT that took 10 is still on its way, often
// because it waits for that very reader's gap lock: row 10 lands behind the
// group's offset and is never read. (The PostgreSQL schema avoids this with
// transaction_id and pg_snapshot_xmin; the MySQL one has no such guard.)
// Holding the lock from before the value is taken until after the commit
// makes every smaller offset committed before a larger one exists, across
// pipelines and loombridge processes alike (the lock is the server's). A
// writer that does not take the lock (another program INSERTing into the
// table) is not covered.
type mysqlOrderedInserts struct {
	db *stdsql.DB
	// database is the connection's default, for unqualified table names.
	database string
	// mu keeps this process's writers off the server lock's queue.
	mu sync.Mutex
}

// insertLock is the lock of the table an INSERT of the MySQL schema adapter
// writes, and "" for other statements (CREATE TABLE needs none). An INSERT
// it cannot read is an error, never an INSERT without the lock.
func (e *mysqlOrderedInserts) insertLock(query string) (string, error) {
	rest, ok := strings.CutPrefix(query, "INSERT INTO ")
	if !ok {
		if strings.HasPrefix(strings.ToUpper(strings.TrimSpace(query)), "INSERT") {
			return "", errors.New("sql sink: an INSERT of unexpected form, refused without its table lock")
		}
		return "", nil
	}
	quoted, _, ok := strings.Cut(rest, " (")
	if !ok || !strings.HasPrefix(quoted, "`") || !strings.HasSuffix(quoted, "`") {
		return "", errors.New("sql sink: an INSERT of unexpected form, refused without its table lock")
	}
	database, table, qualified := strings.Cut(quoted, "`.`")
	if !qualified {
		database, table = e.database, quoted
	}
	return mysqlInsertLockName(strings.Trim(database, "`"), strings.Trim(table, "`")), nil
}

// mysqlInsertLockName is the GET_LOCK name of a table: at most 64
// characters, MySQL's and MariaDB's limit.
func mysqlInsertLockName(database, table string) string {
	name := "loombridge.sql." + database + "." + table
	if len(name) > 64 {
		sum := sha256.Sum256([]byte(database + "." + table))
		name = "loombridge.sql." + hex.EncodeToString(sum[:20])
	}
	return name
}

func (e *mysqlOrderedInserts) ExecContext(ctx context.Context, query string, args ...any) (wsql.Result, error) {
	lock, err := e.insertLock(query)
	if err != nil {
		return nil, err
	}
	if lock == "" {
		return e.db.ExecContext(ctx, query, args...)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	// One connection for lock, INSERT and release: should it break, the
	// server drops the lock only once the INSERT is over, either way.
	conn, err := e.db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	var got stdsql.NullInt64
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, ?)", lock, int(mysqlInsertLockTimeout/time.Second)).Scan(&got); err != nil {
		return nil, fmt.Errorf("table: take the insert lock %s: %w", lock, err)
	}
	if got.Int64 != 1 {
		return nil, fmt.Errorf("table: take the insert lock %s: another writer held it for %s", lock, mysqlInsertLockTimeout)
	}
	res, err := conn.ExecContext(ctx, query, args...)
	// A failed release (a broken connection) ends the session, which
	// releases the lock too.
	_, rerr := conn.ExecContext(context.WithoutCancel(ctx), "DO RELEASE_LOCK(?)", lock)
	if err != nil {
		return nil, err
	}
	if rerr != nil {
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	}
	return res, nil
}

func (e *mysqlOrderedInserts) QueryContext(ctx context.Context, query string, args ...any) (wsql.Rows, error) {
	return e.db.QueryContext(ctx, query, args...)
}

// Bounds of one combined INSERT (below max_allowed_packet too).
const (
	sqlCombineMaxRows  = 500
	sqlCombineMaxBytes = 8 << 20
)

// insertCombiner makes the one-at-a-time INSERTs of the MySQL sink cheaper:
// the Publish calls that arrive while an INSERT runs go into the next one, a
// single statement of many rows (the adapter keeps the order of the rows of
// one call), so one commit serves them all. When a combined INSERT fails,
// each call is tried again on its own, so that one bad message fails only
// its own Publish. Like sizeLimited, it refuses a whole call when one of its
// messages does not fit (fits, or max_allowed_packet), before any is sent.
type insertCombiner struct {
	pub      message.Publisher
	fits     func(*message.Message) error
	packet   int64 // max_allowed_packet
	maxBytes int64
	requests chan *combinedPublish
	mu       sync.RWMutex // held for sending on requests; Close closes it
	closed   bool
	stopped  chan struct{}
	once     sync.Once
	err      error
}

type combinedPublish struct {
	topic string
	msgs  []*message.Message
	bytes int64
	err   error
	done  chan struct{}
}

func newInsertCombiner(pub message.Publisher, packet int64, fits func(*message.Message) error) *insertCombiner {
	c := &insertCombiner{pub: pub, fits: fits, packet: packet, maxBytes: min(packet-sqlPacketReserve, sqlCombineMaxBytes),
		requests: make(chan *combinedPublish), stopped: make(chan struct{})}
	go c.run()
	return c
}

func (c *insertCombiner) Publish(topic string, msgs ...*message.Message) error {
	p := &combinedPublish{topic: topic, msgs: msgs, done: make(chan struct{})}
	for _, m := range msgs {
		if err := c.fits(m); err != nil {
			return err
		}
		md, _ := json.Marshal(m.Metadata)
		n := int64(len(m.Payload))
		if total := n + int64(len(md)) + sqlPacketReserve; total > c.packet {
			return fmt.Errorf("%w: message %s needs a %d-byte INSERT (payload %d, metadata %d), over the MySQL server's max_allowed_packet of %d", errTooLarge, m.UUID, total, n, len(md), c.packet)
		}
		p.bytes += n + int64(len(md)+len(m.UUID)) + 64
	}
	c.mu.RLock()
	if c.closed {
		c.mu.RUnlock()
		return wsql.ErrPublisherClosed
	}
	c.requests <- p
	c.mu.RUnlock()
	<-p.done
	return p.err
}

func (c *insertCombiner) run() {
	defer close(c.stopped)
	var next *combinedPublish
	for {
		first := next
		next = nil
		if first == nil {
			var ok bool
			if first, ok = <-c.requests; !ok {
				return
			}
		}
		batch := []*combinedPublish{first}
		rows, bytes := len(first.msgs), first.bytes
	gather:
		for rows < sqlCombineMaxRows {
			select {
			case p, ok := <-c.requests:
				if !ok {
					break gather
				}
				if p.topic != first.topic || rows+len(p.msgs) > sqlCombineMaxRows || bytes+p.bytes > c.maxBytes {
					next = p
					break gather
				}
				batch = append(batch, p)
				rows, bytes = rows+len(p.msgs), bytes+p.bytes
			default:
				break gather
			}
		}
		c.insert(batch)
	}
}

func (c *insertCombiner) insert(batch []*combinedPublish) {
	defer func() {
		for _, p := range batch {
			close(p.done)
		}
	}()
	if len(batch) == 1 {
		batch[0].err = c.pub.Publish(batch[0].topic, batch[0].msgs...)
		return
	}
	var all []*message.Message
	for _, p := range batch {
		all = append(all, p.msgs...)
	}
	if c.pub.Publish(batch[0].topic, all...) == nil {
		return
	}
	for _, p := range batch {
		p.err = c.pub.Publish(p.topic, p.msgs...)
	}
}

// Close waits for the INSERTs asked for, then closes the adapter.
func (c *insertCombiner) Close() error {
	c.once.Do(func() {
		c.mu.Lock()
		c.closed = true
		close(c.requests)
		c.mu.Unlock()
		<-c.stopped
		c.err = c.pub.Close()
	})
	return c.err
}
