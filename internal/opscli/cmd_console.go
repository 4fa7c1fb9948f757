package opscli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/internal/cli"
	"github.com/eventgen/eventgen/runtime/console"
	"github.com/eventgen/eventgen/runtime/eventgen"
)

// EnvConsoleToken is the environment variable the console's token is read
// from.
const EnvConsoleToken = "EVENTGEN_CONSOLE_TOKEN"

// consoleFlags are the console command's flags.
type consoleFlags struct {
	db                 dbFlags
	listen             string
	inboxTable         string
	groups             stringList
	noOutbox, readOnly bool
	tokenFile          string
	tlsCert, tlsKey    string
	insecureNoTLS      bool
}

func consoleCommand() *cli.Command {
	return &cli.Command{
		Name:     "console",
		Synopsis: "[-listen ADDR] [-group G ...] [-read-only] [-token-file F] [-tls-cert F -tls-key F]",
		Summary:  "serve the web console of an outbox and its consumer groups",
		Help: `Console serves eventgen's web console (package runtime/console) on its own:
counts, throughput charts, lists and events of the outbox and of each
consumer group's inbox, and the actions on them (requeue, re-execute,
delete, publish now), each confirmed and written to the audit log on
stderr. -read-only hides and refuses every action.

It listens on 127.0.0.1:8080 by default. Every request needs the token: as
the password of the browser's login prompt (any user name, which the audit
log records) or as "Authorization: Bearer TOKEN". The token is read from
$` + EnvConsoleToken + ` or from the first line of -token-file; without
either, a new token is made and printed once on stderr.

On an address other than loopback it serves HTTPS only (-tls-cert and
-tls-key), since the token would otherwise cross the network in clear
text; -insecure-no-tls lifts that, for a console behind a proxy that
terminates TLS on the same host or network.

The groups are those given with -group, or else every group that has rows
in the inbox table when the console starts. -no-outbox leaves the outbox
out.` + dbHelp,
		Setup: func(fs *flag.FlagSet) func(*cli.Env) int {
			var f consoleFlags
			f.db.define(fs, "outbox", eventgen.DefaultOutboxTable)
			fs.StringVar(&f.listen, "listen", "127.0.0.1:8080", "listen on `address`")
			fs.StringVar(&f.inboxTable, "inbox-table", eventgen.DefaultInboxTable, "the inbox `table`")
			fs.Var(&f.groups, "group", "show consumer `group` (repeatable; default: every group in the inbox table)")
			fs.BoolVar(&f.noOutbox, "no-outbox", false, "show no outbox")
			fs.BoolVar(&f.readOnly, "read-only", false, "hide and refuse every action")
			fs.StringVar(&f.tokenFile, "token-file", "", "read the token from the first line of `file`")
			fs.StringVar(&f.tlsCert, "tls-cert", "", "serve HTTPS with the certificate in `file`")
			fs.StringVar(&f.tlsKey, "tls-key", "", "and the key in `file`")
			fs.BoolVar(&f.insecureNoTLS, "insecure-no-tls", false, "allow plain HTTP on an address other than loopback")
			return func(e *cli.Env) int { return runConsole(e, &f) }
		},
	}
}

// checkListen refuses plain HTTP on an address that is not loopback,
// unless insecureNoTLS.
func checkListen(addr string, tls, insecureNoTLS bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-listen %q: %w", addr, err)
	}
	if tls || insecureNoTLS || isLoopback(host) {
		return nil
	}
	return fmt.Errorf("-listen %s is not a loopback address: give -tls-cert and -tls-key, or -insecure-no-tls if a proxy terminates TLS", addr)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// consoleToken returns the token from the environment or -token-file, or
// a new one, and whether it is new.
func consoleToken(tokenFile string) (string, bool, error) {
	if tokenFile != "" {
		tok, err := firstLineOf(tokenFile, "-token-file")
		return tok, false, err
	}
	if tok := strings.TrimSpace(os.Getenv(EnvConsoleToken)); tok != "" {
		return tok, false, nil
	}
	return console.NewToken(), true, nil
}

func runConsole(e *cli.Env, f *consoleFlags) int {
	const name = "console"
	tls := f.tlsCert != "" || f.tlsKey != ""
	if tls && (f.tlsCert == "" || f.tlsKey == "") {
		return usage(e, name, "give both -tls-cert and -tls-key")
	}
	if err := checkListen(f.listen, tls, f.insecureNoTLS); err != nil {
		return usage(e, name, "%v", err)
	}
	token, made, err := consoleToken(f.tokenFile)
	if err != nil {
		return usage(e, name, "%v", err)
	}
	auth, err := console.TokenAuth(token)
	if err != nil {
		return usage(e, name, "the token: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	db, code := open(ctx, e, name, &f.db)
	if db == nil {
		return code
	}
	defer db.Close()
	log := slog.New(slog.NewTextHandler(e.Stderr, nil))
	h, err := newConsoleHandler(ctx, db, f, auth, log)
	if err != nil {
		return fail(e, name, err)
	}
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fail(e, name, err)
	}
	scheme := "http"
	if tls {
		scheme = "https"
	}
	if made {
		fmt.Fprintf(e.Stderr, "console token (shown once; set $%s or -token-file to choose one): %s\n", EnvConsoleToken, token)
	}
	fmt.Fprintf(e.Stderr, "console: serving on %s://%s/ (read-only: %v)\n", scheme, ln.Addr(), f.readOnly)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	done := make(chan error, 1)
	go func() {
		if tls {
			done <- srv.ServeTLS(ln, f.tlsCert, f.tlsKey)
		} else {
			done <- srv.Serve(ln)
		}
	}()
	select {
	case err = <-done:
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = srv.Shutdown(sctx)
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fail(e, name, err)
	}
	return cli.ExitOK
}

// newConsoleHandler builds the console of the tables f names on db.
func newConsoleHandler(ctx context.Context, db *bun.DB, f *consoleFlags, auth func(*http.Request) (string, bool), log *slog.Logger) (http.Handler, error) {
	var ob *eventgen.Outbox
	if !f.noOutbox {
		var err error
		if ob, err = eventgen.NewOutbox(db, nil, eventgen.OutboxOptions{Table: f.db.table, Logger: log}); err != nil {
			return nil, err
		}
	}
	groups := []string(f.groups)
	if len(groups) == 0 {
		var err error
		if groups, err = eventgen.ConsumerGroups(ctx, db, f.inboxTable); err != nil {
			return nil, fmt.Errorf("find the consumer groups (or name them with -group): %w", err)
		}
	}
	var consumers []*eventgen.Consumer
	for _, g := range groups {
		c, err := eventgen.NewConsumer(db, nil, eventgen.ConsumerOptions{Group: g, Table: f.inboxTable, Logger: log})
		if err != nil {
			return nil, err
		}
		consumers = append(consumers, c)
	}
	return console.New(ob, consumers, console.Options{Authorize: auth, ReadOnly: f.readOnly, Logger: log})
}
