package console

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/eventgen/eventgen/runtime/eventgen"
)

// request is one request being served, with its user.
type request struct {
	w    http.ResponseWriter
	r    *http.Request
	user string
}

func (rq *request) ctx() context.Context { return rq.r.Context() }

// httpError is an error shown to the user with its status: bad input, an
// unknown page, a refused action. Other errors are logged and shown as a
// plain 500, without their text.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &httpError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) error {
	return &httpError{http.StatusNotFound, fmt.Sprintf(format, args...)}
}

func forbidden(msg string) error { return &httpError{http.StatusForbidden, msg} }

// page adapts a page function to a handler: it renders the error page for
// the error fn returns, and recovers from a panic as a 500.
func (c *Console) page(fn func(*request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rq := &request{w: w, r: r, user: userOf(r.Context())}
		defer func() {
			if v := recover(); v != nil {
				c.log.Error("console: panic serving a page", "path", r.URL.Path, "panic", fmt.Sprint(v))
				c.fail(rq, errors.New("panic"))
			}
		}()
		if err := fn(rq); err != nil {
			c.fail(rq, err)
		}
	}
}

func (c *Console) fail(rq *request, err error) {
	var he *httpError
	if !errors.As(err, &he) {
		c.log.Error("console: request failed", "method", rq.r.Method, "path", rq.r.URL.Path, "user", rq.user, "err", err)
		he = &httpError{http.StatusInternalServerError, "the console could not read or write the database; the server's log has the error"}
	}
	c.render(rq, "error", he.code, struct {
		Code int
		Msg  string
	}{he.code, he.msg})
}

// common is what every page shows.
type common struct {
	Base     string
	User     string
	ReadOnly bool
	CSRF     string
	Outbox   bool
	Groups   []navLink
	Title    string
}

type navLink struct{ Name, Link string }

func (c *Console) render(rq *request, name string, status int, data any) {
	v := struct {
		common
		Page any
	}{common{
		Base: c.opts.Prefix, User: rq.user, ReadOnly: c.opts.ReadOnly, Outbox: c.outbox != nil,
		Groups: c.groups(), Title: name,
	}, data}
	if !c.opts.ReadOnly {
		v.CSRF = c.csrfToken(rq.w, rq.r)
	}
	var b bytes.Buffer
	if err := c.pages[name].ExecuteTemplate(&b, "layout", v); err != nil {
		c.log.Error("console: render page", "page", name, "err", err)
		http.Error(rq.w, "500 the page could not be rendered", http.StatusInternalServerError)
		return
	}
	rq.w.Header().Set("Content-Type", "text/html; charset=utf-8")
	rq.w.WriteHeader(status)
	_, _ = rq.w.Write(b.Bytes())
}

func (c *Console) groups() []navLink {
	g := make([]navLink, len(c.consumers))
	for i, cs := range c.consumers {
		g[i] = navLink{cs.Group(), c.opts.Prefix + "/inbox/" + url.PathEscape(cs.Group())}
	}
	return g
}

// target is the outbox or one group's inbox, as the pages see it.
type target struct {
	Title string // "Outbox eventgen_outbox", "Inbox of group billing"
	Link  string // the list's path, with the prefix
	What  string // "events", "messages"
	Group string
	// Table is the table's name, for the audit log.
	Table    string
	statuses []string
	actions  []eventgen.RowAction
	rows     func(context.Context, eventgen.RowFilter) (eventgen.RowPage, error)
	row      func(context.Context, int64) (eventgen.StoredRow, bool, error)
	eligible func(context.Context, eventgen.RowAction, []int64) ([]int64, error)
	apply    func(context.Context, eventgen.RowAction, []int64) (int, error)
}

func (c *Console) outboxTarget() (*target, error) {
	o := c.outbox
	if o == nil {
		return nil, notFound("this console has no outbox")
	}
	return &target{
		Title: "Outbox " + o.Table(), Link: c.opts.Prefix + "/outbox", What: "events", Table: o.Table(),
		statuses: eventgen.OutboxStatuses(),
		actions:  []eventgen.RowAction{eventgen.ActionRequeue, eventgen.ActionPublishNow, eventgen.ActionDelete},
		rows:     o.Rows, row: o.Row, eligible: o.Eligible, apply: o.Apply,
	}, nil
}

func (c *Console) inboxTarget(group string) (*target, error) {
	cs := c.consumer(group)
	if cs == nil {
		return nil, notFound("no consumer group %q in this console", group)
	}
	return &target{
		Title: "Inbox of group " + group, Link: c.opts.Prefix + "/inbox/" + url.PathEscape(group), What: "messages",
		Group: group, Table: cs.Table(),
		statuses: eventgen.InboxStatuses(),
		actions:  []eventgen.RowAction{eventgen.ActionReexecute, eventgen.ActionDelete},
		rows:     cs.Rows, row: cs.Row, eligible: cs.Eligible, apply: cs.Apply,
	}, nil
}

// onOutbox and onInbox adapt a page of a target to a handler of the
// outbox's path, or of an inbox's (its group in the path).
func (c *Console) onOutbox(fn func(*request, *target) error) http.HandlerFunc {
	return c.page(func(rq *request) error {
		t, err := c.outboxTarget()
		if err != nil {
			return err
		}
		return fn(rq, t)
	})
}

func (c *Console) onInbox(fn func(*request, *target) error) http.HandlerFunc {
	return c.page(func(rq *request) error {
		t, err := c.inboxTarget(rq.r.PathValue("group"))
		if err != nil {
			return err
		}
		return fn(rq, t)
	})
}

// filterView is a list's filter as its form shows it.
type filterView struct {
	Status, Name, Key, MessageID, Since, Until string
}

// parseTime reads a time filter: what an HTML datetime-local input sends,
// a date, or RFC 3339. Times without a zone are UTC.
func parseTime(name, s string) (time.Time, error) {
	for _, l := range []string{"2006-01-02T15:04", "2006-01-02T15:04:05", time.RFC3339Nano, "2006-01-02"} {
		if t, err := time.Parse(l, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, badRequest("%s %q is not a time: use 2006-01-02T15:04 (UTC) or RFC 3339", name, clip(s, 64))
}

// parseFilter reads a list's filter and cursor from the query.
func parseFilter(q url.Values, statuses []string, pageSize int) (eventgen.RowFilter, filterView, error) {
	fv := filterView{Status: q.Get("status"), Name: q.Get("name"), Key: q.Get("key"), MessageID: q.Get("message_id"), Since: q.Get("since"), Until: q.Get("until")}
	f := eventgen.RowFilter{Status: fv.Status, Name: fv.Name, Key: fv.Key, MessageID: fv.MessageID, Limit: pageSize}
	if f.Status != "" && !slices.Contains(statuses, f.Status) {
		return f, fv, badRequest("status %q is not one of %s", clip(f.Status, 64), strings.Join(statuses, ", "))
	}
	for _, s := range []struct{ name, v string }{{"name", f.Name}, {"key", f.Key}, {"message id", f.MessageID}} {
		if err := checkFilterText(s.name, s.v); err != nil {
			return f, fv, err
		}
	}
	var err error
	if fv.Since != "" {
		if f.Since, err = parseTime("since", fv.Since); err != nil {
			return f, fv, err
		}
	}
	if fv.Until != "" {
		if f.Until, err = parseTime("until", fv.Until); err != nil {
			return f, fv, err
		}
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Until.After(f.Since) {
		return f, fv, badRequest("until (%s) is not after since (%s)", f.Until.Format(time.RFC3339), f.Since.Format(time.RFC3339))
	}
	for _, cur := range []struct {
		name string
		to   *int64
	}{{"before", &f.Before}, {"after", &f.After}} {
		if s := q.Get(cur.name); s != "" {
			if *cur.to, err = parseID(cur.name, s); err != nil {
				return f, fv, err
			}
		}
	}
	if f.Before != 0 && f.After != 0 {
		return f, fv, badRequest("give before or after, not both")
	}
	return f, fv, nil
}

// checkFilterText refuses a name, key or id that no row can hold: Publish
// refuses such names and keys, and PostgreSQL refuses NUL.
func checkFilterText(name, v string) error {
	if len(v) > 255 || !utf8.ValidString(v) || strings.ContainsFunc(v, unicode.IsControl) {
		return badRequest("the %s filter is over 255 bytes, not UTF-8, or holds control characters", name)
	}
	return nil
}

// parseID reads a row id: a positive integer.
func parseID(name, s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, badRequest("%s %q is not a row id (a positive integer)", name, clip(s, 64))
	}
	return id, nil
}

// rowView is one row of a list.
type rowView struct {
	ID, Sequence                       int64
	Link, MessageID, Name, Key, Status string
	Attempts                           int
	Created, Error                     string
}

type listPage struct {
	T        *target
	Statuses []string
	Filter   filterView
	Rows     []rowView
	Newer    string
	Older    string
	Actions  []actionView
	Flash    string
	// Selected checks every row's box; Select is the link that toggles it
	// (the console runs no script).
	Selected bool
	Select   string
}

// actionView is an action's button.
type actionView struct {
	Name, Label string
	Danger      bool
}

func (c *Console) actionViews(t *target) []actionView {
	if c.opts.ReadOnly {
		return nil
	}
	out := make([]actionView, len(t.actions))
	for i, a := range t.actions {
		out[i] = actionOf(a)
	}
	return out
}

func actionOf(a eventgen.RowAction) actionView {
	switch a {
	case eventgen.ActionRequeue:
		return actionView{string(a), "Requeue", false}
	case eventgen.ActionReexecute:
		return actionView{string(a), "Re-execute", false}
	case eventgen.ActionPublishNow:
		return actionView{string(a), "Publish now", false}
	}
	return actionView{string(a), "Delete", true}
}

func (c *Console) list(rq *request, t *target) error {
	q := rq.r.URL.Query()
	f, fv, err := parseFilter(q, t.statuses, c.opts.PageSize)
	if err != nil {
		return err
	}
	p, err := t.rows(rq.ctx(), f)
	if err != nil {
		return err
	}
	lp := &listPage{T: t, Statuses: t.statuses, Filter: fv, Actions: c.actionViews(t), Flash: flash(q, t)}
	for _, r := range p.Rows {
		lp.Rows = append(lp.Rows, listRow(t, r))
	}
	keep := url.Values{}
	for _, k := range []string{"status", "name", "key", "message_id", "since", "until"} {
		if v := q.Get(k); v != "" {
			keep.Set(k, v)
		}
	}
	cursor := func(name string, id int64) string {
		if id == 0 {
			return ""
		}
		v := maps.Clone(keep) // Set replaces a key's slice: a shallow copy will do
		v.Set(name, strconv.FormatInt(id, 10))
		return t.Link + "?" + v.Encode()
	}
	lp.Newer, lp.Older = cursor("after", p.Newer), cursor("before", p.Older)
	lp.Selected = q.Get("select") == "all"
	sel := maps.Clone(keep)
	for _, k := range []string{"before", "after"} {
		if v := q.Get(k); v != "" {
			sel.Set(k, v)
		}
	}
	if !lp.Selected {
		sel.Set("select", "all")
	}
	lp.Select = t.Link + "?" + sel.Encode()
	c.render(rq, "list", http.StatusOK, lp)
	return nil
}

// listRow is r as a list shows it.
func listRow(t *target, r eventgen.StoredRow) rowView {
	return rowView{
		ID: r.ID, Link: t.Link + "/" + strconv.FormatInt(r.ID, 10), MessageID: r.MessageID, Name: r.Name, Key: r.Key, Sequence: r.Sequence,
		Status: r.Status, Attempts: r.Attempts, Created: formatTime(r.CreatedAt), Error: clip(firstLine(r.LastError), 120),
	}
}

// flash is the line a list or row page shows after an action redirected
// to it: "done" and "n" in the query, checked.
func flash(q url.Values, t *target) string {
	done, n := q.Get("done"), q.Get("n")
	count, err := strconv.Atoi(n)
	if done == "" || err != nil || count < 0 || !slices.Contains(t.actions, eventgen.RowAction(done)) {
		return ""
	}
	return fmt.Sprintf("%s: %d %s changed", actionOf(eventgen.RowAction(done)).Label, count, t.What)
}

type rowPage struct {
	T           *target
	ID          int64
	Fields      [][2]string
	Payload     string
	PayloadNote string
	Headers     [][2]string
	LastError   string
	Actions     []actionView
	Flash       string
	// Behind is the row's place in its key's order; nil for a row
	// without a sequence, and in the outbox.
	Behind *behindView
}

func (c *Console) row(rq *request, t *target) error {
	id, err := parseID("id", rq.r.PathValue("id"))
	if err != nil {
		return err
	}
	r, ok, err := t.row(rq.ctx(), id)
	if err != nil {
		return err
	}
	if !ok {
		return notFound("no row %d in the %s", id, strings.ToLower(t.Title[:1])+t.Title[1:])
	}
	rp := &rowPage{T: t, ID: id, LastError: r.LastError, Actions: c.actionViews(t), Flash: flash(rq.r.URL.Query(), t)}
	rp.Fields = [][2]string{
		{"Row id", strconv.FormatInt(r.ID, 10)}, {"Message id", r.MessageID}, {"Event", r.Name},
		{"Version", strconv.Itoa(r.Version)}, {"Topic", r.Topic}, {"Key", r.Key}, {"Sequence", sequence(r.Sequence)}, {"Source", r.Source},
		{"Status", r.Status}, {"Attempts", strconv.Itoa(r.Attempts)},
		{"Event time", formatTime(r.EventTime)}, {"Written", formatTime(r.CreatedAt)},
		{"Next attempt / lease end", formatTime(r.NextAttemptAt)}, {"Finished", formatTime(r.FinishedAt)},
		{"Expires", formatTime(r.ExpiresAt)}, {"Lock owner", r.LockOwner},
	}
	if t.Group == "" {
		rp.Fields = slices.DeleteFunc(rp.Fields, func(f [2]string) bool { return f[0] == "Event time" })
	}
	rp.Payload, rp.PayloadNote = prettyPayload(r.Payload)
	for k, v := range r.Headers {
		rp.Headers = append(rp.Headers, [2]string{k, v})
	}
	slices.SortFunc(rp.Headers, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	if rp.Behind, err = c.behind(rq, t, r); err != nil {
		return err
	}
	c.render(rq, "row", http.StatusOK, rp)
	return nil
}

// sequence formats a row's sequence; "" for none.
func sequence(n int64) string {
	if n == 0 {
		return ""
	}
	return strconv.FormatInt(n, 10)
}

// prettyPayload returns a payload as text: JSON indented, other UTF-8 as
// it is, anything else as a hex dump; and a note on what it is.
func prettyPayload(p []byte) (string, string) {
	switch {
	case len(p) == 0:
		return "", "empty"
	case json.Valid(p):
		var b bytes.Buffer
		if json.Indent(&b, p, "", "  ") == nil {
			return unescapeHTMLEscapes(b.String()), fmt.Sprintf("JSON, %d bytes", len(p))
		}
	case utf8.Valid(p):
		return string(p), fmt.Sprintf("text (not JSON), %d bytes", len(p))
	}
	const maxDump = 64 << 10
	note := fmt.Sprintf("binary, %d bytes", len(p))
	if len(p) > maxDump {
		p, note = p[:maxDump], note+fmt.Sprintf(", the first %d shown", maxDump)
	}
	return hex.Dump(p), note
}

// unescapeHTMLEscapes turns the escapes \u003c, \u003e and \u0026 that Go's
// encoding/json writes for <, > and & in JSON strings back into the
// characters, for reading; the template escapes them for HTML.
func unescapeHTMLEscapes(s string) string {
	if !strings.Contains(s, `\u00`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		if i+5 < len(s) && s[i+1] == 'u' {
			switch strings.ToLower(s[i+2 : i+6]) {
			case "003c":
				b.WriteByte('<')
				i += 5
				continue
			case "003e":
				b.WriteByte('>')
				i += 5
				continue
			case "0026":
				b.WriteByte('&')
				i += 5
				continue
			}
		}
		b.WriteString(s[i : i+2]) // an escape of another character, or \\
		i++
	}
	return b.String()
}

// maxActionIDs bounds the rows one action names.
const maxActionIDs = 1000

type confirmPage struct {
	T        *target
	Action   actionView
	IDs      []int64
	Eligible int
	Back     string
}

// act serves an action's POST: the first shows what it would change and
// asks for confirmation; the second, with confirm=yes, runs it, logs it
// and redirects to the list (or the row) with the count.
func (c *Console) act(rq *request, t *target) error {
	if err := c.checkAction(rq); err != nil {
		return err
	}
	action := eventgen.RowAction(rq.r.PostFormValue("action"))
	if !slices.Contains(t.actions, action) {
		return badRequest("%q is not an action on %s here", clip(string(action), 64), t.What)
	}
	var ids []int64
	for _, s := range rq.r.PostForm["id"] {
		id, err := parseID("id", s)
		if err != nil {
			return err
		}
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return badRequest("no %s selected", t.What)
	}
	if len(ids) > maxActionIDs {
		return badRequest("%d %s selected, over the limit of %d", len(ids), t.What, maxActionIDs)
	}
	if rq.r.PostFormValue("confirm") != "yes" {
		eligible, err := t.eligible(rq.ctx(), action, ids)
		if err != nil {
			return err
		}
		back := t.Link
		if len(ids) == 1 {
			back += "/" + strconv.FormatInt(ids[0], 10)
		}
		c.render(rq, "confirm", http.StatusOK, &confirmPage{T: t, Action: actionOf(action), IDs: ids, Eligible: len(eligible), Back: back})
		return nil
	}
	n, err := t.apply(rq.ctx(), action, ids)
	c.log.Info("console: action", "user", rq.user, "action", string(action), "table", t.Table, "group", t.Group,
		"ids", ids, "asked", len(ids), "count", n, "ok", err == nil)
	if err != nil {
		return err
	}
	to := t.Link
	if len(ids) == 1 && action != eventgen.ActionDelete {
		to += "/" + strconv.FormatInt(ids[0], 10)
	}
	http.Redirect(rq.w, rq.r, to+"?done="+url.QueryEscape(string(action))+"&n="+strconv.Itoa(n), http.StatusSeeOther)
	return nil
}

// checkAction reads an action's form and refuses it in read-only mode,
// or when its origin or CSRF token is wrong, with a warning in the log.
func (c *Console) checkAction(rq *request) error {
	rq.r.Body = http.MaxBytesReader(rq.w, rq.r.Body, 1<<20)
	if err := rq.r.ParseForm(); err != nil {
		return badRequest("the form could not be read: %v", err)
	}
	if c.opts.ReadOnly {
		c.log.Warn("console: action refused", "user", rq.user, "reason", "read-only", "path", rq.r.URL.Path)
		return forbidden("refused: this console is read-only")
	}
	if err := c.checkPost(rq.r); err != nil {
		c.log.Warn("console: action refused", "user", rq.user, "reason", err.Error(), "path", rq.r.URL.Path, "remote", rq.r.RemoteAddr)
		return forbidden("refused: " + err.Error())
	}
	return nil
}

// formatTime formats t in UTC to the millisecond, or "" for the zero time.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05.000")
}

func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}

// clip cuts s to n runes, marking the cut.
func clip(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}

// parsePages parses each page's template with the layout.
func parsePages() (map[string]*template.Template, error) {
	pages := map[string]*template.Template{}
	for _, name := range []string{"overview", "list", "row", "confirm", "error", "blocked", "skip"} {
		t, err := template.New(name).Funcs(template.FuncMap{"lower": strings.ToLower}).
			ParseFS(assets, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("parse template %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}
