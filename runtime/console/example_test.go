package console_test

import (
	"log"
	"net/http"
	"os"

	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/runtime/console"
	"github.com/eventgen/eventgen/runtime/eventgen"
)

// A service mounts the console on its own mux under /ops, with a shared
// token that operators type as the password of the browser's prompt.
func ExampleNew() {
	var db *bun.DB // the service's database
	outbox, err := eventgen.NewOutbox(db, nil, eventgen.OutboxOptions{})
	if err != nil {
		log.Fatal(err)
	}
	billing, err := eventgen.NewConsumer(db, nil, eventgen.ConsumerOptions{Group: "billing"})
	if err != nil {
		log.Fatal(err)
	}
	auth, err := console.TokenAuth(os.Getenv("OPS_CONSOLE_TOKEN"))
	if err != nil {
		log.Fatal(err)
	}
	h, err := console.New(outbox, []*eventgen.Consumer{billing}, console.Options{Prefix: "/ops", Authorize: auth})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ops/", h)
	log.Fatal(http.ListenAndServe("127.0.0.1:8080", mux))
}
