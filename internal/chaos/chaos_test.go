//go:build unix

// The chaos suite. Producers, relays and consumers run as chaosnode child
// processes that are killed with SIGKILL, by pid, on a timer or at exact
// windows (failpoints); a checker compares the committed table with the
// effects applied and the raw deliveries logged. Each scenario logs one
// line:
//
//	chaos scenario=<name> backend=<db>+<broker> committed=N effects=g:N,... lost=0 ghost=0 dup=0 out_of_order=0 misnumbered=0 raw_dup=N delivered=N keys=N max_per_key=N ...
//
// and passes only with lost = ghost = dup = out_of_order = misnumbered = 0
// (see chaos.CheckOrder).
//
// Keys: the producers of most scenarios publish under hot keys (8 keys,
// many events each, transactions started in bursts of 8 so that several
// on one key are open at once) or cold ones (a key per 4 transactions;
// the failpoints, which commit a few dozen events of an open-ended run,
// use hot keys only);
// key_mode= says which, contended= how many transactions began while
// another on their key was open, and held_seen= how many events a 4/s
// sample of the inbox saw held behind an earlier event of their key. The
// zombie and restart scenarios, whose pauses and outages would leave a
// hot key waiting for a paused process's open transaction, keep a key per
// event.
//
// Backends: SQLite with the in-process broker always (its relay and
// consumers share one child process, the only way to share a GoChannel;
// see chaos.AckWaiter), and PostgreSQL+RabbitMQ, PostgreSQL+NATS JetStream
// and MariaDB+RabbitMQ where EVENTGEN_TEST_* name them.
//
// The zombie scenarios (zombie-two-relays, zombie-one-relay) pause a relay,
// then a consumer replica, with SIGSTOP and resume them with SIGCONT, as a
// long GC pause, a throttled container or a VM migration does, while a
// producer commits 150 events/s. Each pause outlasts the harness's 3s
// leases and, on RabbitMQ, the connection: the scenario's AMQP URL sets
// heartbeat=2 and RabbitMQ drops a client after two missed heartbeats; on
// NATS and Redis a consumer's pause also outlasts their 30s redelivery.
// The resumed process must publish or handle again within 15s of SIGCONT
// (by its -progress log), and exit 0 within 15s of SIGTERM; with one relay
// the resumed relay alone delivers every event. See zombie_test.go.
//
// Sizes are reduced for CI. The full sizes run with:
//
//	EVENTGEN_CHAOS_FULL=1 go test -run TestChaos -timeout 2h ./internal/chaos/
//
// and EVENTGEN_CHAOS_RESULTS=file appends the run's result lines to file.
package chaos_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventgen/eventgen/internal/chaos"
	"github.com/eventgen/eventgen/runtime/eventgen"
)

// sizes are a run's scenario sizes.
type sizes struct {
	killEvents, killCycles    int
	bothKillCycles            int
	relayKillEvery            [2]time.Duration
	consumerKillEvery         [2]time.Duration
	killRate                  float64
	failpointCycles           int
	rollbackEvents            int
	threeRelayEvents          int
	commitOrderRuns           int
	poisonGood, poisonBad     int
	outage                    time.Duration
	outageRate                float64
	converge                  time.Duration
	threeRelayKillCycles      int
	threeRelayKillRate        float64
	threeRelayKillEvery       [2]time.Duration
	malformedGoodAfter        int
	outageRetryInterval       time.Duration
	outageMaxAttemptsPerEvent int
	longTx                    time.Duration
	longTxRate                float64
}

func runSizes() sizes {
	if os.Getenv(envFull) == "1" {
		return sizes{
			killEvents: 10000, killCycles: 20, bothKillCycles: 20, killRate: 250,
			relayKillEvery:    [2]time.Duration{1500 * time.Millisecond, 2500 * time.Millisecond},
			consumerKillEvery: [2]time.Duration{2500 * time.Millisecond, 3500 * time.Millisecond},
			failpointCycles:   10, rollbackEvents: 3000, threeRelayEvents: 20000, commitOrderRuns: 50,
			poisonGood: 1980, poisonBad: 20, outage: 30 * time.Second, outageRate: 200,
			converge: 10 * time.Minute, threeRelayKillCycles: 10, threeRelayKillRate: 500,
			threeRelayKillEvery: [2]time.Duration{time.Second, 2 * time.Second}, malformedGoodAfter: 1000,
			outageRetryInterval: time.Second, outageMaxAttemptsPerEvent: 12, longTx: 30 * time.Second, longTxRate: 50,
		}
	}
	return sizes{
		killEvents: 500, killCycles: 4, bothKillCycles: 6, killRate: 120,
		relayKillEvery:    [2]time.Duration{700 * time.Millisecond, 1300 * time.Millisecond},
		consumerKillEvery: [2]time.Duration{700 * time.Millisecond, 1300 * time.Millisecond},
		failpointCycles:   2, rollbackEvents: 300, threeRelayEvents: 800, commitOrderRuns: 5,
		poisonGood: 190, poisonBad: 10, outage: 2 * time.Second, outageRate: 100,
		converge: 2 * time.Minute, threeRelayKillCycles: 3, threeRelayKillRate: 300,
		threeRelayKillEvery: [2]time.Duration{700 * time.Millisecond, 1300 * time.Millisecond}, malformedGoodAfter: 50,
		outageRetryInterval: 200 * time.Millisecond, outageMaxAttemptsPerEvent: 12, longTx: 3 * time.Second, longTxRate: 40,
	}
}

// results collects the result lines of a run.
type results struct {
	mu    sync.Mutex
	lines []string
}

func (r *results) add(t *testing.T, line string) {
	t.Helper()
	t.Log(line)
	r.mu.Lock()
	r.lines = append(r.lines, line)
	r.mu.Unlock()
}

func (r *results) save(t *testing.T) {
	path := os.Getenv(envResults)
	if path == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	lines := append([]string(nil), r.lines...)
	sort.Strings(lines)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Errorf("save results: %v", err)
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "# %s %s\n", time.Now().UTC().Format(time.RFC3339), map[bool]string{true: "full", false: "ci"}[os.Getenv(envFull) == "1"])
	for _, l := range lines {
		fmt.Fprintln(f, l)
	}
}

// parallelScenarios bounds the scenarios running at once.
const parallelScenarios = 4

type scenario struct {
	name string
	run  func(t *testing.T, e *env, sz sizes) string
}

func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos suite skipped in -short mode")
	}
	sz := runSizes()
	res := &results{}
	t.Cleanup(func() { res.save(t) })
	scenarios := []scenario{
		{"relay-kill-loop", func(t *testing.T, e *env, sz sizes) string {
			return killLoop(t, e, "relay", chaos.KeysHot, sz.killEvents, sz.killRate, sz.killCycles, sz.relayKillEvery, sz)
		}},
		{"consumer-kill-loop", func(t *testing.T, e *env, sz sizes) string {
			return killLoop(t, e, "consumer", chaos.KeysHot, sz.killEvents, sz.killRate, sz.killCycles, sz.consumerKillEvery, sz)
		}},
		{"relay-and-consumer-kill-loop", func(t *testing.T, e *env, sz sizes) string {
			return killLoop(t, e, "both", chaos.KeysCold, sz.killEvents, sz.killRate, sz.bothKillCycles, sz.relayKillEvery, sz)
		}},
		{"failpoint-relay-before-publish", failpoint("relay-before-publish", chaos.KeysHot, false)},
		{"failpoint-relay-after-ack-before-mark", failpoint("relay-after-ack-before-mark", chaos.KeysHot, true)},
		// A key per event: these windows are proven by the broker's
		// redelivery, and under hot keys the killed run may be a held
		// event run from the inbox table, which the broker does not
		// redeliver (the retrier takes it over after its lease).
		{"failpoint-consumer-after-commit-before-ack", failpoint("consumer-after-commit-before-ack", chaos.KeysUnique, true)},
		{"failpoint-consumer-mid-handler", failpoint("consumer-mid-handler", chaos.KeysUnique, true)},
		{"rollbacks", rollbacks},
		{"three-relays", threeRelays},
		{"three-relays-kill", threeRelaysKill},
		{"commit-order", commitOrder},
		{"poison", poison},
		{"malformed", malformed},
		{"broker-outage", brokerOutage},
		{"long-transaction", longTransaction},
		{"db-connection-kill", dbConnectionKill},
		{"zombie-two-relays", zombie(2)},
		{"zombie-one-relay", zombie(1)},
	}
	// Scenarios run a few at a time: most of their time is spent waiting
	// (kill schedules, NATS's 30s AckWait), not computing.
	sem := make(chan struct{}, parallelScenarios)
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			for _, sc := range scenarios {
				t.Run(sc.name, func(t *testing.T) {
					t.Parallel()
					// Consumers killed on NATS or Redis leave their
					// messages to a 30s AckWait or idle claim: those
					// scenarios mostly wait, so they do not take a slot.
					if !(b.slowRedelivery() && strings.Contains(sc.name, "consumer")) {
						sem <- struct{}{}
						defer func() { <-sem }()
					}
					e := newEnv(t, b)
					if line := sc.run(t, e, sz); line != "" {
						res.add(t, line)
					}
				})
			}
		})
	}
}

// victim returns the role that runs what is to be killed: on the
// in-process broker relay and consumers share the node process.
func (e *env) victim(role string) string {
	if e.b.inProcess() {
		return "node"
	}
	return role
}

// startPipeline starts the consumer and relay processes (one node process
// on the in-process broker), with the failpoint environment fp for the
// one in role, and returns them by role.
func (e *env) startPipeline(role string, fp []string, relayArgs ...string) map[string]*proc {
	if e.b.inProcess() {
		return map[string]*proc{"node": e.start("node", fp, relayArgs...)}
	}
	ps := map[string]*proc{}
	var cfp, rfp []string
	if role == "consumer" {
		cfp = fp
	} else {
		rfp = fp
	}
	// Two replicas of each group; only the first has the failpoint.
	ps["consumer"] = e.start("consumer", cfp)
	ps["consumer2"] = e.start("consumer", nil)
	ps["relay"] = e.start("relay", rfp, relayArgs...)
	return ps
}

// finish waits until every committed event is applied in every group and
// the outbox is drained, stops every child, and checks the result.
func (e *env) finish(t *testing.T, sz sizes, kinds ...string) chaos.Report {
	t.Helper()
	ctx := context.Background()
	r, ok, err := chaos.WaitConverged(ctx, e.db, e.tables, e.groups, e.rawDir, sz.converge, kinds...)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Errorf("not converged within %s: %+v", sz.converge, r)
	}
	e.cleanup()
	e.mu.Lock()
	e.procs = nil
	e.mu.Unlock()
	if r, err = chaos.Check(ctx, e.db, e.tables, e.groups, e.rawDir, kinds...); err != nil {
		t.Fatal(err)
	}
	if !r.OK() {
		t.Errorf("%s", r.Problem())
		if r.Order.First != "" {
			e.logKey(t, r.Order.FirstGroup, r.Order.FirstKey)
		}
	}
	if r.Committed == 0 {
		t.Errorf("nothing was committed")
	}
	return r
}

// producerArgs are a chaosnode producer's: events transactions at rate
// from 8 workers (a third rolled back, a tenth of them flaky, a seventh
// hostile), keyed by keys; keyed ones start in bursts of 8.
func producerArgs(events int, rate float64, keys string) []string {
	args := []string{"-events", fmt.Sprint(events), "-rate", fmt.Sprint(rate), "-workers", "8", "-rollback-every", "3", "-flaky-every", "10", "-hostile-every", "7", "-keys", keys}
	if keys != chaos.KeysUnique {
		args = append(args, "-burst", "8")
	}
	return args
}

// producerStats returns the statistics that producer p printed when it
// finished.
func producerStats(t *testing.T, p *proc) chaos.ProducerStats {
	t.Helper()
	var st chaos.ProducerStats
	select {
	case l := <-p.lines:
		if err := json.Unmarshal([]byte(l), &st); err != nil {
			t.Errorf("producer stats %q: %v", l, err)
		}
	default:
		t.Errorf("the producer printed no statistics")
	}
	return st
}

// keyed stops the sampling of held events and returns the result fields
// of a scenario with keys: its key mode, the producer's contended
// transactions and the held events sampled.
func keyed(keys string, st chaos.ProducerStats, held *heldWatch) string {
	return fmt.Sprintf("key_mode=%s contended=%d %s", keys, st.Contended, held.stop())
}

// heldWatch samples the inbox's held rows while a scenario runs.
type heldWatch struct {
	quit, done chan struct{}
	once       sync.Once
	seen       map[string]bool // group and message id
	peak       int
}

// watchHeld samples the held rows of the scenario's inbox 4 times a
// second until stop: the events seen held, and the most held at once. A
// sample misses the events held for less than its period, so both are
// lower bounds.
func (e *env) watchHeld() *heldWatch {
	h := &heldWatch{quit: make(chan struct{}), done: make(chan struct{}), seen: map[string]bool{}}
	go func() {
		defer close(h.done)
		tk := time.NewTicker(250 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-h.quit:
				return
			case <-tk.C:
			}
			rows, err := e.db.QueryContext(context.Background(), "SELECT consumer_group, message_id FROM "+e.tables.Inbox+" WHERE status = 'held'")
			if err != nil {
				continue // a busy SQLite file: the next sample will do
			}
			n := 0
			for rows.Next() {
				var g, id string
				if rows.Scan(&g, &id) == nil {
					h.seen[g+" "+id] = true
					n++
				}
			}
			rows.Close()
			h.peak = max(h.peak, n)
		}
	}()
	e.t.Cleanup(func() { h.stop() })
	return h
}

// stop ends the sampling and returns its result fields.
func (h *heldWatch) stop() string {
	h.once.Do(func() {
		close(h.quit)
		<-h.done
	})
	return fmt.Sprintf("held_seen=%d held_peak=%d", len(h.seen), h.peak)
}

// logKey logs, for a key applied out of order in group, the group's inbox
// rows and effect rows of that key.
func (e *env) logKey(t *testing.T, group, key string) {
	t.Helper()
	ctx := context.Background()
	var b strings.Builder
	fmt.Fprintf(&b, "inbox rows of group %s, key %q (id status seq attempts last_error):\n", group, key)
	rows, err := e.db.QueryContext(ctx, "SELECT id, status, seq, attempts, COALESCE(last_error, '') FROM "+e.tables.Inbox+
		" WHERE consumer_group = ? AND msg_key = ? ORDER BY seq, id", group, key)
	if err != nil {
		t.Logf("read inbox rows: %v", err)
		return
	}
	for rows.Next() {
		var id, seq int64
		var status, lastErr string
		var attempts int
		if err := rows.Scan(&id, &status, &seq, &attempts, &lastErr); err != nil {
			t.Logf("read inbox rows: %v", err)
			break
		}
		fmt.Fprintf(&b, "  %d %s %d %d %q\n", id, status, seq, attempts, lastErr)
	}
	rows.Close()
	fmt.Fprintf(&b, "effect rows (id seq event_id message_id applied_us):\n")
	rows, err = e.db.QueryContext(ctx, "SELECT id, seq, event_id, message_id, applied_us FROM "+e.tables.Effects+
		" WHERE grp = ? AND msg_key = ? ORDER BY id", group, key)
	if err != nil {
		t.Logf("read effect rows: %v", err)
		return
	}
	for rows.Next() {
		var id, seq, at int64
		var ev, msg string
		if err := rows.Scan(&id, &seq, &ev, &msg, &at); err != nil {
			t.Logf("read effect rows: %v", err)
			break
		}
		fmt.Fprintf(&b, "  %d %d %s %s %d\n", id, seq, ev, msg, at)
	}
	rows.Close()
	t.Log(b.String())
}

// killLoop produces events under keys while the process running role
// (relay, consumer, or both: the relay and a consumer replica in turn) is
// killed with SIGKILL every interval (uniform in every), cycles times.
func killLoop(t *testing.T, e *env, role, keys string, events int, rate float64, cycles int, every [2]time.Duration, sz sizes) string {
	start := time.Now()
	ps := e.startPipeline(role, nil)
	held := e.watchHeld()
	prod := e.start("producer", nil, producerArgs(events, rate, keys)...)
	var victims []string
	switch {
	case e.b.inProcess():
		victims = []string{"node"}
	case role == "consumer":
		victims = []string{"consumer", "consumer2"} // replicas are killed in turn
	case role == "both":
		victims = []string{"relay", "consumer", "relay", "consumer2"}
	default:
		victims = []string{role}
	}
	kills := map[string]int{}
	for i := range cycles {
		time.Sleep(jitter(every[0], every[1]))
		v := victims[i%len(victims)]
		ps[v].kill()
		kills[ps[v].name]++
		ps[v] = e.start(ps[v].name, nil)
	}
	if role == "both" && !e.b.inProcess() && (kills["relay"] < 3 || kills["consumer"] < 3) {
		t.Errorf("killed the relay %d and a consumer %d times, want at least 3 each", kills["relay"], kills["consumer"])
	}
	if !prod.wait(sz.converge) || !prod.exitedOK() {
		t.Fatalf("producer did not finish: %v", prod.cmd.ProcessState)
	}
	st := producerStats(t, prod)
	r := e.finish(t, sz)
	var counts []string
	for _, name := range []string{"node", "relay", "consumer"} {
		if kills[name] > 0 {
			counts = append(counts, fmt.Sprintf("%s:%d", name, kills[name]))
		}
	}
	return r.Line(t.Name()[strings.LastIndex(t.Name(), "/")+1:], e.b.name,
		fmt.Sprintf("kills=%s %s elapsed=%s", strings.Join(counts, ","), keyed(keys, st, held), time.Since(start).Round(100*time.Millisecond)))
}

// failpoint returns a scenario in which the relay or consumer SIGKILLs
// itself at the window name, failpointCycles times, while events are
// produced. With wantRaw, the redelivery that the window causes must show
// as a raw duplicate.
func failpoint(name, keys string, wantRaw bool) func(t *testing.T, e *env, sz sizes) string {
	return func(t *testing.T, e *env, sz sizes) string {
		start, want := time.Now(), wantRaw
		role := strings.SplitN(name, "-", 2)[0]
		var extra []string
		if role == "relay" && strings.HasPrefix(e.b.broker, "nats") {
			// JetStream stores a message published again under the same
			// Nats-Msg-Id once: the relay's second publish is absorbed
			// by the broker, so no raw duplicate reaches consumers.
			want = false
			extra = append(extra, "broker_dedup=nats-msg-id")
		}
		v := e.victim(role)
		fp := func() []string {
			return []string{"EVENTGEN_FAILPOINT=" + name, fmt.Sprintf("EVENTGEN_FAILPOINT_AFTER=%d", 5+int(jitter(0, 25)))}
		}
		ps := e.startPipeline(role, fp())
		held := e.watchHeld()
		prod := e.start("producer", nil, producerArgs(100000, 100, keys)...)
		hits := 0
		for range sz.failpointCycles {
			if !ps[v].wait(60 * time.Second) {
				t.Fatalf("failpoint %s not reached within 60s", name)
			}
			if !ps[v].killedBySIGKILL() {
				t.Fatalf("%s ended without its failpoint: %v", v, ps[v].cmd.ProcessState)
			}
			hits++
			ps[v] = e.start(v, fp())
		}
		// Stop producing, then run without the failpoint.
		prod.stop(t)
		st := producerStats(t, prod)
		ps[v].kill()
		ps[v] = e.start(v, nil)
		if want {
			// The window's redelivery may come after the effects
			// converged (NATS redelivers after its 30s AckWait).
			deadline := time.Now().Add(45 * time.Second)
			for {
				r, err := chaos.Check(context.Background(), e.db, e.tables, e.groups, e.rawDir)
				if err != nil {
					t.Fatal(err)
				}
				if r.RawDup > 0 || time.Now().After(deadline) {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
		r := e.finish(t, sz)
		if want && r.RawDup == 0 {
			t.Errorf("no raw duplicate: the window %s was not hit", name)
		}
		return r.Line("failpoint:"+name, e.b.name, append(extra, fmt.Sprintf("kills=%d %s elapsed=%s",
			hits, keyed(keys, st, held), time.Since(start).Round(100*time.Millisecond)))...)
	}
}

// rollbacks commits events while a third of the transactions roll back
// after their publish: none of those may be delivered.
func rollbacks(t *testing.T, e *env, sz sizes) string {
	e.startPipeline("relay", nil)
	held := e.watchHeld()
	prod := e.start("producer", nil, producerArgs(sz.rollbackEvents, 0, chaos.KeysHot)...)
	if !prod.wait(sz.converge) || !prod.exitedOK() {
		t.Fatalf("producer did not finish: %v", prod.cmd.ProcessState)
	}
	stats := <-prod.lines
	r := e.finish(t, sz)
	if !strings.Contains(stats, `"rolled_back":`) || strings.Contains(stats, `"rolled_back":0`) {
		t.Errorf("producer rolled nothing back: %s", stats)
	}
	var st chaos.ProducerStats
	_ = json.Unmarshal([]byte(stats), &st)
	return r.Line("rollbacks", e.b.name, "producer="+strings.ReplaceAll(stats, " ", ""), keyed(chaos.KeysHot, st, held))
}

// threeRelays drains a backlog with three relays on one database: every
// row published, no raw duplicates without kills. The relays keep the
// default 30s lease: with the harness's short one, a publish slowed past it
// on a loaded machine lets another relay take the row over, which is the
// at-least-once behaviour of an expired lease, not a duplicate claim.
func threeRelays(t *testing.T, e *env, sz sizes) string {
	start := time.Now()
	held := e.watchHeld()
	prod := e.start("producer", nil, producerArgs(sz.threeRelayEvents, 0, chaos.KeysCold)...)
	var relays []*proc
	lease := []string{"-lease", eventgen.DefaultLeaseDuration.String()}
	if e.b.inProcess() {
		relays = append(relays, e.start("node", nil, append(lease, "-relays", "3")...))
	} else {
		e.start("consumer", nil)
		for range 3 {
			relays = append(relays, e.start("relay", nil, lease...))
		}
	}
	if !prod.wait(sz.converge) || !prod.exitedOK() {
		t.Fatalf("producer did not finish: %v", prod.cmd.ProcessState)
	}
	st := producerStats(t, prod)
	r := e.finish(t, sz)
	if r.RawDup != 0 {
		t.Errorf("raw duplicates without kills: %d", r.RawDup)
	}
	return r.Line("three-relays", e.b.name, fmt.Sprintf("published=%d %s elapsed=%s",
		r.Outbox["published"], keyed(chaos.KeysCold, st, held), time.Since(start).Round(100*time.Millisecond)))
}

// threeRelaysKill is threeRelays while one of the relays is killed now and
// then: raw duplicates are expected and reported.
func threeRelaysKill(t *testing.T, e *env, sz sizes) string {
	start := time.Now()
	held := e.watchHeld()
	prod := e.start("producer", nil, producerArgs(sz.threeRelayEvents, sz.threeRelayKillRate, chaos.KeysHot)...)
	var relays []*proc
	role, args := "relay", []string(nil)
	if e.b.inProcess() {
		role, args = "node", []string{"-relays", "3"}
		relays = append(relays, e.start(role, nil, args...))
	} else {
		e.start("consumer", nil)
		for range 3 {
			relays = append(relays, e.start(role, nil))
		}
	}
	kills := 0
	for i := range sz.threeRelayKillCycles {
		time.Sleep(jitter(sz.threeRelayKillEvery[0], sz.threeRelayKillEvery[1]))
		k := i % len(relays)
		relays[k].kill()
		kills++
		relays[k] = e.start(role, nil, args...)
	}
	if !prod.wait(sz.converge) || !prod.exitedOK() {
		t.Fatalf("producer did not finish: %v", prod.cmd.ProcessState)
	}
	st := producerStats(t, prod)
	r := e.finish(t, sz)
	return r.Line("three-relays-kill", e.b.name, fmt.Sprintf("kills=%d published=%d %s elapsed=%s",
		kills, r.Outbox["published"], keyed(chaos.KeysHot, st, held), time.Since(start).Round(100*time.Millisecond)))
}

// inProcessNode starts relays and consumers in the test process.
func (e *env) inProcessNode(t *testing.T, cfg chaos.NodeConfig) *chaos.Node {
	t.Helper()
	cfg.DB, cfg.DSN, cfg.Broker = e.b.db, e.dsn, e.b.broker
	cfg.Namespace, cfg.Tables, cfg.RawDir, cfg.Groups = e.ns, e.tables, e.rawDir, e.groups
	n, err := chaos.StartNode(context.Background(), cfg)
	if err != nil {
		if strings.Contains(err.Error(), "connect") {
			unavailable(t, e.b.name, err)
		}
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = n.Stop()
		}
	})
	return n
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, error)) bool {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if ok {
			return true
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: not within %s", what, d)
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// appliedIn counts the groups that applied event id.
func (e *env) appliedIn(ctx context.Context, id string) (int, error) {
	var n int
	err := e.db.QueryRowContext(ctx, "SELECT COUNT(DISTINCT grp) FROM "+e.tables.Effects+" WHERE event_id = ?", id).Scan(&n)
	return n, err
}

// commitOrder commits transaction B before A although A wrote its event
// first (lower id): a relay that reads by "highest id seen" loses A.
func commitOrder(t *testing.T, e *env, sz sizes) string {
	if e.b.db == "sqlite" {
		// SQLite has one writer at a time: a transaction holds the write
		// lock from its first write to its commit, so ids commit in order.
		return fmt.Sprintf("chaos scenario=commit-order backend=%s skipped=sqlite-serializes-writers", e.b.name)
	}
	ctx := context.Background()
	n := e.inProcessNode(t, chaos.NodeConfig{Relays: 1})
	late := 0
	for range sz.commitOrderRuns {
		txA, err := n.DB.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		idA, err := chaos.WriteEvent(ctx, txA, n.Outbox, e.tables, chaos.KindGood)
		if err != nil {
			t.Fatal(err)
		}
		idB, err := chaos.PublishOne(ctx, n.DB, n.Outbox, e.tables, chaos.KindGood, false)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 30*time.Second, "B delivered while A is open", func() (bool, error) {
			g, err := e.appliedIn(ctx, idB)
			return g == len(e.groups), err
		})
		if g, err := e.appliedIn(ctx, idA); err != nil || g != 0 {
			t.Fatalf("A applied before it committed: %d groups, %v", g, err)
		}
		if err := txA.Commit(); err != nil {
			t.Fatal(err)
		}
		if !waitFor(t, 30*time.Second, "A delivered after it committed last", func() (bool, error) {
			g, err := e.appliedIn(ctx, idA)
			return g == len(e.groups), err
		}) {
			late++
		}
	}
	if err := n.Stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
	r, err := chaos.Check(ctx, e.db, e.tables, e.groups, e.rawDir)
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() {
		t.Errorf("%s", r.Problem())
	}
	return r.Line("commit-order", e.b.name, fmt.Sprintf("runs=%d late_commit_lost=%d", sz.commitOrderRuns, late))
}

// errorCount counts inbox rows of group by status.
func (e *env) inboxStatus(ctx context.Context) (map[string]map[string]int, error) {
	rows, err := e.db.QueryContext(ctx, "SELECT consumer_group, status, COUNT(*) FROM "+e.tables.Inbox+" GROUP BY consumer_group, status")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]map[string]int{}
	for rows.Next() {
		var g, s string
		var n int
		if err := rows.Scan(&g, &s, &n); err != nil {
			return nil, err
		}
		if out[g] == nil {
			out[g] = map[string]int{}
		}
		out[g][s] = n
	}
	return out, rows.Err()
}

// poison mixes always-failing and undecodable events, and events the
// broker refuses, among good ones: the good ones are all handled, the bad
// ones end failed with their reason, and then requeue and re-execute work.
func poison(t *testing.T, e *env, sz sizes) string {
	ctx := context.Background()
	const consumerMax, outboxMax = 5, 5
	n := e.inProcessNode(t, chaos.NodeConfig{Relays: 1, MaxRetries: consumerMax,
		TuneOutbox: func(o *eventgen.OutboxOptions) { o.MaxRetries = outboxMax }})
	n.Publishers[0].SetReject(true)
	nPoison, nUndecodable, nRejected := sz.poisonBad/2, sz.poisonBad-sz.poisonBad/2, 3
	kinds := map[string]int{}
	total := sz.poisonGood + sz.poisonBad
	for i := range total {
		kind := chaos.KindGood
		switch {
		case i%(total/sz.poisonBad) == 0 && kinds[chaos.KindPoison] < nPoison:
			kind = chaos.KindPoison
		case i%(total/sz.poisonBad) == 1 && kinds[chaos.KindUndecodable] < nUndecodable:
			kind = chaos.KindUndecodable
		}
		kinds[kind]++
		if _, err := chaos.PublishOne(ctx, n.DB, n.Outbox, e.tables, kind, false); err != nil {
			t.Fatal(err)
		}
	}
	for range nRejected {
		if _, err := chaos.PublishOne(ctx, n.DB, n.Outbox, e.tables, chaos.KindRejected, false,
			eventgen.WithHeader(chaos.HeaderReject, "1")); err != nil {
			t.Fatal(err)
		}
	}
	// The good ones are all handled; the bad ones end failed.
	waitFor(t, sz.converge, "good events applied", func() (bool, error) {
		r, err := chaos.Check(ctx, e.db, e.tables, e.groups, "", chaos.KindGood)
		return r.Lost == 0, err
	})
	waitFor(t, sz.converge, "bad events failed", func() (bool, error) {
		st, err := e.inboxStatus(ctx)
		if err != nil {
			return false, err
		}
		for _, g := range e.groups {
			if st[g]["failed"] != nPoison+nUndecodable {
				return false, nil
			}
		}
		f, err := n.Outbox.Failed(ctx, 100)
		return len(f) == nRejected, err
	})
	for _, c := range n.Consumers {
		failed, err := c.Failed(ctx, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range failed {
			switch {
			case strings.Contains(f.Error, chaos.ErrPoison.Error()):
				if f.Attempt != consumerMax {
					t.Errorf("poison %s failed after %d attempts, want %d", f.ID, f.Attempt, consumerMax)
				}
			case strings.Contains(f.Error, "decode"):
			default:
				t.Errorf("failed message %s: unexpected reason %q", f.ID, f.Error)
			}
		}
	}
	failedOut, err := n.Outbox.Failed(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range failedOut {
		if f.Attempts != outboxMax || !strings.Contains(f.LastError, "refused") {
			t.Errorf("outbox row %d: attempts %d, last error %q", f.ID, f.Attempts, f.LastError)
		}
	}

	// Cure the poison, let the broker take the refused ones, and re-run.
	if _, err := e.db.ExecContext(ctx, "INSERT INTO "+e.tables.Cured+" (event_id) SELECT event_id FROM "+
		e.tables.Committed+" WHERE kind = ?", chaos.KindPoison); err != nil {
		t.Fatal(err)
	}
	reexecuted := 0
	for _, c := range n.Consumers {
		k, err := c.ReexecuteFailed(ctx)
		if err != nil {
			t.Fatal(err)
		}
		reexecuted += k
	}
	n.Publishers[0].SetReject(false)
	requeued, err := n.Outbox.RequeueFailed(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, sz.converge, "cured and requeued events applied, undecodable ones failed again", func() (bool, error) {
		r, err := chaos.Check(ctx, e.db, e.tables, e.groups, "", chaos.KindGood, chaos.KindPoison, chaos.KindRejected)
		if err != nil || r.Lost != 0 {
			return false, err
		}
		st, err := e.inboxStatus(ctx)
		if err != nil {
			return false, err
		}
		for _, g := range e.groups {
			if st[g]["failed"] != nUndecodable || st[g]["pending"]+st[g]["processing"] != 0 {
				return false, nil
			}
		}
		return true, nil
	})
	if err := n.Stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
	r, err := chaos.Check(ctx, e.db, e.tables, e.groups, e.rawDir, chaos.KindGood, chaos.KindPoison, chaos.KindRejected)
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() {
		t.Errorf("%s", r.Problem())
	}
	if want := len(e.groups) * (nPoison + nUndecodable); reexecuted != want {
		t.Errorf("re-executed %d messages, want %d", reexecuted, want)
	}
	if requeued != nRejected {
		t.Errorf("requeued %d outbox rows, want %d", requeued, nRejected)
	}
	return r.Line("poison", e.b.name, fmt.Sprintf("good=%d poison=%d undecodable=%d refused=%d reexecuted=%d requeued=%d",
		kinds[chaos.KindGood], nPoison, nUndecodable, nRejected, reexecuted, requeued))
}

// longTransaction holds one transaction open, with its event written,
// while other transactions commit events: they must not wait for it (most
// are applied before it commits; the p99 from write to effect is logged
// beside a baseline run at the same rate), and it is delivered once it
// commits.
func longTransaction(t *testing.T, e *env, sz sizes) string {
	if e.b.db == "sqlite" {
		// An open write transaction holds SQLite's only write lock: every
		// other producer waits for it, whatever the outbox does.
		return fmt.Sprintf("chaos scenario=long-transaction backend=%s skipped=sqlite-single-writer", e.b.name)
	}
	ctx := context.Background()
	n := e.inProcessNode(t, chaos.NodeConfig{Relays: 1})
	produce := func() {
		st, err := chaos.RunProducer(ctx, n.DB, n.Outbox, e.tables, chaos.ProducerOptions{
			Events: int(sz.longTxRate * sz.longTx.Seconds()), Workers: 4, Rate: sz.longTxRate})
		if err != nil || st.Errors != 0 {
			t.Errorf("producer: %+v, %v", st, err)
		}
	}
	produce() // the baseline
	split := time.Now().UnixMicro()
	heldFrom := time.Now()
	tx, err := n.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	longID, err := chaos.WriteEvent(ctx, tx, n.Outbox, e.tables, chaos.KindGood)
	if err != nil {
		t.Fatal(err)
	}
	produce() // beside the long transaction
	// The events committed beside it must all be applied while it is
	// still open: an outbox that waited for it would stall here. The
	// bound is generous because a loaded machine is slow, not blocked.
	waitFor(t, sz.converge, "events committed beside the open long transaction applied", func() (bool, error) {
		var committed, applied int
		err := e.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+e.tables.Committed+" WHERE written_us >= ?", split).Scan(&committed)
		if err != nil {
			return false, err
		}
		err = e.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+e.tables.Effects+" e JOIN "+e.tables.Committed+
			" c ON c.event_id = e.event_id WHERE c.written_us >= ?", split).Scan(&applied)
		return committed > 0 && applied >= committed*len(e.groups), err
	})
	held := time.Since(heldFrom)
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	r, ok, err := chaos.WaitConverged(ctx, e.db, e.tables, e.groups, e.rawDir, sz.converge)
	if err != nil || !ok {
		t.Errorf("not converged: %+v, %v", r, err)
	}
	if err := n.Stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
	var base, long []time.Duration
	rows, err := e.db.QueryContext(ctx, "SELECT c.written_us, e.applied_us FROM "+e.tables.Effects+" e JOIN "+
		e.tables.Committed+" c ON c.event_id = e.event_id WHERE c.event_id <> ?", longID)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var w, a int64
		if err := rows.Scan(&w, &a); err != nil {
			t.Fatal(err)
		}
		if d := time.Duration(a-w) * time.Microsecond; w < split {
			base = append(base, d)
		} else {
			long = append(long, d)
		}
	}
	rows.Close()
	p99 := func(ds []time.Duration) time.Duration {
		if len(ds) == 0 {
			return 0
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[len(ds)*99/100]
	}
	// Latencies are logged, not asserted (the machine is shared); what is
	// asserted, above, is that the events did not wait for the long
	// transaction.
	pb, pl := p99(base), p99(long)
	if r, err = chaos.Check(ctx, e.db, e.tables, e.groups, e.rawDir); err != nil || !r.OK() {
		t.Errorf("check: %+v, %v", r, err)
	}
	return r.Line("long-transaction", e.b.name, fmt.Sprintf("held=%s rate=%.0f/s p99_baseline=%s p99_beside=%s beside_applied_before_commit=%d",
		held.Round(100*time.Millisecond), sz.longTxRate, pb.Round(time.Millisecond), pl.Round(time.Millisecond), len(long)))
}

// dbConnectionKill terminates the relay's and consumers' PostgreSQL
// connections again and again (as a database restart does), while events
// are produced: they recover by themselves and nothing is lost.
func dbConnectionKill(t *testing.T, e *env, sz sizes) string {
	if e.b.db != "postgres" {
		return fmt.Sprintf("chaos scenario=db-connection-kill backend=%s skipped=postgres-only", e.b.name)
	}
	start := time.Now()
	e.appName = "chaos_" + e.suffix
	e.startPipeline("relay", nil)
	e.appName = ""
	held := e.watchHeld()
	prod := e.start("producer", nil, producerArgs(sz.killEvents, sz.killRate, chaos.KeysHot)...)
	cuts, terminated := 0, 0
	for range sz.killCycles {
		time.Sleep(jitter(sz.relayKillEvery[0], sz.relayKillEvery[1]))
		var k int
		if err := e.db.QueryRowContext(context.Background(),
			"SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = ?", "chaos_"+e.suffix).Scan(&k); err != nil {
			t.Fatal(err)
		}
		cuts++
		terminated += k
	}
	if !prod.wait(sz.converge) || !prod.exitedOK() {
		t.Fatalf("producer did not finish: %v", prod.cmd.ProcessState)
	}
	st := producerStats(t, prod)
	r := e.finish(t, sz)
	if terminated == 0 {
		t.Errorf("no connection was terminated")
	}
	return r.Line("db-connection-kill", e.b.name, fmt.Sprintf("cuts=%d connections_terminated=%d %s elapsed=%s",
		cuts, terminated, keyed(chaos.KeysHot, st, held), time.Since(start).Round(100*time.Millisecond)))
}
