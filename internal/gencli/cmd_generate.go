package gencli

import (
	"flag"

	"github.com/eventgen/eventgen/generator"
	"github.com/eventgen/eventgen/internal/cli"
)

func generateCommand() *cli.Command {
	return &cli.Command{
		Name:     "generate",
		Synopsis: "[-f events.yaml] [-o DIR]",
		Summary:  "write the Go package and EVENTS.md for a spec",
		Help: `Generate validates the spec and writes the generated package into DIR.
Only files whose content changed are written, each atomically; generated
files that the spec no longer produces are removed. Files without the
generated-code header, such as your own tests, are never touched.

Paths are relative to the current directory, so that the command works in a
go:generate line:

	//go:generate go run github.com/eventgen/eventgen/cmd/eventgen -f ../events.yaml -o .`,
		Setup: func(fs *flag.FlagSet) func(*cli.Env) int {
			var f specFlags
			f.define(fs, true)
			return func(e *cli.Env) int {
				files, ok := generate(e, &f)
				if !ok {
					return cli.ExitFailure
				}
				if err := generator.Write(f.dir, files); err != nil {
					printError(e, err)
					return cli.ExitFailure
				}
				return cli.ExitOK
			}
		},
	}
}
