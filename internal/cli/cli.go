// Package cli is the command-line framework of eventgen's commands,
// cmd/eventgen (the generator, in internal/gencli) and cmd/eventgen-ops
// (database operations, in internal/opscli): subcommands and groups of
// them, flag parsing, help and exit codes.
//
// It imports only the standard library, so that the generator's command
// links nothing but the generator.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// Exit codes of [Program.Run].
const (
	// ExitOK means success.
	ExitOK = 0
	// ExitFailure means the spec is invalid, the output is stale (check),
	// reading or writing files failed, or a database command failed.
	ExitFailure = 1
	// ExitUsage means the command line is wrong.
	ExitUsage = 2
)

// Program is one command, such as eventgen, and its subcommands.
type Program struct {
	// Name is the command's name, as in messages: "eventgen".
	Name string
	// Intro is the paragraph that starts the command's help.
	Intro string
	// Commands lists the subcommands, in the order help shows them.
	Commands []*Command
	// DefaultFirst makes the first command run when none is named; without
	// it, no command is a usage error.
	DefaultFirst bool
	// ExitStatus ends the help: what the exit codes mean.
	ExitStatus string
}

// Command is one subcommand of a [Program].
type Command struct {
	Name     string
	Synopsis string // arguments, as in "PROGRAM NAME SYNOPSIS"
	Summary  string // one line for the command list
	Help     string // paragraphs shown by "PROGRAM help NAME"
	// Setup defines the command's flags on fs and returns the function that
	// runs it once fs has parsed the arguments.
	Setup func(fs *flag.FlagSet) func(e *Env) int
	// Subcommands, instead of Setup, make the command a group whose first
	// argument names one of them, as in "eventgen-ops outbox failed".
	Subcommands []*Command
	// MovedTo, instead of Setup or Subcommands, names the program that now
	// has this command. Help does not list it, and running it is a usage
	// error that says where it went.
	MovedTo string
}

// Env is what a running command may use.
type Env struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Program is the name of the running program, for messages.
	Program string
}

// Run runs p with args (without the program name) and returns the exit
// code: [ExitOK], [ExitFailure] or [ExitUsage].
func (p *Program) Run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	r := &runner{p: p, e: &Env{Stdin: stdin, Stdout: stdout, Stderr: stderr, Program: p.Name}}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") && !isHelpFlag(args[0]) {
		if !p.DefaultFirst {
			if len(args) == 0 {
				fmt.Fprintf(stderr, "%s: name a command\n\n", p.Name)
			} else {
				fmt.Fprintf(stderr, "%s: unknown flag %q before the command\n\n", p.Name, args[0])
			}
			r.usage(stderr)
			return ExitUsage
		}
		return r.run(p.Commands[0], args)
	}
	name := args[0]
	if isHelpFlag(name) || name == "help" {
		return r.help(args[1:])
	}
	if c := p.command(name); c != nil {
		return r.run(c, args[1:])
	}
	fmt.Fprintf(stderr, "%s: unknown command %q\n\n", p.Name, name)
	r.usage(stderr)
	return ExitUsage
}

// command returns p's command called name, or nil.
func (p *Program) command(name string) *Command {
	for _, c := range p.Commands {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func isHelpFlag(s string) bool {
	return s == "-h" || s == "-help" || s == "--help"
}

// runner runs one command line of a program.
type runner struct {
	p *Program
	e *Env
}

// run parses a command's flags and runs it. The commands take no
// positional arguments, except a group's subcommand name.
func (r *runner) run(c *Command, args []string) int {
	switch {
	case c.MovedTo != "":
		return r.moved(c)
	case c.Subcommands != nil:
		return r.runGroup(c, args)
	}
	fs := r.flagSet(c)
	fs.Usage = func() { r.commandUsage(r.e.Stderr, c, fs) }
	action := c.Setup(fs)
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return ExitOK
	} else if err != nil {
		return ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(r.e.Stderr, "%s %s: unexpected argument %q\n", r.p.Name, c.Name, fs.Arg(0))
		fs.Usage()
		return ExitUsage
	}
	return action(r.e)
}

// moved says that command c is now another program's, as a usage error.
func (r *runner) moved(c *Command) int {
	fmt.Fprintf(r.e.Stderr, "%s %s: this command moved to %s: run \"%s %s\" (go run github.com/eventgen/eventgen/cmd/%s %s)\n",
		r.p.Name, c.Name, c.MovedTo, c.MovedTo, c.Name, c.MovedTo, c.Name)
	return ExitUsage
}

func (r *runner) flagSet(c *Command) *flag.FlagSet {
	fs := flag.NewFlagSet(r.p.Name+" "+c.Name, flag.ContinueOnError)
	fs.SetOutput(r.e.Stderr)
	return fs
}

func (r *runner) help(args []string) int {
	switch len(args) {
	case 0:
		r.usage(r.e.Stdout)
		return ExitOK
	case 1, 2:
		if c := r.p.command(args[0]); c != nil {
			switch {
			case c.MovedTo != "":
				return r.moved(c)
			case c.Subcommands != nil:
				return r.groupHelp(c, args[1:])
			case len(args) == 1:
				r.showUsage(r.e.Stdout, c)
				return ExitOK
			}
		} else if len(args) == 1 {
			fmt.Fprintf(r.e.Stderr, "%s help: unknown command %q\n", r.p.Name, args[0])
			return ExitUsage
		}
	}
	fmt.Fprintf(r.e.Stderr, "%s help: give at most one command\n", r.p.Name)
	return ExitUsage
}

// showUsage prints a command's usage and flags to w.
func (r *runner) showUsage(w io.Writer, c *Command) {
	fs := r.flagSet(c)
	c.Setup(fs)
	r.commandUsage(w, c, fs)
}

func (r *runner) usage(w io.Writer) {
	synopsis := "<command>"
	if r.p.DefaultFirst {
		synopsis = "[command]"
	}
	fmt.Fprintf(w, "%s\n\nUsage:\n\n\t%s %s [flags]\n\nCommands:\n\n", r.p.Intro, r.p.Name, synopsis)
	width := len("help")
	for _, c := range r.p.Commands {
		if c.MovedTo == "" {
			width = max(width, len(c.Name))
		}
	}
	for i, c := range r.p.Commands {
		if c.MovedTo != "" {
			continue
		}
		def := ""
		if i == 0 && r.p.DefaultFirst {
			def = " (the default)"
		}
		fmt.Fprintf(w, "\t%-*s %s%s\n", width, c.Name, c.Summary, def)
	}
	fmt.Fprintf(w, "\t%-*s %s\n\nRun \"%s help <command>\" for its flags.\n%s\n", width, "help", "show help for a command", r.p.Name, r.p.ExitStatus)
}

func (r *runner) commandUsage(w io.Writer, c *Command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: %s %s %s\n\n%s\n", r.p.Name, c.Name, c.Synopsis, c.Help)
	hasFlags := false
	fs.VisitAll(func(*flag.Flag) { hasFlags = true })
	if hasFlags {
		fmt.Fprintf(w, "\nFlags:\n")
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(r.e.Stderr)
	}
}
