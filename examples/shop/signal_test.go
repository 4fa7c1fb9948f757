//go:build unix

package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// envMain makes the test binary run the program's main with the
// variable's value as its arguments, instead of the tests.
const envMain = "EVENTGEN_SHOP_RUN_MAIN"

func TestMain(m *testing.M) {
	if args, ok := os.LookupEnv(envMain); ok {
		os.Args = append([]string{"shop"}, strings.Fields(args)...)
		main()
	}
	os.Exit(m.Run())
}

// TestSIGTERMStops sends SIGTERM to the program while it places orders: it
// must stop its relay and consumers and exit by itself, promptly, running
// its deferred cleanup (the temporary database directory is removed),
// rather than die of the signal.
func TestSIGTERMStops(t *testing.T) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envMain+"=-orders 1000000 -q")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}) // closed once the program has exited
	defer func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	// The first line names the temporary database, which must be gone
	// after the stop.
	first := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Scan()
		first <- sc.Text()
		for sc.Scan() {
		}
		_ = cmd.Wait()
		close(done)
	}()
	var dbFile string
	select {
	case line := <-first:
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "database" {
			t.Fatalf("first line %q does not name the database", line)
		}
		dbFile = f[2]
	case <-time.After(30 * time.Second):
		t.Fatal("the program did not start within 30s")
	}
	time.Sleep(500 * time.Millisecond) // orders are being placed
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		// SIGQUIT makes the Go runtime print every goroutine's stack.
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
		t.Fatalf("still running 10s after SIGTERM\nstderr:\n%s", stderr.String())
	}
	t.Logf("stopped %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		t.Fatalf("killed by %v instead of stopping", ws.Signal())
	}
	if code := ws.ExitStatus(); code != 1 || !strings.Contains(stderr.String(), "context canceled") {
		t.Errorf("exit %d, want 1 with a canceled context\nstderr:\n%s", code, stderr.String())
	}
	if _, err := os.Stat(dbFile); !os.IsNotExist(err) {
		t.Errorf("the temporary database %s is still there after the stop: %v", dbFile, err)
	}
}
