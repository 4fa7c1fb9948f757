//go:build unix

package chaos_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eventgen/eventgen/internal/chaos"
	"github.com/eventgen/eventgen/internal/testservices"
)

// TestChaosRestarts stops real server processes under a running pipeline:
// a NATS JetStream server and a Redis server (with an append-only file
// synced on every write) killed with SIGKILL and restarted on their data,
// and a PostgreSQL server stopped in immediate mode (as in a crash; it
// recovers from its WAL on start) and restarted. The servers are private
// to the test: started by it on ports and directories of their own, and
// stopped by their pids, so the machine's shared services are untouched.
//
// The relay and the consumers must recover without a restart, producers
// must keep committing while the broker is down, and nothing may be lost,
// invented or applied twice.
func TestChaosRestarts(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos suite skipped in -short mode")
	}
	sz := runSizes()
	res := &results{}
	t.Cleanup(func() { res.save(t) })
	pg := newPrivatePostgres(t)
	nats := testservices.StartServer(t, "nats-server", "nats", func(port int, dir string) []string {
		return []string{"-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", filepath.Join(dir, "store")}
	})
	redis := testservices.StartServer(t, "redis-server", "redis", func(port int, dir string) []string {
		return []string{"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", dir, "--save", "",
			"--appendonly", "yes", "--appendfsync", "always"}
	})
	on := func(broker *testservices.Server) backend {
		return backend{name: "own-postgres+own-" + broker.Scheme, db: "postgres", dsn: pg.dsn(), broker: broker.URL()}
	}

	for _, s := range []*testservices.Server{nats, redis} {
		t.Run("broker-restart-"+s.Scheme, func(t *testing.T) {
			e := newEnv(t, on(s))
			line := restart(t, e, sz, "broker", s.Kill, s.Start)
			res.add(t, line)
		})
	}
	t.Run("db-restart", func(t *testing.T) {
		e := newEnv(t, on(nats))
		line := restart(t, e, sz, "db", func() { pg.stopImmediate() }, func() {
			pg.start()
			// Drop the test's own connections that died with the server.
			for range 10 {
				if e.db.PingContext(context.Background()) == nil {
					break
				}
			}
		})
		res.add(t, line)
	})
}

// restart produces events at the outage rate while the server called what
// is stopped by stop for the outage time and started again by start, then
// checks the result.
func restart(t *testing.T, e *env, sz sizes, what string, stop, start func()) string {
	begin := time.Now()
	ps := e.startPipeline("relay", nil)
	events := int(sz.outageRate * (sz.outage + 4*time.Second).Seconds())
	prod := e.start("producer", nil, producerArgs(events, sz.outageRate, chaos.KeysUnique)...)
	time.Sleep(1500 * time.Millisecond)
	relayPid := ps["relay"].cmd.Process.Pid
	before := rssKiB(relayPid)
	stop()
	peak := sampleRSS(relayPid, sz.outage)
	start()
	if !prod.wait(sz.converge) || !prod.exitedOK() {
		t.Fatalf("producer did not finish: %v", prod.cmd.ProcessState)
	}
	st := producerStats(t, prod)
	if what == "broker" && st.Errors != 0 {
		t.Errorf("%d business transactions failed while the broker was down, want 0", st.Errors)
	}
	for role, p := range ps {
		select {
		case <-p.done:
			t.Errorf("%s exited during the %s outage: %v", role, what, p.cmd.ProcessState)
		default:
		}
	}
	growth := "n/a" // no /proc
	if before > 0 && peak > 0 {
		growth = fmt.Sprintf("%.1fMiB", float64(peak-before)/1024)
		if peak-before > maxOutageGrowthKiB {
			t.Errorf("the relay's RSS grew from %d KiB to %d KiB during the %s outage, over %d KiB", before, peak, what, maxOutageGrowthKiB)
		}
	}
	r := e.finish(t, sz)
	return r.Line(what+"-restart", e.b.name, fmt.Sprintf("outage=%s producer_committed=%d producer_errors=%d relay_rss_before=%.1fMiB relay_rss_growth=%s elapsed=%s",
		sz.outage, st.Committed, st.Errors, float64(before)/1024, growth, time.Since(begin).Round(100*time.Millisecond)))
}

// maxOutageGrowthKiB bounds how much the relay's memory may grow while the
// broker or the database is down (50 MiB).
const maxOutageGrowthKiB = 50 << 10

// rssKiB returns the resident set size of process pid in KiB, or 0 where
// /proc does not tell.
func rssKiB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kib, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return kib
		}
	}
	return 0
}

// sampleRSS samples process pid's RSS every 100ms for d and returns the
// largest value seen.
func sampleRSS(pid int, d time.Duration) int {
	peak := rssKiB(pid)
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		peak = max(peak, rssKiB(pid))
	}
	return peak
}

// privatePostgres is a PostgreSQL cluster that the test creates with
// initdb in a directory of its own and runs on a port of its own. As root,
// its commands run as the postgres user, since the server refuses root.
type privatePostgres struct {
	t      *testing.T
	binDir string
	dir    string
	port   int
	as     []string // prefix that runs a command as the cluster's owner
}

func newPrivatePostgres(t *testing.T) *privatePostgres {
	initdb := testservices.LookBin(t, "initdb", postgresBinDirs()...)
	p := &privatePostgres{t: t, binDir: filepath.Dir(initdb), port: testservices.FreePort(t)}
	dir, err := os.MkdirTemp("", "eventgen-chaos-pg-")
	if err != nil {
		t.Fatal(err)
	}
	p.dir = dir
	t.Cleanup(func() { os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			unavailable(t, "postgres user", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		p.as = []string{testservices.LookBin(t, "runuser", "/usr/sbin", "/sbin"), "-u", "postgres", "--"}
	}
	p.run("initdb", "-D", p.data(), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
	p.start()
	t.Cleanup(func() { p.run("pg_ctl", "-D", p.data(), "-m", "fast", "-w", "stop") })
	return p
}

// postgresBinDirs lists where Debian and others keep initdb and pg_ctl.
func postgresBinDirs() []string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	return append(dirs, "/usr/local/pgsql/bin")
}

func (p *privatePostgres) data() string { return filepath.Join(p.dir, "data") }

func (p *privatePostgres) dsn() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.port)
}

// run runs one of the server's programs as the cluster's owner.
func (p *privatePostgres) run(prog string, args ...string) {
	p.t.Helper()
	argv := append(append(append([]string{}, p.as...), filepath.Join(p.binDir, prog)), args...)
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		p.t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
}

// start starts the server and waits until it accepts connections.
func (p *privatePostgres) start() {
	p.t.Helper()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=200", p.port, p.dir)
	p.run("pg_ctl", "-D", p.data(), "-o", opts, "-l", filepath.Join(p.dir, "server.log"), "-w", "-t", "60", "start")
}

// stopImmediate stops the server without a checkpoint: pg_ctl sends
// SIGQUIT to the postmaster (whose pid is in the cluster's own
// postmaster.pid), every connection drops at once, and the next start
// recovers from the WAL, as after a crash.
func (p *privatePostgres) stopImmediate() {
	p.t.Helper()
	p.run("pg_ctl", "-D", p.data(), "-m", "immediate", "-w", "stop")
}
