package transport_test

import (
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/ThreeDotsLabs/watermill/pubsub/tests"

	"github.com/eventgen/eventgen/internal/testservices"
	"github.com/eventgen/eventgen/runtime/internal/testenv"
)

// TestReconnect runs Watermill's TestReconnect on NATS and Redis servers of
// the test's own: while 100 publishers send 10,000 messages, the suite asks
// twice for a restart, and the test kills its server (SIGKILL) and starts
// it again on the same port and data. Every message must arrive.
//
// The suite restarts a broker by running a command; here the command
// signals this process (SIGUSR1), which owns the server. It runs where
// the broker is configured (the binaries come with it), and not under
// -race: the restarts exercise reconnection, which the plain run covers.
func TestReconnect(t *testing.T) {
	if raceEnabled {
		t.Skip("the plain test run restarts the brokers")
	}
	if testing.Short() {
		t.Skip("broker restarts skipped in -short mode")
	}
	for _, b := range []struct {
		name, bin string
		args      func(port int, dir string) []string
	}{
		{"nats", "nats-server", func(port int, dir string) []string {
			return []string{"-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", filepath.Join(dir, "store")}
		}},
		{"redis", "redis-server", func(port int, dir string) []string {
			return []string{"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", dir, "--save", "",
				"--appendonly", "yes", "--appendfsync", "always"}
		}},
	} {
		t.Run(b.name, func(t *testing.T) {
			if testservices.Optional(t, b.name) == "" {
				t.Skipf("%s is not configured", b.name)
			}
			srv := testservices.StartServer(t, b.bin, b.name, b.args)
			restart := make(chan os.Signal, 4)
			signal.Notify(restart, syscall.SIGUSR1)
			done := make(chan struct{})
			go func() {
				defer close(done)
				for range restart {
					if err := srv.Restart(); err != nil {
						t.Errorf("restart %s: %v", b.name, err)
					}
				}
			}()
			t.Cleanup(func() {
				signal.Stop(restart)
				close(restart)
				<-done
			})

			f := features(b.name)
			f.RestartServiceCommand = []string{"kill", "-USR1", strconv.Itoa(os.Getpid())}
			s := newSuite(t, testenv.TransportCase{Name: b.name, URL: srv.URL(), ReplicasShare: true})
			tests.TestReconnect(t, tests.TestContext{TestID: tests.NewTestID(), Features: f}, s.pubSub)
		})
	}
}
