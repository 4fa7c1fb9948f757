package gencli

import (
	"flag"
	"fmt"

	"github.com/eventgen/eventgen/generator"
	"github.com/eventgen/eventgen/internal/cli"
)

func checkCommand() *cli.Command {
	return &cli.Command{
		Name:     "check",
		Synopsis: "[-f events.yaml] [-o DIR]",
		Summary:  "fail with a diff when DIR is not what generate would write",
		Help: `Check generates the package in memory and compares it with DIR. When they
differ it prints a unified diff to standard output and exits with status 1.
Run it in CI to catch a spec changed without regenerating.`,
		Setup: func(fs *flag.FlagSet) func(*cli.Env) int {
			var f specFlags
			f.define(fs, true)
			return func(e *cli.Env) int {
				files, ok := generate(e, &f)
				if !ok {
					return cli.ExitFailure
				}
				diff, err := generator.Check(f.dir, files)
				if err != nil {
					printError(e, err)
					return cli.ExitFailure
				}
				if len(diff) > 0 {
					e.Stdout.Write(diff)
					fmt.Fprintf(e.Stderr, "eventgen: %s is not up to date with %s; run eventgen generate\n", f.dir, f.file)
					return cli.ExitFailure
				}
				return cli.ExitOK
			}
		},
	}
}
