package console

import (
	"context"
	"encoding/json"
	"html/template"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/runtime/internal/testenv"
)

// EnvChromium names the Chromium the browser test drives; default
// /usr/bin/chromium (Debian's package).
const EnvChromium = "EVENTGEN_CHROMIUM"

// EnvScreenshots, if set, is the folder the browser test saves its
// screenshots in (relative to runtime/console, where the test runs);
// otherwise they go to the test's temporary folder. docs/console/ holds
// those of the last update: EVENTGEN_CONSOLE_SCREENSHOTS=$PWD/docs/console.
const EnvScreenshots = "EVENTGEN_CONSOLE_SCREENSHOTS"

// browserTools returns node and Chromium, or why the browser test cannot
// run: it needs node, Chromium and e2e/node_modules (npm ci in e2e/).
func browserTools() (node, chromium, missing string) {
	node, err := exec.LookPath("node")
	if err != nil {
		return "", "", "node is not installed"
	}
	chromium = os.Getenv(EnvChromium)
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		return "", "", chromium + " is missing (apt-get install chromium)"
	}
	if _, err := os.Stat(filepath.Join("e2e", "node_modules", "playwright-core", "package.json")); err != nil {
		return "", "", "e2e/node_modules lacks playwright-core (run npm ci in runtime/console/e2e)"
	}
	return node, chromium, ""
}

// TestBrowser serves the console over SQLite and PostgreSQL (when
// EVENTGEN_TEST_POSTGRES is set) and drives it in headless Chromium with
// e2e/console.mjs: login, counts and chart, filters and keyset paging,
// escaping with no script run, requeue and delete with their
// confirmation, a blocked key skipped, CSRF and cross-origin refusals,
// read-only mode. Then it
// checks the database and the audit log.
func TestBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("the browser test is skipped with -short")
	}
	if raceEnabled {
		t.Skip("the browser test runs without -race: it tests the pages, not the runtime's concurrency")
	}
	node, chromium, missing := browserTools()
	if missing != "" {
		if testenv.RequireServices() {
			t.Fatalf("the browser test cannot run under %s=1: %s", testenv.EnvRequireServices, missing)
		}
		t.Skip(missing)
	}
	for _, d := range testenv.Databases(t) {
		if d.Name == "mysql" {
			continue // the handler tests cover MySQL; one server database is enough in a browser
		}
		t.Run(d.Name, func(t *testing.T) { testBrowser(t, d.Open(t), node, chromium) })
	}
}

// attackerPage is a page of another origin with a form that posts to the
// console, as a cross-site request forgery would.
var attackerPage = template.Must(template.New("attack").Parse(`<!doctype html>
<title>not the console</title>
<form method="post" action="{{.Action}}">
<input type="hidden" name="csrf" value="{{.CSRF}}">
<input type="hidden" name="action" value="delete">
<input type="hidden" name="id" value="{{.ID}}">
<input type="hidden" name="confirm" value="yes">
<button id="go" type="submit">win a prize</button>
</form>`))

func testBrowser(t *testing.T, db *bun.DB, node, chromium string) {
	f := newFixture(t, db, 5)
	bk := f.addBlockedKey(t, "order-"+xss)
	c, audit := newConsole(t, f, nil)
	ro, _ := newConsole(t, f, func(o *Options) { o.ReadOnly = true; o.Prefix = "/ro" })
	mux := http.NewServeMux()
	mux.Handle("/ops/", c)
	mux.Handle("/ro/", ro)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		_ = attackerPage.Execute(w, map[string]string{"Action": q.Get("action"), "CSRF": q.Get("csrf"), "ID": q.Get("id")})
	}))
	defer attacker.Close()

	shots, err := filepath.Abs(os.Getenv(EnvScreenshots)) // for node, which runs in e2e/
	if os.Getenv(EnvScreenshots) == "" || err != nil {
		shots = t.TempDir()
	}
	ids, _ := json.Marshal(map[string]any{
		"failed": f.failed, "evil": f.evil, "pending": f.pending, "total": 9, "inboxEvil": f.inboxEvil,
		"blockedKey": bk.key, "blockedNext": bk.next, "blockedHeld": bk.held,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "console.mjs")
	cmd.Dir = "e2e"
	cmd.Env = append(os.Environ(),
		"BASE="+srv.URL+"/ops", "RO_BASE="+srv.URL+"/ro", "ATTACKER="+attacker.URL+"/",
		"TOKEN="+testToken, "IDS="+string(ids), "SHOTS="+shots, "CHROMIUM="+chromium)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("console.mjs took %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	if err != nil {
		t.Fatalf("console.mjs: %v", err)
	}

	// What the clicks did, as the database and the audit log say.
	if got := f.status(t, f.failed); got != "pending" {
		t.Errorf("the requeued event is %q, want pending", got)
	}
	if got := f.status(t, f.pending); got != "" {
		t.Errorf("the deleted event is still there, %s", got)
	}
	if got := f.status(t, f.evil); got != "failed" {
		t.Errorf("the event the refused posts named is %q, want failed", got)
	}
	r, _, err := f.consumer.Row(context.Background(), f.inboxEvil)
	if err != nil || r.Status != "pending" {
		t.Errorf("the re-executed message is %q (%v), want pending", r.Status, err)
	}
	if got := f.inboxStatus(t, bk.next); got != "skipped" {
		t.Errorf("the skipped event of the blocked key is %q, want skipped", got)
	}
	if got := f.inboxStatus(t, bk.held[0]); got != "pending" {
		t.Errorf("the event after the skipped one is %q, want pending", got)
	}
	var done []string
	for _, a := range audit.actions() {
		if a["user"] != "alice" || a["count"] != int64(1) {
			t.Errorf("audit record %v: want user alice and count 1", a)
		}
		done = append(done, a["action"].(string))
	}
	if want := []string{"requeue", "delete", "reexecute", "skip-next"}; !slices.Equal(done, want) {
		t.Errorf("audited actions %v, want %v", done, want)
	}
}
