package opscli

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/eventgen/eventgen/internal/cli"
	"github.com/eventgen/eventgen/runtime/console"
	"github.com/eventgen/eventgen/runtime/eventgen"
)

func TestConsoleListenRule(t *testing.T) {
	for _, tt := range []struct {
		addr          string
		tls, insecure bool
		ok            bool
	}{
		{"127.0.0.1:8080", false, false, true},
		{"[::1]:8080", false, false, true},
		{"localhost:0", false, false, true},
		{":8080", false, false, false},
		{"0.0.0.0:8080", false, false, false},
		{"10.1.2.3:8080", false, false, false},
		{"ops.example:8080", false, false, false},
		{"0.0.0.0:8443", true, false, true},
		{"0.0.0.0:8080", false, true, true},
		{"nope", false, false, false},
	} {
		if err := checkListen(tt.addr, tt.tls, tt.insecure); (err == nil) != tt.ok {
			t.Errorf("checkListen(%q, tls %v, insecure %v) = %v, want ok %v", tt.addr, tt.tls, tt.insecure, err, tt.ok)
		}
	}
}

func TestConsoleToken(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte("from-the-file-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvConsoleToken, "from-the-environment-0123")
	if tok, made, err := consoleToken(file); tok != "from-the-file-0123456789" || made || err != nil {
		t.Errorf("-token-file: %q %v %v", tok, made, err)
	}
	if tok, made, err := consoleToken(""); tok != "from-the-environment-0123" || made || err != nil {
		t.Errorf("$%s: %q %v %v", EnvConsoleToken, tok, made, err)
	}
	t.Setenv(EnvConsoleToken, "")
	a, made, _ := consoleToken("")
	b, _, _ := consoleToken("")
	if !made || len(a) < console.MinTokenLength || a == b {
		t.Errorf("made tokens %q, %q", a, b)
	}
}

func TestConsoleCommandErrors(t *testing.T) {
	dsn, _ := sqliteDB(t)
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvDSN, dsn)
	for _, tt := range []struct {
		args   []string
		stderr string
	}{
		{[]string{"console", "-listen", "0.0.0.0:0"}, "is not a loopback address: give -tls-cert and -tls-key, or -insecure-no-tls"},
		{[]string{"console", "-tls-cert", "c.pem"}, "give both -tls-cert and -tls-key"},
		{[]string{"console", "-token-file", short}, "fewer than 16"},
		{[]string{"console", "-token-file", filepath.Join(dir, "none")}, "-token-file: open "},
	} {
		code, _, stderr := run(t, dir, tt.args...)
		if code != cli.ExitUsage || !strings.Contains(stderr, tt.stderr) {
			t.Errorf("eventgen-ops %s = %d, %q; want 2 and %q", strings.Join(tt.args, " "), code, stderr, tt.stderr)
		}
	}
}

func TestConsoleHandler(t *testing.T) {
	_, db := sqliteDB(t)
	ctx := context.Background()
	f := &consoleFlags{inboxTable: tableName(t, "cli_inbox")}
	f.db.table = tableName(t, "cli_outbox")
	newOutbox(t, db, f.db.table, nil)
	for _, g := range []string{"billing", "shipping"} {
		c, err := eventgen.NewConsumer(db, nil, eventgen.ConsumerOptions{Group: g, Table: f.inboxTable, Logger: discard()})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, "INSERT INTO "+f.inboxTable+` (consumer_group, message_id, name, version, topic, payload, status, created_at)
			VALUES (?, 'm', 'E', 1, 't', '', 'succeeded', 1)`, g); err != nil {
			t.Fatal(err)
		}
	}
	auth, _ := console.TokenAuth("a-token-for-the-test")
	h, err := newConsoleHandler(ctx, db, f, auth, discard())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	get := func(auth bool) (int, string) {
		req, _ := http.NewRequest("GET", srv.URL+"/", nil)
		if auth {
			req.Header.Set("Authorization", "Bearer a-token-for-the-test")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get(false); code != 401 {
		t.Errorf("without the token: %d", code)
	}
	code, body := get(true)
	if code != 200 || !strings.Contains(body, "Inbox of group billing") || !strings.Contains(body, "Inbox of group shipping") ||
		!strings.Contains(body, "Outbox "+f.db.table) {
		t.Errorf("overview = %d:\n%s", code, body)
	}
}
