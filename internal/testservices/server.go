package testservices

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Server is a broker server (nats-server, redis-server) that a test runs
// on a loopback port and a data directory of its own, to stop and start it
// without touching the shared services.
type Server struct {
	t testing.TB
	// Scheme is the URL scheme of the broker (nats, redis).
	Scheme string
	// Port is its loopback port, the same across restarts.
	Port int
	// Dir is its data directory, kept across restarts.
	Dir  string
	bin  string
	args []string
	cmd  *exec.Cmd
	done chan struct{}
}

// StartServer starts the server bin, found on PATH or in the usual system
// directories, with the arguments args returns for its port and directory,
// and kills it at t's cleanup. A missing binary skips t, or fails it under
// EVENTGEN_TEST_REQUIRE_SERVICES=1.
func StartServer(t testing.TB, bin, scheme string, args func(port int, dir string) []string) *Server {
	t.Helper()
	s := &Server{t: t, Scheme: scheme, bin: LookBin(t, bin, "/usr/sbin", "/usr/bin", "/usr/local/bin"),
		Port: FreePort(t), Dir: t.TempDir()}
	s.args = args(s.Port, s.Dir)
	s.Start()
	t.Cleanup(s.Kill)
	return s
}

// URL returns the server's URL.
func (s *Server) URL() string { return fmt.Sprintf("%s://127.0.0.1:%d", s.Scheme, s.Port) }

// Start runs the server on its port and data, and waits until it listens.
func (s *Server) Start() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatal(err)
	}
}

// Restart kills the server and starts it again on the same port and data,
// as a crash and a restart would. Unlike Start and Kill it may run on any
// goroutine: it returns its error instead of failing the test.
func (s *Server) Restart() error {
	s.Kill()
	return s.start()
}

func (s *Server) start() error {
	log, err := os.OpenFile(filepath.Join(s.Dir, "server.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	s.cmd = exec.Command(s.bin, s.args...)
	s.cmd.Stdout, s.cmd.Stderr = log, log
	if err := s.cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	s.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		_ = cmd.Wait()
		log.Close()
		close(done)
	}(s.cmd, s.done)
	return listening(filepath.Base(s.bin), s.Port)
}

// Kill sends SIGKILL to the server by its pid and waits for it to exit.
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	_ = syscall.Kill(s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.done
	s.cmd = nil
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// listening waits until something accepts connections on port, for at
// most 30 seconds.
func listening(what string, port int) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening on port %d within 30s: %w", what, port, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// LookBin finds a server binary on PATH or in dirs. A missing one skips t,
// or fails it under EVENTGEN_TEST_REQUIRE_SERVICES=1.
func LookBin(t testing.TB, name string, dirs ...string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	Unavailable(t, name, fmt.Errorf("%s is neither on PATH nor in %v", name, dirs))
	return ""
}
