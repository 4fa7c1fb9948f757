// Package cli implements the eventgen command. main calls [Run]; tests call
// it too, with their own arguments and output buffers.
//
// Each command lives in its own file (cmd_*.go) and is listed once in
// [commands]; adding a command means adding a file and a line there.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/eventgen/eventgen/generator"
)

// Exit codes of Run.
const (
	// ExitOK means success.
	ExitOK = 0
	// ExitFailure means the spec is invalid, the output is stale (check),
	// reading or writing files failed, or a database command failed.
	ExitFailure = 1
	// ExitUsage means the command line is wrong.
	ExitUsage = 2
)

// command is one subcommand of eventgen.
type command struct {
	name     string
	synopsis string // arguments, as in "eventgen NAME SYNOPSIS"
	summary  string // one line for the command list
	help     string // paragraphs shown by "eventgen help NAME"
	// setup defines the command's flags on fs and returns the function that
	// runs it once fs has parsed the arguments.
	setup func(fs *flag.FlagSet) func(e *env) int
	// subcommands, instead of setup, make the command a group whose first
	// argument names one of them, as in "eventgen outbox failed".
	subcommands []*command
}

// commands lists every subcommand, in the order help shows them. The first
// is the default when no command is named.
func commands() []*command {
	return []*command{
		generateCommand(),
		checkCommand(),
		validateCommand(),
		sqlCommand(),
		outboxCommand(),
		inboxCommand(),
		versionCommand(),
	}
}

// env is what a running command may use.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

// Run runs eventgen with args (without the program name) and returns the
// exit code: [ExitOK], [ExitFailure] or [ExitUsage]. Paths in args are
// relative to the current directory, as under go:generate.
func Run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	cmds := commands()
	if len(args) == 0 || strings.HasPrefix(args[0], "-") && !isHelpFlag(args[0]) {
		return e.run(cmds[0], args)
	}
	name := args[0]
	if isHelpFlag(name) || name == "help" {
		return e.help(cmds, args[1:])
	}
	for _, c := range cmds {
		if c.name == name {
			return e.run(c, args[1:])
		}
	}
	fmt.Fprintf(stderr, "eventgen: unknown command %q\n\n", name)
	e.usage(stderr, cmds)
	return ExitUsage
}

func isHelpFlag(s string) bool {
	return s == "-h" || s == "-help" || s == "--help"
}

// run parses a command's flags and runs it. The commands take no
// positional arguments, except a group's subcommand name.
func (e *env) run(c *command, args []string) int {
	if c.subcommands != nil {
		return e.runGroup(c, args)
	}
	fs := flag.NewFlagSet("eventgen "+c.name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() { e.commandUsage(e.stderr, c, fs) }
	action := c.setup(fs)
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return ExitOK
	} else if err != nil {
		return ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(e.stderr, "eventgen %s: unexpected argument %q\n", c.name, fs.Arg(0))
		fs.Usage()
		return ExitUsage
	}
	return action(e)
}

func (e *env) help(cmds []*command, args []string) int {
	switch len(args) {
	case 0:
		e.usage(e.stdout, cmds)
		return ExitOK
	case 1, 2:
		for _, c := range cmds {
			if c.name != args[0] {
				continue
			}
			if c.subcommands != nil {
				return e.groupHelp(c, args[1:])
			}
			if len(args) == 1 {
				e.showUsage(e.stdout, c)
				return ExitOK
			}
		}
		if len(args) == 1 {
			fmt.Fprintf(e.stderr, "eventgen help: unknown command %q\n", args[0])
			return ExitUsage
		}
	}
	fmt.Fprintln(e.stderr, "eventgen help: give at most one command")
	return ExitUsage
}

// showUsage prints a command's usage and flags to w.
func (e *env) showUsage(w io.Writer, c *command) {
	fs := flag.NewFlagSet("eventgen "+c.name, flag.ContinueOnError)
	c.setup(fs)
	e.commandUsage(w, c, fs)
}

func (e *env) usage(w io.Writer, cmds []*command) {
	fmt.Fprint(w, `eventgen turns an events spec (YAML) into a Go package of typed events,
outbox publishers and handler interfaces, plus EVENTS.md.

Usage:

	eventgen [command] [flags]

Commands:

`)
	for i, c := range cmds {
		def := ""
		if i == 0 {
			def = " (the default)"
		}
		fmt.Fprintf(w, "\t%-9s %s%s\n", c.name, c.summary, def)
	}
	fmt.Fprint(w, `	help      show help for a command

Run "eventgen help <command>" for its flags. Exit status: 0 on success,
1 for an invalid spec, a stale output, a file or database error, 2 for a
usage error.
`)
}

func (e *env) commandUsage(w io.Writer, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: eventgen %s %s\n\n%s\n", c.name, c.synopsis, c.help)
	hasFlags := false
	fs.VisitAll(func(*flag.Flag) { hasFlags = true })
	if hasFlags {
		fmt.Fprintf(w, "\nFlags:\n")
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(e.stderr)
	}
}

// specFlags are the flags of the commands that read a spec.
type specFlags struct {
	file string
	dir  string
}

func (f *specFlags) define(fs *flag.FlagSet, withDir bool) {
	fs.StringVar(&f.file, "f", "events.yaml", "the spec `file`")
	if withDir {
		fs.StringVar(&f.dir, "o", "", "the output `directory` (default: the spec's package name)")
	}
}

// load reads and validates the spec, printing its warnings, or its problems
// one per line.
func (e *env) load(f *specFlags) (*generator.Spec, bool) {
	s, err := generator.Load(f.file)
	if err != nil {
		e.printError(err)
		return nil, false
	}
	for _, w := range s.Warnings() {
		w := *w
		w.Msg = "warning: " + w.Msg
		fmt.Fprintln(e.stderr, w.Error())
	}
	if f.dir == "" {
		f.dir = s.Package()
	}
	return s, true
}

// generate loads the spec and generates its files in memory.
func (e *env) generate(f *specFlags) (map[string][]byte, bool) {
	s, ok := e.load(f)
	if !ok {
		return nil, false
	}
	files, err := generator.Generate(s)
	if err != nil {
		e.printError(err)
		return nil, false
	}
	return files, true
}

// printError prints a spec's problems one per line, like a compiler, and
// any other error with the program's name.
func (e *env) printError(err error) {
	var list generator.ErrorList
	if errors.As(err, &list) {
		for _, pe := range list {
			fmt.Fprintln(e.stderr, pe.Error())
		}
		return
	}
	fmt.Fprintf(e.stderr, "eventgen: %v\n", err)
}
