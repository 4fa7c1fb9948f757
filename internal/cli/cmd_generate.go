package cli

import (
	"flag"

	"github.com/eventgen/eventgen/generator"
)

func generateCommand() *command {
	return &command{
		name:     "generate",
		synopsis: "[-f events.yaml] [-o DIR]",
		summary:  "write the Go package and EVENTS.md for a spec",
		help: `Generate validates the spec and writes the generated package into DIR.
Only files whose content changed are written, each atomically; generated
files that the spec no longer produces are removed. Files without the
generated-code header, such as your own tests, are never touched.

Paths are relative to the current directory, so that the command works in a
go:generate line:

	//go:generate go run github.com/eventgen/eventgen/cmd/eventgen -f ../events.yaml -o .`,
		setup: func(fs *flag.FlagSet) func(*env) int {
			var f specFlags
			f.define(fs, true)
			return func(e *env) int {
				files, ok := e.generate(&f)
				if !ok {
					return ExitFailure
				}
				if err := generator.Write(f.dir, files); err != nil {
					e.printError(err)
					return ExitFailure
				}
				return ExitOK
			}
		},
	}
}
