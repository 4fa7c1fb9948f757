package cli

import (
	"flag"
	"fmt"

	"github.com/eventgen/eventgen/generator"
)

func checkCommand() *command {
	return &command{
		name:     "check",
		synopsis: "[-f events.yaml] [-o DIR]",
		summary:  "fail with a diff when DIR is not what generate would write",
		help: `Check generates the package in memory and compares it with DIR. When they
differ it prints a unified diff to standard output and exits with status 1.
Run it in CI to catch a spec changed without regenerating.`,
		setup: func(fs *flag.FlagSet) func(*env) int {
			var f specFlags
			f.define(fs, true)
			return func(e *env) int {
				files, ok := e.generate(&f)
				if !ok {
					return ExitFailure
				}
				diff, err := generator.Check(f.dir, files)
				if err != nil {
					e.printError(err)
					return ExitFailure
				}
				if len(diff) > 0 {
					e.stdout.Write(diff)
					fmt.Fprintf(e.stderr, "eventgen: %s is not up to date with %s; run eventgen generate\n", f.dir, f.file)
					return ExitFailure
				}
				return ExitOK
			}
		},
	}
}
