package bench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/runtime/eventgen"
)

// bareBatch is the batch size of the bare SKIP LOCKED reference, the
// relay's default.
const bareBatch = eventgen.DefaultBatchSize

// drainPhase fills two outbox tables with the same backlog, drains one with
// a bare claim-publish-mark loop (the database's limit) and the other with
// the relay, and reports the relay's rate over the first and last tenth of
// the backlog and the process's peak memory while it drains.
func (e *env) drainPhase(ctx context.Context, p *Phase) error {
	n := e.cfg.Rows
	b, err := e.newBacklog(ctx, "drain", n)
	if err != nil {
		return err
	}
	ob, relayTable, prefix, prog := b.ob, b.table, b.prefix, b.prog
	bareOb, bareTable, err := e.newOutbox(ctx, "bare", &publisher{inner: e.broker.Publisher(), prefix: prefix})
	if err != nil {
		return err
	}
	t := time.Now()
	if err := e.fill(ctx, ob, relayTable, n); err != nil {
		return err
	}
	if err := e.fill(ctx, bareOb, bareTable, n); err != nil {
		return err
	}
	p.note("filled 2 x %d rows in %.1f s, then ANALYZEd both tables", n, time.Since(t).Seconds())

	bareRate, err := e.bareDrain(ctx, bareTable, &publisher{inner: e.broker.Publisher(), prefix: prefix}, n)
	if err != nil {
		return err
	}
	bare := p.add(&Figure{Name: "drain.bare", Label: fmt.Sprintf("bare claim %d (FOR UPDATE SKIP LOCKED where available) + publish + mark, one loop", bareBatch),
		Value: bareRate, Unit: "rows/s"})

	// Peak memory of this process while the relay drains, measured from a
	// clean start: collected garbage returned to the OS and the kernel's
	// high-water mark reset to the current RSS.
	runtime.GC()
	debug.FreeOSMemory()
	resetPeak := resetPeakRSS()
	baseRSS, _ := procStatus("VmRSS")
	prog.restart()
	stop := runRelay(ctx, ob)
	err = prog.wait(ctx, e.cfg.DrainTimeout, "relay drain")
	if err == nil {
		err = e.waitSettled(ctx, relayTable, 5*time.Millisecond)
	}
	elapsed := time.Since(prog.start)
	stop()
	peakRSS, rssErr := procStatus("VmHWM")
	if err != nil {
		return err
	}
	relay := p.add(&Figure{Name: "drain.relay", Label: fmt.Sprintf("relay drains %d rows (published and marked)", n),
		Value: float64(n) / elapsed.Seconds(), Unit: "rows/s"})
	relay.compare(bare).atLeast(0.80)
	e.drainRate = relay.Value
	first := p.add(&Figure{Name: "drain.first10", Label: "relay, first 10% of the backlog", Value: prog.tenthRate(0), Unit: "rows/s"})
	p.add(&Figure{Name: "drain.last10", Label: "relay, last 10% of the backlog", Value: prog.tenthRate(9), Unit: "rows/s"}).compare(first).atLeast(0.80)
	switch {
	case rssErr != nil:
		p.note("peak RSS not measured: %v", rssErr)
	default:
		f := p.add(&Figure{Name: "drain.peak-rss", Label: fmt.Sprintf("peak RSS of the process while the relay drains (%d-byte payloads)", e.events.size()),
			Value: float64(peakRSS) / (1 << 20), Unit: "MiB"}).below(150, "MiB")
		if !resetPeak {
			f.Label += "; the high-water mark could not be reset, so it covers the whole run"
		}
		p.note("peak RSS is the whole eventbench process (VmHWM, reset before the drain; RSS was %.0f MiB at the start); the target is stated for 2 KiB payloads (-size 2048)",
			float64(baseRSS)/(1<<20))
	}
	return nil
}

// waitSettled waits until no row of table is pending or held: the last
// marks are written after the last publish. It polls every poll, so it
// returns within about poll of the last mark.
func (e *env) waitSettled(ctx context.Context, table string, poll time.Duration) error {
	q := "SELECT COUNT(*) FROM " + table + " WHERE status IN ('scheduled', 'pending', 'processing')"
	n, err := e.waitCount(ctx, q, poll, func(n int) bool { return n == 0 })
	if errors.Is(err, errTimeout) {
		return fmt.Errorf("relay drain: %d rows still unsettled: %w", n, err)
	}
	if err != nil {
		return fmt.Errorf("count unsettled rows: %w", err)
	}
	return nil
}

// waitCount runs q, a COUNT query, every poll until done accepts its
// result, for cfg.DrainTimeout at most (then the error is errTimeout), and
// returns the last count.
func (e *env) waitCount(ctx context.Context, q string, poll time.Duration, done func(n int) bool) (int, error) {
	deadline := time.Now().Add(e.cfg.DrainTimeout)
	for {
		var n int
		if err := e.db.db.QueryRowContext(ctx, q).Scan(&n); err != nil {
			return n, err
		}
		if done(n) {
			return n, nil
		}
		if time.Now().After(deadline) {
			return n, errTimeout
		}
		select {
		case <-ctx.Done():
			return n, ctx.Err()
		case <-time.After(poll):
		}
	}
}

// bareDrain is the reference drain: one loop that, in one transaction,
// selects the next batch of due rows (FOR UPDATE SKIP LOCKED where the
// database has it, through the same partial index as the relay), publishes
// them with up to DefaultMaxInFlight publishes at once, and marks them
// published. It returns rows per second.
func (e *env) bareDrain(ctx context.Context, table string, pub message.Publisher, n int) (float64, error) {
	d := e.db.d
	now := "(SELECT " + d.now + ")"
	lock, hint := " FOR UPDATE SKIP LOCKED", ""
	switch d.name {
	case "sqlite":
		lock = "" // the transaction holds the database's write lock
	case "mysql":
		hint = " FORCE INDEX (" + table + "_claim)"
	}
	sel := "SELECT id, message_id, msg_key, payload, created_at FROM " + table + hint +
		" WHERE status IN ('scheduled', 'pending', 'processing') AND next_attempt_at <= " + now +
		" ORDER BY next_attempt_at LIMIT " + strconv.Itoa(bareBatch) + lock
	mark := "UPDATE " + table + " SET status = 'published', attempts = attempts + 1, published_at = " + now +
		", expires_at = " + now + " + 86400000000, next_attempt_at = NULL WHERE id IN (?)"
	type row struct {
		id        int64
		msgID     string
		key       string
		payload   []byte
		createdAt int64
	}
	done := 0
	start := time.Now()
	deadline := start.Add(e.cfg.DrainTimeout)
	for done < n {
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("bare drain: %d of %d rows after %s: %w", done, n, e.cfg.DrainTimeout, errTimeout)
		}
		var got int
		err := e.db.db.RunInTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted}, func(ctx context.Context, tx bun.Tx) error {
			rows, err := tx.QueryContext(ctx, sel)
			if err != nil {
				return fmt.Errorf("select batch: %w", err)
			}
			batch := make([]row, 0, bareBatch)
			for rows.Next() {
				var r row
				if err := rows.Scan(&r.id, &r.msgID, &r.key, &r.payload, &r.createdAt); err != nil {
					rows.Close()
					return fmt.Errorf("scan: %w", err)
				}
				batch = append(batch, r)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return fmt.Errorf("read batch: %w", err)
			}
			if len(batch) == 0 {
				return nil
			}
			msgs := make([]*message.Message, len(batch))
			ids := make([]int64, len(batch))
			for i, r := range batch {
				msgs[i] = wireMessage(r.msgID, r.key, time.UnixMicro(r.createdAt), r.payload)
				ids[i] = r.id
			}
			if _, err := publishAll(ctx, pub, msgs, eventgen.DefaultMaxInFlight); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, mark, bun.In(ids)); err != nil {
				return fmt.Errorf("mark batch: %w", err)
			}
			got = len(batch)
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("bare drain: %w", err)
		}
		if got == 0 {
			return 0, fmt.Errorf("bare drain: no due rows after %d of %d", done, n)
		}
		done += got
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// resetPeakRSS resets the kernel's record of this process's peak RSS
// (VmHWM) to its current RSS, and reports whether it could.
func resetPeakRSS() bool {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// procStatus reads a memory field of /proc/self/status, in bytes.
func procStatus(field string) (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("read /proc/self/status: %w", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		v, ok := strings.CutPrefix(line, field+":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse %s: %w", field, err)
		}
		return kb << 10, nil
	}
	return 0, errors.New(field + " not in /proc/self/status")
}
