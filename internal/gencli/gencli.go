// Package gencli implements the eventgen command, the generator. main calls
// [Run]; tests call it too, with their own arguments and output buffers.
//
// Each command lives in its own file (cmd_*.go) and is listed once in
// [program]; adding a command means adding a file and a line there. The
// package links the generator and the command-line framework only: the
// commands that reach a database are eventgen-ops's (internal/opscli).
package gencli

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/eventgen/eventgen/generator"
	"github.com/eventgen/eventgen/internal/cli"
)

// program is the eventgen command.
func program() *cli.Program {
	return &cli.Program{
		Name: "eventgen",
		Intro: `eventgen turns an events spec (YAML) into a Go package of typed events,
outbox publishers and handler interfaces, plus EVENTS.md, and exports it
as AsyncAPI and JSON Schema. The operations commands (sql, outbox, inbox)
are eventgen-ops's.`,
		Commands: []*cli.Command{
			generateCommand(),
			checkCommand(),
			validateCommand(),
			exportCommand(),
			// The short spellings of export's commands.
			exportAsyncAPICommand(),
			exportJSONSchemaCommand(),
			versionCommand(),
			{Name: "sql", MovedTo: "eventgen-ops"},
			{Name: "outbox", MovedTo: "eventgen-ops"},
			{Name: "inbox", MovedTo: "eventgen-ops"},
		},
		DefaultFirst: true,
		ExitStatus: `Exit status: 0 on success, 1 for an invalid spec, a stale output or
a file error, 2 for a usage error.`,
	}
}

// Run runs eventgen with args (without the program name) and returns the
// exit code: [cli.ExitOK], [cli.ExitFailure] or [cli.ExitUsage]. Paths in
// args are relative to the current directory, as under go:generate.
func Run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return program().Run(args, stdin, stdout, stderr)
}

func versionCommand() *cli.Command {
	return cli.VersionCommand(`Version prints the module version of eventgen and the version of the
runtime API that generated code requires. Generated code compiles only
against a runtime of the same API version.`, fmt.Sprintf(" (runtime API version %d)", generator.RuntimeAPIVersion))
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
func load(e *cli.Env, f *specFlags) (*generator.Spec, bool) {
	s, err := generator.Load(f.file)
	if err != nil {
		printError(e, err)
		return nil, false
	}
	for _, w := range s.Warnings() {
		w := *w
		w.Msg = "warning: " + w.Msg
		fmt.Fprintln(e.Stderr, w.Error())
	}
	if f.dir == "" {
		f.dir = s.Package()
	}
	return s, true
}

// generate loads the spec and generates its files in memory.
func generate(e *cli.Env, f *specFlags) (map[string][]byte, bool) {
	s, ok := load(e, f)
	if !ok {
		return nil, false
	}
	files, err := generator.Generate(s)
	if err != nil {
		printError(e, err)
		return nil, false
	}
	return files, true
}

// printError prints a spec's problems one per line, like a compiler, and
// any other error with the program's name.
func printError(e *cli.Env, err error) {
	var list generator.ErrorList
	if errors.As(err, &list) {
		for _, pe := range list {
			fmt.Fprintln(e.Stderr, pe.Error())
		}
		return
	}
	fmt.Fprintf(e.Stderr, "eventgen: %v\n", err)
}
