//go:build unix

package chaos_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/uptrace/bun"

	shopevents "github.com/eventgen/eventgen/examples/generated"
	"github.com/eventgen/eventgen/internal/chaos"
	"github.com/eventgen/eventgen/internal/testservices"
	"github.com/eventgen/eventgen/runtime/transport"
)

// nodeBin is the chaosnode binary, built once by TestMain.
var nodeBin string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "chaosnode-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	nodeBin = filepath.Join(dir, "chaosnode")
	if out, err := exec.Command("go", "build", "-o", nodeBin, "./cmd/chaosnode").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build chaosnode: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Environment variables of the chaos suite. The services come from
// internal/testservices's EVENTGEN_TEST_* variables.
const (
	// envFull selects the full sizes instead of the CI ones.
	envFull = "EVENTGEN_CHAOS_FULL"
	// envResults names a file that receives the result lines of a run.
	envResults = "EVENTGEN_CHAOS_RESULTS"
)

// backend is a database and a broker that a scenario runs on.
type backend struct {
	name   string // such as postgres+amqp
	db     string // sqlite, postgres or mysql
	dsn    string // empty for SQLite (a file per scenario)
	broker string // empty for the in-process broker
	// secret is a password put into the DSN that must never be logged.
	secret string
}

func (b backend) inProcess() bool { return b.broker == "" }

// slowRedelivery reports whether a killed consumer's unacked messages come
// back only after a timeout: NATS's 30s AckWait, Redis's 30s idle claim.
func (b backend) slowRedelivery() bool {
	return strings.HasPrefix(b.broker, "nats") || strings.HasPrefix(b.broker, "redis")
}

// backends returns SQLite with the in-process broker, PostgreSQL with
// RabbitMQ, with NATS JetStream and with Redis Streams, and MariaDB with
// RabbitMQ, where their variables are set. Under EVENTGEN_TEST_REQUIRE_SERVICES=1 a missing one
// fails the test.
func backends(t *testing.T) []backend {
	bs := []backend{{name: "sqlite+mem", db: "sqlite"}}
	get := func(service string) string { return testservices.Optional(t, service) }
	pg, my, amqp, nats, redis := get("postgres"), get("mysql"), get("amqp"), get("nats"), get("redis")
	if pg != "" {
		pgDSN, secret := withSecret(pg)
		if amqp != "" {
			bs = append(bs, backend{name: "postgres+amqp", db: "postgres", dsn: pgDSN, broker: amqp, secret: secret})
		}
		if nats != "" {
			bs = append(bs, backend{name: "postgres+nats", db: "postgres", dsn: pgDSN, broker: nats, secret: secret})
		}
		if redis != "" {
			bs = append(bs, backend{name: "postgres+redis", db: "postgres", dsn: pgDSN, broker: redis, secret: secret})
		}
	}
	if my != "" && amqp != "" {
		bs = append(bs, backend{name: "mysql+amqp", db: "mysql", dsn: my, broker: amqp})
	}
	return bs
}

// withSecret adds a password to a PostgreSQL URL that has none (the CI
// server trusts loopback, so any password connects), so that tests can
// assert the password never reaches a log.
func withSecret(dsn string) (string, string) {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		return dsn, ""
	}
	if _, ok := u.User.Password(); ok {
		return dsn, ""
	}
	secret := "chaosPw" + randHex(6)
	u.User = url.UserPassword(u.User.Username(), secret)
	return u.String(), secret
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// jitter returns a duration uniformly in [lo, hi).
func jitter(lo, hi time.Duration) time.Duration {
	n, _ := rand.Int(rand.Reader, big.NewInt(int64(hi-lo)))
	return lo + time.Duration(n.Int64())
}

// env is one scenario's tables, topics, logs and child processes.
type env struct {
	t      *testing.T
	b      backend
	dsn    string
	suffix string
	tables chaos.Tables
	ns     string
	rawDir string
	logDir string
	db     *bun.DB // the test's own connection, for checks
	groups []string
	// appName, if set, is the PostgreSQL application_name of the
	// children started next.
	appName string

	mu    sync.Mutex
	procs []*proc
}

var groups = []string{"billing", "shipping"}

func newEnv(t *testing.T, b backend) *env {
	t.Helper()
	e := &env{
		t: t, b: b, dsn: b.dsn, suffix: randHex(5), ns: chaos.Namespace(),
		rawDir: t.TempDir(), logDir: t.TempDir(), groups: groups,
	}
	e.tables = chaos.NewTables(e.suffix)
	if b.db == "sqlite" {
		e.dsn = filepath.Join(t.TempDir(), "chaos.db")
	}
	db, err := chaos.OpenDB(b.db, e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		unavailable(t, b.db, err)
	}
	e.db = db
	t.Cleanup(func() {
		if b.db != "sqlite" {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for _, tbl := range e.tables.All() {
				_, _ = db.ExecContext(ctx, "DROP TABLE IF EXISTS "+tbl)
			}
		}
		db.Close()
	})
	if err := chaos.CreateTables(ctx, db, e.tables); err != nil {
		t.Fatal(err)
	}
	if !b.inProcess() {
		// Create the groups before anything is published (AMQP drops
		// messages for groups that do not exist yet), and remove the
		// topic afterwards.
		tr, err := chaos.OpenTransport(ctx, b.broker, transport.Options{})
		if err != nil {
			unavailable(t, e.b.name, err)
		}
		for _, g := range e.groups {
			sub, err := tr.Subscriber(g)
			if err != nil {
				t.Fatal(err)
			}
			if err := chaos.NewSubscriber(sub, e.ns, g, nil, nil).SubscribeInitialize(shopevents.TopicOrders); err != nil {
				t.Fatal(err)
			}
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := tr.DeleteTopic(ctx, e.ns+shopevents.TopicOrders, e.groups...); err != nil {
				t.Logf("delete topic: %v", err)
			}
			tr.Close()
		})
	}
	t.Cleanup(e.cleanup)
	return e
}

func unavailable(t *testing.T, what string, err error) {
	t.Helper()
	testservices.Unavailable(t, what, err)
}

// cleanup stops the children still running and checks their logs.
func (e *env) cleanup() {
	e.mu.Lock()
	procs := e.procs
	e.mu.Unlock()
	for _, p := range procs {
		p.stop(e.t)
	}
	logs, _ := filepath.Glob(filepath.Join(e.logDir, "*.log"))
	for _, name := range logs {
		b, _ := os.ReadFile(name)
		if e.b.secret != "" && strings.Contains(string(b), e.b.secret) {
			e.t.Errorf("%s: the DSN's password appears in the log", filepath.Base(name))
		}
		if e.t.Failed() {
			tail := string(b)
			if len(tail) > 3000 {
				tail = tail[len(tail)-3000:]
			}
			e.t.Logf("--- %s (tail):\n%s", filepath.Base(name), tail)
		}
	}
}

// proc is a chaosnode child process.
type proc struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string   // its standard output
	done  chan struct{} // closed when it has exited
}

// start runs chaosnode in role with args and the failpoint environment
// fp (may be nil), and waits until it is ready (for every role but the
// producer).
func (e *env) start(role string, fp []string, args ...string) *proc {
	e.t.Helper()
	all := append([]string{"-role", role, "-db", e.b.db, "-tables", e.suffix, "-namespace", e.ns,
		"-raw-dir", e.rawDir, "-groups", strings.Join(e.groups, ",")}, args...)
	cmd := exec.Command(nodeBin, all...)
	dsn := e.dsn
	if e.appName != "" {
		sep := "?"
		if strings.Contains(dsn, "?") {
			sep = "&"
		}
		dsn += sep + "application_name=" + e.appName
	}
	cmd.Env = append(os.Environ(), "CHAOS_DSN="+dsn, "CHAOS_BROKER="+e.b.broker)
	cmd.Env = append(cmd.Env, fp...)
	e.mu.Lock()
	n := len(e.procs)
	e.mu.Unlock()
	logf, err := os.Create(filepath.Join(e.logDir, fmt.Sprintf("%02d-%s.log", n, role)))
	if err != nil {
		e.t.Fatal(err)
	}
	cmd.Stderr = logf
	stdin, err := cmd.StdinPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	p := &proc{name: role, cmd: cmd, stdin: stdin, lines: make(chan string, 16), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
		_ = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	e.mu.Lock()
	e.procs = append(e.procs, p)
	e.mu.Unlock()
	if role != "producer" {
		select {
		case l := <-p.lines:
			if l != "ready" {
				e.t.Fatalf("%s: unexpected output %q", role, l)
			}
		case <-p.done:
			e.t.Fatalf("%s exited before it was ready: %v", role, cmd.ProcessState)
		case <-time.After(60 * time.Second):
			e.t.Fatalf("%s not ready within 60s", role)
		}
	}
	return p
}

// kill sends SIGKILL to p, by its own pid, and waits for it to exit.
func (p *proc) kill() {
	_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// stop closes p's standard input, which stops it cleanly, and kills it if
// it has not exited within 30s.
func (p *proc) stop(t *testing.T) {
	_ = p.stdin.Close()
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Errorf("%s did not stop within 30s; killing it", p.name)
		p.kill()
	}
}

// wait waits up to d for p to exit by itself.
func (p *proc) wait(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// killedBySIGKILL reports whether p ended by SIGKILL.
func (p *proc) killedBySIGKILL() bool {
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// exitedOK reports whether p exited with status 0.
func (p *proc) exitedOK() bool { return p.cmd.ProcessState.Success() }
