package eventgen_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	_ "modernc.org/sqlite" // the pure-Go "sqlite" driver

	shopevents "github.com/eventgen/eventgen/examples/generated"
	"github.com/eventgen/eventgen/runtime/eventgen"
	"github.com/eventgen/eventgen/runtime/transport"
)

// An event published in a transaction reaches the consumer group once the
// transaction commits; an event published in a transaction that rolls back
// is never sent. The example uses SQLite and the in-process broker (see
// openShop); on PostgreSQL or MySQL and RabbitMQ, NATS or Redis only the
// two Open calls change.
func ExampleOutbox() {
	ctx, stop := context.WithCancel(context.Background())
	db, tr, closeAll := openShop(ctx)
	defer closeAll()

	// The producing side: the outbox table and its relay.
	ob, err := eventgen.NewOutbox(db, tr.Publisher(), eventgen.OutboxOptions{})
	if err != nil {
		log.Fatal(err)
	}
	if err := ob.Migrate(ctx); err != nil {
		log.Fatal(err)
	}
	pub := shopevents.NewPublisher(ob)

	// The consuming side: group "notifications", with its inbox table.
	sub, err := tr.Subscriber("notifications")
	if err != nil {
		log.Fatal(err)
	}
	c, err := eventgen.NewConsumer(db, sub, eventgen.ConsumerOptions{Group: "notifications"})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Migrate(ctx); err != nil {
		log.Fatal(err)
	}
	handled := make(chan string, 10)
	err = shopevents.RegisterOrderShippedHandler(c, handlerFunc(func(ctx context.Context, e shopevents.OrderShipped, m eventgen.Metadata) error {
		// Writes through eventgen.Tx(ctx) commit with the inbox row.
		handled <- fmt.Sprintf("%s v%d on %s: order %s left with %s", m.Name, m.Version, m.Topic, e.OrderID, e.Carrier)
		return nil
	}))
	if err != nil {
		log.Fatal(err)
	}

	run := runAll(ctx, ob.Run, c.Run)
	<-c.Subscribed() // the in-process broker delivers only what is published after this

	orderID := uuid.MustParse("5d2a0c1e-7f3b-4c4e-9b1a-2f6d8e0a4b7c")
	for _, carrier := range []string{"Bad Parcel Co", "DHL"} {
		err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			// Business writes go here, in tx.
			if err := pub.PublishOrderShipped(ctx, tx, shopevents.OrderShipped{
				OrderID: orderID, Carrier: carrier, ShippedAt: time.Now(),
			}); err != nil {
				return err
			}
			if carrier == "Bad Parcel Co" {
				return errors.New("carrier refused the parcel") // rolls back, event and all
			}
			return nil
		})
		fmt.Printf("%s: committed %v\n", carrier, err == nil)
	}

	fmt.Println(receive(handled))
	stop()
	if err := run(); err != nil {
		log.Fatal(err)
	}
	// Output:
	// Bad Parcel Co: committed false
	// DHL: committed true
	// OrderShipped v1 on shop.orders: order 5d2a0c1e-7f3b-4c4e-9b1a-2f6d8e0a4b7c left with DHL
}

// openShop opens a SQLite database in a temporary folder and the
// in-process broker. closeAll closes both and removes the folder.
func openShop(ctx context.Context) (db *bun.DB, tr *transport.Transport, closeAll func()) {
	dir, err := os.MkdirTemp("", "eventgen-example")
	if err != nil {
		log.Fatal(err)
	}
	db, err = openSQLite(filepath.Join(dir, "shop.db"))
	if err != nil {
		log.Fatal(err)
	}
	tr, err = transport.Open(ctx, "mem://", transport.Options{})
	if err != nil {
		log.Fatal(err)
	}
	return db, tr, func() {
		tr.Close()
		db.Close()
		os.RemoveAll(dir)
	}
}

// openSQLite opens the SQLite database at path as eventgen wants it: WAL,
// a busy timeout, transactions that take the write lock when they begin,
// and one connection, so that writers take turns in the pool.
func openSQLite(path string) (*bun.DB, error) {
	sqldb, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		return nil, err
	}
	sqldb.SetMaxOpenConns(1)
	return bun.NewDB(sqldb, sqlitedialect.New()), nil
}

// handlerFunc makes a function a handler of OrderShipped events.
type handlerFunc func(context.Context, shopevents.OrderShipped, eventgen.Metadata) error

func (f handlerFunc) HandleOrderShipped(ctx context.Context, e shopevents.OrderShipped, m eventgen.Metadata) error {
	return f(ctx, e, m)
}

// runAll starts each Run function in its own goroutine. The function it
// returns waits until all have returned (cancel ctx first) and returns
// their errors.
func runAll(ctx context.Context, runs ...func(context.Context) error) (wait func() error) {
	var wg sync.WaitGroup
	errs := make([]error, len(runs))
	for i, run := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = run(ctx)
		}()
	}
	return func() error {
		wg.Wait()
		return errors.Join(errs...)
	}
}

// receive returns the next value from ch, waiting at most 10 seconds.
func receive(ch <-chan string) string {
	select {
	case s := <-ch:
		return s
	case <-time.After(10 * time.Second):
		log.Fatal("timed out")
		return ""
	}
}

// poll calls done every 10ms until it reports true or an error, for at most
// 10 seconds.
func poll(done func() (bool, error)) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, err := done()
		if ok || err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
