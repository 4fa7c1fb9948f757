// Package console is eventgen's operations console: an [http.Handler] that
// a service mounts on its own mux to see its outbox and its consumer
// groups' inboxes, and to act on failed and scheduled rows.
//
// It shows, per outbox and per group, the counts by status, the oldest
// pending age and the last hour's throughput as a chart; lists of events
// and messages filtered by status, event name, key and time, paged by id;
// one event with its payload, headers, attempts and last error; and it
// requeues, re-executes, deletes and publishes scheduled events now, each
// after a confirmation page that says how many rows will change. For
// per-key ordering, it lists each group's blocked keys, skips a blocked
// key's next event (after a confirmation), and shows on an event's page
// its sequence and the events held behind it.
//
// It is secure by default:
//
//   - [New] refuses to build without Options.Authorize, unless
//     Options.InsecureAllowAnonymous says otherwise by name; [TokenAuth]
//     is a ready authorizer for a shared token.
//   - Every state-changing request is a POST that must come from the
//     console's own origin (Sec-Fetch-Site, Origin) and carry a token bound
//     to the user and to a cookie (HMAC); GET requests change nothing.
//   - Options.ReadOnly hides every action and refuses them.
//   - Every action is logged through slog with the user, the action, the
//     row ids and how many rows changed.
//   - Everything that came from a message is escaped by html/template; the
//     pages run no script at all (Content-Security-Policy default-src
//     'none', and no script-src), load nothing from elsewhere, and may not
//     be framed.
//
// Mount it under a prefix:
//
//	h, err := console.New(outbox, []*eventgen.Consumer{billing}, console.Options{
//		Prefix:    "/ops",
//		Authorize: auth, // e.g. console.TokenAuth(os.Getenv("CONSOLE_TOKEN"))
//	})
//	mux.Handle("/ops/", h)
package console

import (
	"crypto/rand"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"

	"github.com/eventgen/eventgen/runtime/eventgen"
)

//go:embed templates/*.html static/*
var assets embed.FS

// Options configure a [Console]. The zero value is refused: Authorize or
// InsecureAllowAnonymous must be set.
type Options struct {
	// Authorize authenticates a request and returns the name of its user,
	// which the audit log records. A request it refuses gets 401 with a
	// Basic challenge, so that a browser asks for credentials. Required,
	// unless InsecureAllowAnonymous is set.
	Authorize func(r *http.Request) (user string, ok bool)
	// InsecureAllowAnonymous serves everyone who can reach the handler,
	// as user "anonymous", when Authorize is nil. Only for a handler that
	// something in front of it already authenticates.
	InsecureAllowAnonymous bool
	// ReadOnly hides every action, and refuses them with 403.
	ReadOnly bool
	// Prefix is the path the handler is mounted under, such as "/ops"
	// (mount it as mux.Handle("/ops/", h)); empty for the root. The
	// handler does not need http.StripPrefix.
	Prefix string
	// Logger receives the audit log (Info: every action; Warn: refused
	// requests) and errors. Default slog.Default().
	Logger *slog.Logger
	// CSRFKey is the key of the CSRF tokens' HMAC: at least 32 bytes.
	// Default: random, made by New. Set the same key on every replica
	// behind one load balancer, or a form loaded from one is refused by
	// another.
	CSRFKey []byte
	// PageSize is how many rows a list shows. Default 50, at most 1000.
	PageSize int
}

// Console is the operations console, an [http.Handler]. It is safe for
// concurrent use.
type Console struct {
	outbox    *eventgen.Outbox
	consumers []*eventgen.Consumer
	opts      Options
	log       *slog.Logger
	csrfKey   []byte
	origin    *http.CrossOriginProtection
	mux       *http.ServeMux
	pages     map[string]*template.Template
	static    http.Handler
}

// New returns the console of outbox (nil if the service has none) and of
// consumers' groups. Invalid options are reported here, all at once.
func New(outbox *eventgen.Outbox, consumers []*eventgen.Consumer, opts Options) (*Console, error) {
	var errs []error
	if opts.Authorize == nil && !opts.InsecureAllowAnonymous {
		errs = append(errs, errors.New("Options.Authorize is required (or set InsecureAllowAnonymous, if something in front of the console authenticates)"))
	}
	if opts.Prefix != "" && (!strings.HasPrefix(opts.Prefix, "/") || strings.HasSuffix(opts.Prefix, "/") || strings.ContainsAny(opts.Prefix, "{}? #%")) {
		errs = append(errs, fmt.Errorf("Options.Prefix %q must start with / and not end with one, without {}?#%% or spaces", opts.Prefix))
	}
	if opts.CSRFKey != nil && len(opts.CSRFKey) < 32 {
		errs = append(errs, fmt.Errorf("Options.CSRFKey has %d bytes, fewer than 32", len(opts.CSRFKey)))
	}
	if opts.PageSize < 0 || opts.PageSize > 1000 {
		errs = append(errs, fmt.Errorf("Options.PageSize %d is not between 1 and 1000", opts.PageSize))
	}
	if outbox == nil && len(consumers) == 0 {
		errs = append(errs, errors.New("give an outbox, consumers, or both"))
	}
	seen := map[string]bool{}
	for i, c := range consumers {
		switch {
		case c == nil:
			errs = append(errs, fmt.Errorf("consumers[%d] is nil", i))
		case seen[c.Group()]:
			errs = append(errs, fmt.Errorf("consumers[%d]: group %q is given twice", i, c.Group()))
		default:
			seen[c.Group()] = true
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("console: New: %w", err)
	}
	if opts.PageSize == 0 {
		opts.PageSize = 50
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	key := opts.CSRFKey
	if key == nil {
		key = make([]byte, 32)
		_, _ = rand.Read(key) // never fails (crypto/rand since Go 1.24)
	}
	pages, err := parsePages()
	if err != nil {
		return nil, fmt.Errorf("console: New: %w", err)
	}
	static, _ := fs.Sub(assets, "static")
	c := &Console{
		outbox:    outbox,
		consumers: consumers,
		opts:      opts,
		log:       opts.Logger.With("component", "eventgen.console"),
		csrfKey:   key,
		origin:    http.NewCrossOriginProtection(),
		pages:     pages,
		static:    http.StripPrefix(opts.Prefix+"/static/", http.FileServerFS(static)),
	}
	c.routes()
	return c, nil
}

func (c *Console) routes() {
	p := c.opts.Prefix
	m := http.NewServeMux()
	m.HandleFunc("GET "+p+"/{$}", c.page(c.overview))
	m.HandleFunc("GET "+p+"/outbox", c.onOutbox(c.list))
	m.HandleFunc("GET "+p+"/outbox/{id}", c.onOutbox(c.row))
	m.HandleFunc("POST "+p+"/outbox/actions", c.onOutbox(c.act))
	m.HandleFunc("GET "+p+"/inbox/{group}", c.onInbox(c.list))
	m.HandleFunc("GET "+p+"/inbox/{group}/{id}", c.onInbox(c.row))
	m.HandleFunc("POST "+p+"/inbox/{group}/actions", c.onInbox(c.act))
	m.HandleFunc("GET "+p+"/inbox/{group}/blocked", c.onInbox(c.blocked))
	m.HandleFunc("POST "+p+"/inbox/{group}/skip", c.onInbox(c.skip))
	m.Handle("GET "+p+"/static/", c.static)
	m.HandleFunc(p+"/", c.page(func(*request) error { return notFound("no such page") }))
	c.mux = m
}

// ServeHTTP serves the console: it sets the security headers, checks
// authentication, and for a POST the origin and the CSRF token.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	user, ok := c.authorize(r)
	if !ok {
		h.Set("WWW-Authenticate", `Basic realm="eventgen console", charset="UTF-8"`)
		c.log.Warn("console: unauthenticated request refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
		http.Error(w, "401 unauthorized: the console needs credentials", http.StatusUnauthorized)
		return
	}
	c.mux.ServeHTTP(w, r.WithContext(withUser(r.Context(), user)))
}

func (c *Console) authorize(r *http.Request) (string, bool) {
	if c.opts.Authorize == nil {
		return "anonymous", true // InsecureAllowAnonymous, checked by New
	}
	user, ok := c.opts.Authorize(r)
	if !ok {
		return "", false
	}
	if user == "" {
		user = "unnamed"
	}
	return user, true
}

// consumer returns the consumer of group, or nil.
func (c *Console) consumer(group string) *eventgen.Consumer {
	for _, cs := range c.consumers {
		if cs.Group() == group {
			return cs
		}
	}
	return nil
}
