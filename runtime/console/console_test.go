package console

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/runtime/eventgen"
	"github.com/eventgen/eventgen/runtime/internal/testenv"
)

// client is a browser-like client of a test console: a cookie jar, and
// the token as Basic credentials unless noAuth.
type client struct {
	t      *testing.T
	base   string
	http   *http.Client
	noAuth bool
}

func newClient(t *testing.T, base string) *client {
	jar, _ := cookiejar.New(nil)
	return &client{t: t, base: base, http: &http.Client{
		Jar:           jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

func (c *client) do(method, path string, form url.Values, header map[string]string) (int, string, http.Header) {
	c.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, c.base+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if !c.noAuth {
		req.SetBasicAuth("alice", testToken)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func (c *client) get(path string) (int, string) {
	c.t.Helper()
	code, body, _ := c.do("GET", path, nil, nil)
	return code, body
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf loads path and returns the CSRF token of its forms.
func (c *client) csrf(path string) string {
	c.t.Helper()
	code, body := c.get(path)
	m := csrfField.FindStringSubmatch(body)
	if code != 200 || m == nil {
		c.t.Fatalf("GET %s: %d, no csrf field:\n%s", path, code, body)
	}
	return m[1]
}

func TestNewIsSecureByDefault(t *testing.T) {
	f := newFixture(t, testenv.OpenSQLite(t), 0)
	if _, err := New(f.outbox, nil, Options{}); err == nil || !strings.Contains(err.Error(), "Authorize is required") {
		t.Fatalf("New without Authorize: %v, want an error", err)
	}
	if _, err := New(f.outbox, nil, Options{InsecureAllowAnonymous: true}); err != nil {
		t.Fatalf("New with InsecureAllowAnonymous: %v", err)
	}
	if _, err := New(nil, nil, Options{InsecureAllowAnonymous: true, Prefix: "ops/", CSRFKey: []byte("short"), PageSize: -1}); err == nil ||
		!strings.Contains(err.Error(), "Prefix") || !strings.Contains(err.Error(), "CSRFKey") || !strings.Contains(err.Error(), "PageSize") {
		t.Fatalf("New with bad options: %v, want every problem", err)
	}
	if _, err := TokenAuth("short"); err == nil {
		t.Fatal("TokenAuth accepted a 5-byte token")
	}
}

func TestAuthAndHeaders(t *testing.T) {
	f := newFixture(t, testenv.OpenSQLite(t), 0)
	c, audit := newConsole(t, f, nil)
	srv := serve(t, c)
	anon := newClient(t, srv.URL)
	anon.noAuth = true
	for _, h := range []map[string]string{nil, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": "Basic YWxpY2U6d3Jvbmc="}} {
		code, body, hdr := anon.do("GET", "/ops/", nil, h)
		if code != 401 || !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Basic") || strings.Contains(body, "Overview") {
			t.Errorf("GET /ops/ with %v: %d %q, want 401 with a Basic challenge", h, code, hdr.Get("WWW-Authenticate"))
		}
	}
	code, _, _ := anon.do("GET", "/ops/static/console.css", nil, nil)
	if code != 401 {
		t.Errorf("GET static without credentials: %d, want 401", code)
	}
	code, _, hdr := anon.do("GET", "/ops/", nil, map[string]string{"Authorization": "Bearer " + testToken})
	if code != 200 {
		t.Fatalf("GET /ops/ with the bearer token: %d", code)
	}
	for k, want := range map[string]string{
		"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
	} {
		if got := hdr.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	csp := hdr.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "frame-ancestors 'none'", "form-action 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "script-src") {
		t.Errorf("CSP %q allows script", csp)
	}
	for _, r := range audit.records {
		for k, v := range r {
			if s := fmt.Sprint(v); strings.Contains(s, testToken) {
				t.Errorf("log record %v holds the token in %s", r, k)
			}
		}
	}
}

func TestOverview(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) { testOverview(t, d.Open(t)) })
	}
}

func testOverview(t *testing.T, db *bun.DB) {
	f := newFixture(t, db, 5)
	c, _ := newConsole(t, f, nil)
	cl := newClient(t, serve(t, c).URL)
	code, body := cl.get("/ops/")
	if code != 200 {
		t.Fatalf("overview: %d\n%s", code, body)
	}
	for _, want := range []string{
		`data-status="failed" href="/ops/outbox?status=failed">2<`,
		`data-status="scheduled" href="/ops/outbox?status=scheduled">1<`,
		`data-status="published" href="/ops/outbox?status=published">5<`,
		`data-status="failed" href="/ops/inbox/billing?status=failed">2<`,
		`<svg class="chart"`, `class="bar s-published"`, "events published per minute, the last 60 minutes (peak 1)",
		`published 3</span>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("overview lacks %q", want)
		}
	}
}

func TestEscaping(t *testing.T) {
	f := newFixture(t, testenv.OpenSQLite(t), 0)
	c, _ := newConsole(t, f, nil)
	cl := newClient(t, serve(t, c).URL)
	for _, path := range []string{
		"/ops/outbox/" + strconv.FormatInt(f.evil, 10),
		"/ops/outbox?status=failed",
		"/ops/inbox/billing/" + strconv.FormatInt(f.inboxEvil, 10),
		"/ops/inbox/billing",
		"/ops/outbox?name=" + url.QueryEscape(xss),
		"/ops/outbox?status=" + url.QueryEscape(xss),
	} {
		code, body := cl.get(path)
		if strings.Contains(body, "<script>") || strings.Contains(body, "<img") || strings.Contains(body, "onerror=alert") && !strings.Contains(body, "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;") {
			t.Errorf("GET %s (%d) renders the injection as markup:\n%s", path, code, body)
		}
	}
	_, body := cl.get("/ops/outbox/" + strconv.FormatInt(f.evil, 10))
	for _, want := range []string{"&lt;script&gt;alert(", "boom: &lt;script&gt;", "<th>x-note</th>"} {
		if !strings.Contains(body, want) {
			t.Errorf("event page lacks %q", want)
		}
	}
}

func TestKeysetPaging(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			f := newFixture(t, d.Open(t), 7)
			ctx := context.Background()
			all, err := f.outbox.Rows(ctx, eventgen.RowFilter{Limit: 1000})
			if err != nil {
				t.Fatal(err)
			}
			var want []int64
			for _, r := range all.Rows {
				want = append(want, r.ID)
			}
			if len(want) != 11 || !slices.IsSortedFunc(want, func(a, b int64) int { return int(b - a) }) {
				t.Fatalf("all rows: %v, want 11 ids newest first", want)
			}
			// Walk down 3 at a time while events are written: the pages
			// hold exactly the rows there were, each once.
			var got []int64
			f2 := eventgen.RowFilter{Limit: 3}
			var pages []eventgen.RowPage
			for {
				p, err := f.outbox.Rows(ctx, f2)
				if err != nil {
					t.Fatal(err)
				}
				pages = append(pages, p)
				for _, r := range p.Rows {
					got = append(got, r.ID)
				}
				if err := f.outbox.Publish(ctx, f.db, "test", []eventgen.Event{testEvent{OrderID: "new"}}); err != nil {
					t.Fatal(err)
				}
				if p.Older == 0 {
					break
				}
				f2.Before = p.Older
			}
			if !slices.Equal(got, want) {
				t.Fatalf("paged ids %v, want %v", got, want)
			}
			// Back up from the last page with Newer: the same pages.
			last := pages[len(pages)-1]
			back, err := f.outbox.Rows(ctx, eventgen.RowFilter{Limit: 3, After: last.Newer})
			if err != nil {
				t.Fatal(err)
			}
			prev := pages[len(pages)-2]
			if !slices.EqualFunc(back.Rows, prev.Rows, func(a, b eventgen.StoredRow) bool { return a.ID == b.ID }) {
				t.Fatalf("the page above the last: %v, want %v", ids(back.Rows), ids(prev.Rows))
			}
			// Filters.
			p, err := f.outbox.Rows(ctx, eventgen.RowFilter{Status: "failed", Key: "order-evil"})
			if err != nil || len(p.Rows) != 1 || p.Rows[0].ID != f.evil {
				t.Fatalf("failed rows with key order-evil: %v %v", ids(p.Rows), err)
			}
			p, err = f.consumer.Rows(ctx, eventgen.RowFilter{Status: "failed", Name: "OrderPlaced"})
			if err != nil || len(p.Rows) != 2 {
				t.Fatalf("failed inbox rows: %v %v", ids(p.Rows), err)
			}
		})
	}
}

func ids(rows []eventgen.StoredRow) []int64 {
	var out []int64
	for _, r := range rows {
		out = append(out, r.ID)
	}
	return out
}

func TestListPagesByKeyset(t *testing.T) {
	f := newFixture(t, testenv.OpenSQLite(t), 3)
	c, _ := newConsole(t, f, nil) // 2 rows a page
	cl := newClient(t, serve(t, c).URL)
	older := regexp.MustCompile(`id="older" href="([^"]+)"`)
	row := regexp.MustCompile(`<tr data-id="(\d+)">`)
	path, seen := "/ops/outbox", 0
	for pages := 0; path != ""; pages++ {
		code, body := cl.get(strings.ReplaceAll(path, "&amp;", "&"))
		if code != 200 || pages > 10 {
			t.Fatalf("GET %s: %d", path, code)
		}
		seen += len(row.FindAllString(body, -1))
		path = ""
		if m := older.FindStringSubmatch(body); m != nil {
			path = m[1]
		}
	}
	if seen != 7 {
		t.Fatalf("the pages list %d rows, want 7", seen)
	}
	_, body := cl.get("/ops/outbox?status=failed&key=order-evil")
	if m := row.FindAllStringSubmatch(body, -1); len(m) != 1 || m[0][1] != strconv.FormatInt(f.evil, 10) {
		t.Fatalf("filtered list rows %v", m)
	}
	_, body = cl.get("/ops/outbox?status=failed&select=all")
	if n := strings.Count(body, `type="checkbox" name="id"`); n != 2 || strings.Count(body, " checked>") != 2 ||
		!strings.Contains(body, `id="select" href="/ops/outbox?status=failed">select none</a>`) {
		t.Fatalf("select all: %d boxes, %d checked\n%s", n, strings.Count(body, " checked>"), body)
	}
	_, body = cl.get("/ops/inbox/billing?message_id=m-evil")
	if m := row.FindAllStringSubmatch(body, -1); len(m) != 1 || m[0][1] != strconv.FormatInt(f.inboxEvil, 10) {
		t.Fatalf("inbox rows of message m-evil: %v", m)
	}
}

func TestBadInput(t *testing.T) {
	f := newFixture(t, testenv.OpenSQLite(t), 0)
	c, _ := newConsole(t, f, nil)
	cl := newClient(t, serve(t, c).URL)
	for path, want := range map[string]struct {
		code int
		msg  string
	}{
		"/ops/outbox/abc":                               {400, `id &#34;abc&#34; is not a row id`},
		"/ops/outbox/-4":                                {400, "is not a row id"},
		"/ops/outbox/99999999999999999999":              {400, "is not a row id"},
		"/ops/outbox/424242":                            {404, "no row 424242"},
		"/ops/outbox?status=bogus":                      {400, `status &#34;bogus&#34; is not one of scheduled, pending`},
		"/ops/inbox/billing?status=held2":               {400, "is not one of held, pending"},
		"/ops/outbox?since=yesterday":                   {400, "since &#34;yesterday&#34; is not a time"},
		"/ops/outbox?since=2026-01-02&until=2026-01-01": {400, "is not after since"},
		"/ops/outbox?before=0":                          {400, "before &#34;0&#34; is not a row id"},
		"/ops/outbox?before=5&after=2":                  {400, "not both"},
		"/ops/outbox?key=" + strings.Repeat("k", 300):   {400, "over 255 bytes"},
		"/ops/inbox/nope":                               {404, "no consumer group &#34;nope&#34;"},
		"/ops/inbox/nope/1":                             {404, "no consumer group"},
		"/ops/nothing":                                  {404, "no such page"},
	} {
		code, body := cl.get(path)
		if code != want.code || !strings.Contains(body, want.msg) {
			t.Errorf("GET %s: %d, want %d with %q:\n%s", path, code, want.code, want.msg, body)
		}
	}
	code, body, _ := cl.do("POST", "/ops/outbox/actions", url.Values{"csrf": {cl.csrf("/ops/outbox")}, "action": {"requeue"}, "id": {"x"}}, nil)
	if code != 400 || !strings.Contains(body, "is not a row id") {
		t.Errorf("POST with a bad id: %d", code)
	}
	code, _, _ = cl.do("POST", "/ops/outbox/actions", url.Values{"csrf": {cl.csrf("/ops/outbox")}, "action": {"reexecute"}, "id": {"1"}}, nil)
	if code != 400 {
		t.Errorf("POST of an inbox action to the outbox: %d, want 400", code)
	}
	code, _, _ = cl.do("POST", "/ops/outbox/actions", url.Values{"csrf": {cl.csrf("/ops/outbox")}, "action": {"requeue"}}, nil)
	if code != 400 {
		t.Errorf("POST without ids: %d, want 400", code)
	}
}

// TestNoServerErrors checks that odd requests get a 4xx on every
// database, never a 500.
func TestNoServerErrors(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			f := newFixture(t, d.Open(t), 0)
			c, _ := newConsole(t, f, nil)
			cl := newClient(t, serve(t, c).URL)
			for _, path := range []string{
				"/ops/outbox?key=%00", "/ops/outbox?name=%ff%fe", "/ops/outbox?key=a%0Ab", "/ops/inbox/billing?key=%00",
				"/ops/outbox?before=9223372036854775807", "/ops/outbox?after=9223372036854775807",
				"/ops/outbox?since=0001-01-01&until=9999-12-31", "/ops/outbox?since=2026-13-45",
				"/ops/outbox/0", "/ops/outbox/1e3", "/ops/outbox/%00", "/ops/inbox/%00", "/ops/inbox/billing/9223372036854775807",
				"/ops/inbox/" + url.PathEscape(xss), "/ops/outbox?status=" + strings.Repeat("x", 10000),
			} {
				code, body := cl.get(path)
				if code >= 500 || strings.Contains(body, "<script>") {
					t.Errorf("GET %s: %d\n%s", path, code, body)
				}
			}
		})
	}
}

func TestCSRF(t *testing.T) {
	f := newFixture(t, testenv.OpenSQLite(t), 0)
	c, audit := newConsole(t, f, nil)
	cl := newClient(t, serve(t, c).URL)
	token := cl.csrf("/ops/outbox")
	id := strconv.FormatInt(f.failed, 10)
	form := func(csrf string) url.Values {
		return url.Values{"csrf": {csrf}, "action": {"requeue"}, "id": {id}, "confirm": {"yes"}}
	}
	for name, tc := range map[string]struct {
		form   url.Values
		header map[string]string
	}{
		"no token":     {url.Values{"action": {"requeue"}, "id": {id}, "confirm": {"yes"}}, nil},
		"wrong token":  {form("AAAA" + token[4:]), nil},
		"cross-site":   {form(token), map[string]string{"Sec-Fetch-Site": "cross-site"}},
		"other origin": {form(token), map[string]string{"Origin": "http://evil.example"}},
		"another user": {form(c.sign("some-other-cookie-value-0123456789", "alice")), nil},
	} {
		code, body, _ := cl.do("POST", "/ops/outbox/actions", tc.form, tc.header)
		if code != 403 || !strings.Contains(body, "refused") {
			t.Errorf("%s: %d, want 403", name, code)
		}
	}
	if got := f.status(t, f.failed); got != "failed" {
		t.Fatalf("after refused posts the row is %s", got)
	}
	if n := len(audit.actions()); n != 0 {
		t.Fatalf("%d actions audited, want none", n)
	}
	// A GET never acts.
	if code, _ := cl.get("/ops/outbox/actions?action=requeue&id=" + id + "&confirm=yes&csrf=" + token); code != 405 && code != 400 && code != 404 {
		t.Errorf("GET of the action URL: %d", code)
	}
	code, _, _ := cl.do("POST", "/ops/outbox/actions", form(token), map[string]string{"Sec-Fetch-Site": "same-origin"})
	if code != 303 || f.status(t, f.failed) != "pending" {
		t.Fatalf("a good post: %d, row %s", code, f.status(t, f.failed))
	}
}

func TestActions(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			f := newFixture(t, d.Open(t), 1)
			c, audit := newConsole(t, f, nil)
			cl := newClient(t, serve(t, c).URL)
			post := func(path, action string, confirm bool, ids ...int64) (int, string, http.Header) {
				t.Helper()
				form := url.Values{"csrf": {cl.csrf("/ops/outbox")}, "action": {action}}
				for _, id := range ids {
					form.Add("id", strconv.FormatInt(id, 10))
				}
				if confirm {
					form.Set("confirm", "yes")
				}
				return cl.do("POST", path, form, nil)
			}
			// Confirmation first: it counts the rows and changes none.
			code, body, _ := post("/ops/outbox/actions", "requeue", false, f.failed, f.pending, f.evil)
			if code != 200 || !strings.Contains(body, "will change <strong>2</strong> of the 3 events") || f.status(t, f.failed) != "failed" {
				t.Fatalf("confirm page: %d\n%s", code, body)
			}
			code, _, hdr := post("/ops/outbox/actions", "requeue", true, f.failed, f.pending, f.evil)
			if code != 303 || hdr.Get("Location") != "/ops/outbox?done=requeue&n=2" {
				t.Fatalf("requeue: %d %s", code, hdr.Get("Location"))
			}
			if f.status(t, f.failed) != "pending" || f.status(t, f.evil) != "pending" {
				t.Fatal("requeue did not make the failed rows pending")
			}
			if _, body := cl.get(hdr.Get("Location")); !strings.Contains(body, "Requeue: 2 events changed") {
				t.Error("the list does not say what the action did")
			}
			code, _, hdr = post("/ops/outbox/actions", "publish-now", true, f.scheduled)
			if code != 303 || f.status(t, f.scheduled) != "pending" || hdr.Get("Location") != fmt.Sprintf("/ops/outbox/%d?done=publish-now&n=1", f.scheduled) {
				t.Fatalf("publish now: %d %s, row %s", code, hdr.Get("Location"), f.status(t, f.scheduled))
			}
			if code, _, _ = post("/ops/outbox/actions", "delete", true, f.pending, f.published); code != 303 ||
				f.status(t, f.pending) != "" || f.status(t, f.published) != "published" {
				t.Fatalf("delete: %d; pending row %q, published row %q", code, f.status(t, f.pending), f.status(t, f.published))
			}
			if code, _, _ = post("/ops/inbox/billing/actions", "reexecute", true, f.inboxFailed); code != 303 {
				t.Fatalf("reexecute: %d", code)
			}
			if code, _, _ = post("/ops/inbox/billing/actions", "delete", true, f.inboxEvil); code != 303 {
				t.Fatalf("inbox delete: %d", code)
			}
			st, err := f.consumer.Stats(context.Background())
			if err != nil || st.Failed != 0 || st.Pending != 1 {
				t.Fatalf("inbox after reexecute and delete: %+v %v", st, err)
			}
			acts := audit.actions()
			if len(acts) != 5 {
				t.Fatalf("%d actions audited, want 5: %v", len(acts), acts)
			}
			a := acts[0]
			if a["user"] != "alice" || a["action"] != "requeue" || a["count"] != int64(2) || a["asked"] != int64(3) || a["table"] != f.outbox.Table() {
				t.Errorf("audit record %v", a)
			}
			if a := acts[4]; a["group"] != "billing" || a["action"] != "delete" || a["count"] != int64(1) {
				t.Errorf("audit record %v", a)
			}
		})
	}
}

func TestReadOnly(t *testing.T) {
	f := newFixture(t, testenv.OpenSQLite(t), 0)
	c, audit := newConsole(t, f, func(o *Options) { o.ReadOnly = true })
	cl := newClient(t, serve(t, c).URL)
	for _, path := range []string{"/ops/outbox", "/ops/outbox/" + strconv.FormatInt(f.failed, 10), "/ops/inbox/billing"} {
		code, body := cl.get(path)
		if code != 200 || strings.Contains(body, "<button type=\"submit\" name=\"action\"") || strings.Contains(body, `type="checkbox"`) ||
			strings.Contains(body, `name="csrf"`) || !strings.Contains(body, "read-only") {
			t.Errorf("GET %s in read-only mode: %d, shows actions", path, code)
		}
	}
	// Even with a valid token from a writable console on the same key.
	code, body, _ := cl.do("POST", "/ops/outbox/actions", url.Values{"action": {"requeue"}, "id": {strconv.FormatInt(f.failed, 10)}, "confirm": {"yes"}}, nil)
	if code != 403 || f.status(t, f.failed) != "failed" {
		t.Fatalf("POST in read-only mode: %d %s", code, body)
	}
	if len(audit.actions()) != 0 {
		t.Fatal("a refused action was audited as done")
	}
}

func TestUnescapeHTMLEscapes(t *testing.T) {
	for in, want := range map[string]string{
		`"\u003cb\u003e \u0026 \u003E"`: `"<b> & >"`,
		`"\\u003c"`:                     `"\\u003c"`,
		`"\u00e9 \n \\"`:                `"\u00e9 \n \\"`,
		`"\u00`:                         `"\u00`,
		`plain`:                         `plain`,
	} {
		if got := unescapeHTMLEscapes(in); got != want {
			t.Errorf("unescapeHTMLEscapes(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestTokenAuth(t *testing.T) {
	auth, err := TokenAuth(testToken)
	if err != nil {
		t.Fatal(err)
	}
	req := func(set func(*http.Request)) *http.Request {
		r, _ := http.NewRequest("GET", "/", nil)
		set(r)
		return r
	}
	for name, tc := range map[string]struct {
		r    *http.Request
		user string
		ok   bool
	}{
		"bearer":              {req(func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+testToken) }), "token", true},
		"bearer, any case":    {req(func(r *http.Request) { r.Header.Set("Authorization", "bEaReR "+testToken) }), "token", true},
		"bearer, wrong":       {req(func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+testToken+"x") }), "", false},
		"bearer, prefix":      {req(func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+testToken[:20]) }), "", false},
		"basic":               {req(func(r *http.Request) { r.SetBasicAuth("bob", testToken) }), "bob", true},
		"basic, no user name": {req(func(r *http.Request) { r.SetBasicAuth("", testToken) }), "token", true},
		"basic, odd name":     {req(func(r *http.Request) { r.SetBasicAuth("eve\x1b[2J\u202e"+strings.Repeat("x", 100), testToken) }), "eve[2J" + strings.Repeat("x", 58), true},
		"basic, wrong":        {req(func(r *http.Request) { r.SetBasicAuth("bob", "nope") }), "", false},
		"none":                {req(func(*http.Request) {}), "", false},
	} {
		user, ok := auth(tc.r)
		if user != tc.user || ok != tc.ok {
			t.Errorf("%s: %q %v, want %q %v", name, user, ok, tc.user, tc.ok)
		}
	}
}

func TestInsecureAllowAnonymous(t *testing.T) {
	f := newFixture(t, testenv.OpenSQLite(t), 0)
	c, audit := newConsole(t, f, func(o *Options) { o.Authorize, o.InsecureAllowAnonymous = nil, true })
	cl := newClient(t, serve(t, c).URL)
	cl.noAuth = true
	code, body := cl.get("/ops/")
	if code != 200 || !strings.Contains(body, `<span class="user">anonymous`) {
		t.Fatalf("anonymous overview: %d", code)
	}
	form := url.Values{"csrf": {cl.csrf("/ops/outbox")}, "action": {"requeue"}, "id": {strconv.FormatInt(f.failed, 10)}, "confirm": {"yes"}}
	if code, _, _ := cl.do("POST", "/ops/outbox/actions", form, nil); code != 303 {
		t.Fatalf("anonymous requeue: %d", code)
	}
	if a := audit.actions(); len(a) != 1 || a[0]["user"] != "anonymous" {
		t.Fatalf("audit %v", a)
	}
}
