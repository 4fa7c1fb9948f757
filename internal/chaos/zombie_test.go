//go:build unix

package chaos_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eventgen/eventgen/internal/chaos"
)

// The zombie scenario's settings.
const (
	// zombieHeartbeat is the AMQP heartbeat of the scenario's processes,
	// set with the URL's heartbeat parameter (amqp091 honours it).
	// RabbitMQ closes a connection after two missed heartbeats, so a
	// pause past 2*zombieHeartbeat costs the paused process its
	// connections, as a long pause does with the default 10s heartbeat.
	zombieHeartbeat = 2 * time.Second
	// zombieRedelivery is when NATS (AckWait) and Redis (idle claim) give
	// a silent consumer's unacked messages to another replica.
	zombieRedelivery = 30 * time.Second
	// zombieMargin is how much longer than the longest of those timeouts
	// a pause lasts.
	zombieMargin = 3 * time.Second
	// zombieRecovery bounds the time from SIGCONT to the end of the
	// resumed process's first publish (relay) or handled message
	// (consumer) that began after the SIGCONT, as its progress log says.
	zombieRecovery = 15 * time.Second
	// zombieStop bounds the time from SIGTERM to the resumed process's
	// exit, which must have status 0.
	zombieStop = 15 * time.Second
	// zombieRate is the producer's rate, in transactions per second:
	// enough that the resumed relay has a backlog and publishes at full
	// concurrency (more publishes than the AMQP publisher has channels)
	// when it finds its connection dead. At 50/s watermill-amqp v3.0.2's
	// hang and its panic in Close showed in 1 run of 12; at 150/s in 5 of 6.
	zombieRate = 150
)

// zombie returns the zombie scenario with relays relay processes (1 or 2).
// While a producer commits, the first relay process is paused with
// SIGSTOP past its lease and the broker's heartbeat timeout and resumed
// with SIGCONT, then a consumer replica likewise (past its lease, the
// heartbeat timeout and, on NATS and Redis in the two-relay shape, the
// redelivery timeout).
// Each must work again within zombieRecovery, without a restart; every
// committed event is then applied once per group (with one relay, by the
// resumed relay alone); and each resumed process must exit 0 within
// zombieStop of a SIGTERM.
//
// On the in-process broker relay and consumers share a node process: with
// two relays there are two node processes (each with its own in-process
// broker, sharing the database), the first paused as the relay and the
// second as the consumer; with one relay the one node is paused twice.
func zombie(relays int) func(t *testing.T, e *env, sz sizes) string {
	return func(t *testing.T, e *env, sz sizes) string {
		begin := time.Now()
		if strings.HasPrefix(e.b.broker, "amqp") {
			e.b.broker = withHeartbeat(t, e.b.broker, zombieHeartbeat)
		}
		ps, progress := map[string]*proc{}, map[string]string{}
		startAs := func(key, role string) {
			progress[key] = filepath.Join(e.logDir, key+".progress")
			ps[key] = e.start(role, nil, "-progress", progress[key])
		}
		relay, consumer := "relay", "consumer"
		if e.b.inProcess() {
			relay, consumer = "node", "node"
			startAs("node", "node")
			if relays == 2 {
				consumer = "node2"
				startAs("node2", "node")
			}
		} else {
			startAs("consumer", "consumer")
			startAs("consumer2", "consumer")
			startAs("relay", "relay")
			if relays == 2 {
				startAs("relay2", "relay")
			}
		}
		prod := e.start("producer", nil, producerArgs(1_000_000, zombieRate, chaos.KeysUnique)...)
		time.Sleep(1500 * time.Millisecond)

		// The relay, then a consumer replica: paused, resumed, and watched
		// until they work again.
		steps := []struct{ role, key, kind, work string }{
			{"relay", relay, chaos.ProgressPublish, "publish"},
			{"consumer", consumer, chaos.ProgressHandle, "handle a message"},
		}
		ms := func(d time.Duration) string { return d.Round(10 * time.Millisecond).String() }
		var stats []string
		resumed := map[string]time.Time{}
		for _, s := range steps {
			pause := e.zombiePause(s.role, relays == 2)
			at, recovery, ok := pauseResume(t, ps[s.key], progress[s.key], s.kind, pause)
			if !ok {
				d, status := terminate(t, ps[s.key])
				t.Fatalf("the resumed %s did not %s within %s of SIGCONT (paused %s); after SIGTERM: %s in %s",
					s.role, s.work, zombieRecovery, pause, status, d.Round(100*time.Millisecond))
			}
			resumed[s.role] = at
			stats = append(stats, fmt.Sprintf("%s_pause=%s %s_recovery=%s", s.role, pause, s.role, ms(recovery)))
		}

		// Everything committed is applied, with the resumed relay the only
		// one in the one-relay shape, before anything is stopped.
		prod.stop(t)
		st := producerStats(t, prod)
		stats = append(stats, fmt.Sprintf("producer_errors=%d", st.Errors))
		if r, ok, err := chaos.WaitConverged(context.Background(), e.db, e.tables, e.groups, e.rawDir, sz.converge); err != nil {
			t.Fatal(err)
		} else if !ok {
			t.Fatalf("not converged within %s after the pauses: %+v", sz.converge, r)
		}
		stops := map[string]time.Duration{}
		for _, s := range steps {
			n := countProgress(t, progress[s.key], s.kind, resumed[s.role])
			d, stopped := stops[s.key] // one node process plays both roles
			if !stopped {
				var status string
				d, status = terminate(t, ps[s.key])
				if status != "exit 0" || d > zombieStop {
					t.Errorf("the resumed %s after SIGTERM: %s in %s, want exit 0 within %s", s.role, status, d.Round(100*time.Millisecond), zombieStop)
				}
				stops[s.key] = d
			}
			stats = append(stats, fmt.Sprintf("%s_stop=%s %s_%s_after_resume=%d", s.role, ms(d), s.role, s.kind, n))
		}
		r := e.finish(t, sz)
		name := map[int]string{1: "zombie-one-relay", 2: "zombie-two-relays"}[relays]
		return r.Line(name, e.b.name, append(stats, "elapsed="+time.Since(begin).Round(100*time.Millisecond).String())...)
	}
}

// zombiePause returns how long the process of role (relay or consumer) is
// paused: zombieMargin past its lease, past the time RabbitMQ takes to
// drop a silent client, and, for a consumer when pastRedelivery is set,
// past the time NATS or Redis take to give its messages to another
// replica. One shape pauses past redelivery, the other not, which keeps
// both cases covered at half the wall time.
func (e *env) zombiePause(role string, pastRedelivery bool) time.Duration {
	d := chaos.RelayOptions(e.tables, nil).LeaseDuration
	if role == "consumer" {
		d = max(d, chaos.ConsumerOptions(e.tables, "", 0, nil).LeaseDuration)
		if pastRedelivery && e.b.slowRedelivery() {
			d = max(d, zombieRedelivery)
		}
	}
	if strings.HasPrefix(e.b.broker, "amqp") {
		d = max(d, 2*zombieHeartbeat)
	}
	return d + zombieMargin
}

// withHeartbeat returns the AMQP URL raw with its heartbeat set to d.
func withHeartbeat(t *testing.T, raw string, d time.Duration) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal("the AMQP URL does not parse (not shown: it may hold a password)")
	}
	q := u.Query()
	q.Set("heartbeat", strconv.Itoa(int(d/time.Second)))
	u.RawQuery = q.Encode()
	return u.String()
}

// signal sends sig to p, by its own pid, unless p has exited.
func (p *proc) signal(sig os.Signal) {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(sig)
	}
}

// pauseResume pauses p with SIGSTOP for d, resumes it with SIGCONT, and
// returns when it sent the SIGCONT and how long after it p completed its
// first piece of work of kind that began after it, as its progress log
// says. ok is false if none came within zombieRecovery.
func pauseResume(t *testing.T, p *proc, progress, kind string, d time.Duration) (resumed time.Time, _ time.Duration, ok bool) {
	t.Helper()
	p.signal(syscall.SIGSTOP)
	// A test that fails mid-pause must not leave its cleanup a stopped
	// process to wait for.
	t.Cleanup(func() { p.signal(syscall.SIGCONT) })
	time.Sleep(d)
	p.signal(syscall.SIGCONT)
	resumed = time.Now()
	for deadline := resumed.Add(zombieRecovery); ; time.Sleep(100 * time.Millisecond) {
		lines, err := chaos.ReadProgress(progress)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range lines {
			if l.Kind == kind && l.Start.After(resumed) {
				return resumed, l.End.Sub(resumed), true
			}
		}
		select {
		case <-p.done:
			t.Errorf("%s exited after its SIGCONT: %v", p.name, p.cmd.ProcessState)
			return resumed, 0, false
		default:
		}
		if time.Now().After(deadline) {
			return resumed, 0, false
		}
	}
}

// countProgress counts the pieces of work of kind in the progress log at
// path that began after since.
func countProgress(t *testing.T, path, kind string, since time.Time) int {
	t.Helper()
	lines, err := chaos.ReadProgress(path)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range lines {
		if l.Kind == kind && l.Start.After(since) {
			n++
		}
	}
	return n
}

// terminate sends SIGTERM to p and returns how long p took to exit and how
// it ended: "exit N", "signal S", or "hung" when it was still running 10s
// past zombieStop (chaosnode exits 3 after 20s), and was then killed.
func terminate(t *testing.T, p *proc) (time.Duration, string) {
	t.Helper()
	start := time.Now()
	p.signal(syscall.SIGTERM)
	if !p.wait(zombieStop + 10*time.Second) {
		p.kill()
		return time.Since(start), "hung"
	}
	d := time.Since(start)
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case ok && ws.Signaled():
		return d, "signal " + ws.Signal().String()
	default:
		return d, fmt.Sprintf("exit %d", p.cmd.ProcessState.ExitCode())
	}
}
