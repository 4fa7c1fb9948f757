package console

import (
	"context"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/eventgen/eventgen/runtime/internal/testenv"
)

// skipForm is the form of the skip of bk's event 2.
func skipForm(csrf string, bk blockedKey, confirm bool) url.Values {
	v := url.Values{"csrf": {csrf}, "source": {"test"}, "topic": {"shop.orders"}, "key": {bk.key}, "seq": {"2"}}
	if confirm {
		v.Set("confirm", "yes")
	}
	return v
}

func TestBlockedKeys(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			f := newFixture(t, d.Open(t), 0)
			bk := f.addBlockedKey(t, "order-"+xss)
			c, audit := newConsole(t, f, nil)
			cl := newClient(t, serve(t, c).URL)

			code, body := cl.get("/ops/")
			if code != 200 || !strings.Contains(body, `data-status="held" href="/ops/inbox/billing?status=held">2<`) ||
				!strings.Contains(body, `href="/ops/inbox/billing/blocked"`) {
				t.Fatalf("overview: %d, no held count of 2 or blocked link\n%s", code, body)
			}
			if !strings.Contains(body, `<span class="blocked-count">1</span>, <span class="failed-keys">1</span> on a failed event`) {
				t.Errorf("overview: no count of 1 key blocked on a failed event\n%s", body)
			}
			code, body = cl.get("/ops/inbox/billing?status=held")
			if code != 200 || strings.Count(body, "<tr data-id=") != 2 {
				t.Fatalf("held list: %d\n%s", code, body)
			}
			code, body = cl.get("/ops/inbox/billing/blocked")
			next := "/ops/inbox/billing/" + strconv.FormatInt(bk.next, 10)
			for _, want := range []string{
				`<td class="mono">order-&lt;script&gt;alert(&#34;xss&#34;)&lt;/script&gt;&#34;&gt;&lt;img src=x onerror=alert(1)&gt;</td>`,
				`<a class="next" href="` + next + `">#2</a>`, `class="status st-failed">failed<`, `<td class="waiting">2</td>`,
				"handler: stock service said &lt;script&gt;", `<button type="submit" class="danger skip">Skip #2</button>`,
			} {
				if code != 200 || !strings.Contains(body, want) {
					t.Errorf("blocked view (%d) lacks %q", code, want)
				}
			}
			if strings.Contains(body, "<script>") || strings.Contains(body, "<img") {
				t.Errorf("blocked view renders the key as markup:\n%s", body)
			}

			// The event's page: its sequence, the events behind it, and the skip.
			_, body = cl.get(next)
			for _, want := range []string{"<dt>Sequence</dt><dd>2</dd>", `id="skip"`,
				`<tr data-id="` + strconv.FormatInt(bk.held[0], 10) + `">`, `<tr data-id="` + strconv.FormatInt(bk.held[1], 10) + `">`} {
				if !strings.Contains(body, want) {
					t.Errorf("the blocked event's page lacks %q", want)
				}
			}
			_, body = cl.get("/ops/inbox/billing/" + strconv.FormatInt(bk.held[0], 10))
			if !strings.Contains(body, "<dt>Sequence</dt><dd>3</dd>") || strings.Contains(body, `id="skip"`) ||
				!strings.Contains(body, `<tr data-id="`+strconv.FormatInt(bk.held[1], 10)+`">`) {
				t.Errorf("a held event's page: want sequence 3, event 4 behind, no skip\n%s", body)
			}

			// Confirmation first; it changes nothing.
			csrf := cl.csrf("/ops/inbox/billing/blocked")
			code, body, _ = cl.do("POST", "/ops/inbox/billing/skip", skipForm(csrf, bk, false), nil)
			if code != 200 || !strings.Contains(body, "Skip will mark event <strong>#2</strong>") || !strings.Contains(body, "the 2 events held behind it") ||
				strings.Contains(body, "<script>") || f.inboxStatus(t, bk.next) != "failed" {
				t.Fatalf("skip confirmation: %d\n%s", code, body)
			}
			code, _, hdr := cl.do("POST", "/ops/inbox/billing/skip", skipForm(csrf, bk, true), nil)
			if code != 303 || !strings.HasPrefix(hdr.Get("Location"), "/ops/inbox/billing/blocked?done=skip-next") {
				t.Fatalf("skip: %d %s", code, hdr.Get("Location"))
			}
			if got := f.inboxStatus(t, bk.next); got != "skipped" {
				t.Errorf("the skipped event is %q, want skipped", got)
			}
			if got := f.inboxStatus(t, bk.held[0]); got != "pending" {
				t.Errorf("the event after it is %q, want pending (woken)", got)
			}
			if _, body := cl.get(hdr.Get("Location")); !strings.Contains(body, `id="flash">Skipped event 2 of key &#34;order-&lt;script&gt;`) {
				t.Errorf("the blocked view after the skip:\n%s", body)
			}
			// Again: the key no longer waits for event 2.
			code, body, _ = cl.do("POST", "/ops/inbox/billing/skip", skipForm(csrf, bk, true), nil)
			if code != 409 || !strings.Contains(body, "no longer waits for its event 2") {
				t.Errorf("a second skip: %d\n%s", code, body)
			}
			acts := audit.actions()
			if len(acts) != 1 || acts[0]["action"] != "skip-next" || acts[0]["user"] != "alice" || acts[0]["key"] != bk.key ||
				acts[0]["message_id"] != bk.key+"-2" || acts[0]["count"] != int64(1) || acts[0]["group"] != "billing" {
				t.Errorf("audit %v", acts)
			}
		})
	}
}

func TestSkipRefused(t *testing.T) {
	f := newFixture(t, testenv.OpenSQLite(t), 0)
	bk := f.addBlockedKey(t, "k1")
	c, audit := newConsole(t, f, nil)
	cl := newClient(t, serve(t, c).URL)
	csrf := cl.csrf("/ops/inbox/billing/blocked")
	for name, tc := range map[string]struct {
		form   url.Values
		header map[string]string
		code   int
	}{
		"no token":     {skipForm("", bk, true), nil, 403},
		"wrong token":  {skipForm("AAAA"+csrf[4:], bk, true), nil, 403},
		"cross-site":   {skipForm(csrf, bk, true), map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		"other origin": {skipForm(csrf, bk, true), map[string]string{"Origin": "http://evil.example"}, 403},
		"bad seq":      {url.Values{"csrf": {csrf}, "source": {"test"}, "topic": {"shop.orders"}, "key": {"k1"}, "seq": {"x"}, "confirm": {"yes"}}, nil, 400},
		"NUL in key":   {url.Values{"csrf": {csrf}, "source": {"test"}, "topic": {"shop.orders"}, "key": {"k\x00"}, "seq": {"2"}, "confirm": {"yes"}}, nil, 400},
		"stale seq":    {url.Values{"csrf": {csrf}, "source": {"test"}, "topic": {"shop.orders"}, "key": {"k1"}, "seq": {"3"}, "confirm": {"yes"}}, nil, 409},
		"unknown key":  {url.Values{"csrf": {csrf}, "source": {"test"}, "topic": {"shop.orders"}, "key": {"nope"}, "seq": {"1"}, "confirm": {"yes"}}, nil, 409},
	} {
		code, body, _ := cl.do("POST", "/ops/inbox/billing/skip", tc.form, tc.header)
		if code != tc.code {
			t.Errorf("%s: %d, want %d\n%s", name, code, tc.code, body)
		}
	}
	if code, _ := cl.get("/ops/inbox/billing/skip"); code == 200 || code == 303 {
		t.Errorf("GET of the skip URL: %d", code)
	}
	if got := f.inboxStatus(t, bk.next); got != "failed" {
		t.Fatalf("after refused posts the event is %s", got)
	}
	if n := len(audit.actions()); n != 0 {
		t.Fatalf("%d actions audited, want none", n)
	}

	ro, roAudit := newConsole(t, f, func(o *Options) { o.ReadOnly = true })
	rocl := newClient(t, serve(t, ro).URL)
	for _, path := range []string{"/ops/inbox/billing/blocked", "/ops/inbox/billing/" + strconv.FormatInt(bk.next, 10)} {
		code, body := rocl.get(path)
		if code != 200 || strings.Contains(body, "Skip") || strings.Contains(body, `name="csrf"`) || !strings.Contains(body, ">k1<") {
			t.Errorf("GET %s in read-only mode: %d, shows the skip\n%s", path, code, body)
		}
	}
	code, _, _ := rocl.do("POST", "/ops/inbox/billing/skip", skipForm(csrf, bk, true), nil)
	if code != 403 || f.inboxStatus(t, bk.next) != "failed" || len(roAudit.actions()) != 0 {
		t.Fatalf("skip in read-only mode: %d", code)
	}
	st, err := f.consumer.BlockedKeys(context.Background(), 10)
	if err != nil || len(st) != 1 || st[0].Key != "k1" {
		t.Fatalf("blocked keys after refused skips: %v %v", st, err)
	}
}

// TestSkipMissing skips a key's next event that the group never received:
// the key moves on to the first event it holds.
func TestSkipMissing(t *testing.T) {
	f := newFixture(t, testenv.OpenSQLite(t), 0)
	bk := f.addBlockedKey(t, "missing-1")
	c, audit := newConsole(t, f, nil)
	cl := newClient(t, serve(t, c).URL)
	_, body := cl.get("/ops/inbox/billing/blocked")
	if !strings.Contains(body, `<td>#2</td>`) || !strings.Contains(body, `class="status st-missing">missing<`) || !strings.Contains(body, "Skip #2") {
		t.Fatalf("blocked view of a missing event:\n%s", body)
	}
	csrf := cl.csrf("/ops/inbox/billing/blocked")
	code, body, _ := cl.do("POST", "/ops/inbox/billing/skip", skipForm(csrf, bk, false), nil)
	if code != 200 || !strings.Contains(body, "the group never received it") {
		t.Fatalf("confirmation of a missing event's skip: %d\n%s", code, body)
	}
	if code, _, _ := cl.do("POST", "/ops/inbox/billing/skip", skipForm(csrf, bk, true), nil); code != 303 {
		t.Fatalf("skip of a missing event: %d", code)
	}
	if got := f.inboxStatus(t, bk.held[0]); got != "pending" {
		t.Errorf("event 3 is %q after the skip, want pending", got)
	}
	if acts := audit.actions(); len(acts) != 1 || acts[0]["message_id"] != "" || acts[0]["sequence"] != int64(2) {
		t.Errorf("audit %v", acts)
	}
}
