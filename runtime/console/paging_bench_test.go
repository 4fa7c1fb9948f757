package console

import (
	"context"
	"fmt"
	"testing"

	"github.com/eventgen/eventgen/runtime/eventgen"
	"github.com/eventgen/eventgen/runtime/internal/testenv"
)

// BenchmarkDeepPage measures one list page (50 rows) near the end of a
// 100,000-row outbox: the console's keyset page (id < cursor), against
// the same page read with OFFSET, which reads and drops every row above
// it. Run: go test -run '^$' -bench DeepPage ./runtime/console/
func BenchmarkDeepPage(b *testing.B) {
	const rows, page = 100_000, 50
	for _, d := range testenv.Databases(b) {
		b.Run(d.Name, func(b *testing.B) {
			db := d.Open(b)
			f := newFixture(b, db, 0)
			ctx := context.Background()
			batch := make([]eventgen.Event, 1000)
			for i := 0; i < rows; i += len(batch) {
				for j := range batch {
					batch[j] = testEvent{OrderID: fmt.Sprintf("order-%d", i+j), Note: "a note of some length, as payloads have"}
				}
				if err := f.outbox.Publish(ctx, db, "bench", batch); err != nil {
					b.Fatal(err)
				}
			}
			// The page 99,000 rows down from the newest.
			top, err := f.outbox.Rows(ctx, eventgen.RowFilter{Limit: 1})
			if err != nil {
				b.Fatal(err)
			}
			cursor := top.Rows[0].ID - 99_000
			b.Run("keyset", func(b *testing.B) {
				for b.Loop() {
					p, err := f.outbox.Rows(ctx, eventgen.RowFilter{Before: cursor, Limit: page})
					if err != nil || len(p.Rows) != page {
						b.Fatal(len(p.Rows), err)
					}
				}
			})
			b.Run("offset", func(b *testing.B) {
				q := fmt.Sprintf("SELECT id, message_id, name, version, topic, msg_key, source, status, attempts, created_at, last_error FROM %s ORDER BY id DESC LIMIT %d OFFSET 99000",
					f.outbox.Table(), page)
				for b.Loop() {
					rs, err := db.QueryContext(ctx, q)
					if err != nil {
						b.Fatal(err)
					}
					n := 0
					for rs.Next() {
						n++
					}
					rs.Close()
					if n != page {
						b.Fatal(n)
					}
				}
			})
		})
	}
}
