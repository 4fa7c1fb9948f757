package gencli

import (
	"flag"

	"github.com/eventgen/eventgen/internal/cli"
)

func validateCommand() *cli.Command {
	return &cli.Command{
		Name:     "validate",
		Synopsis: "[-f events.yaml]",
		Summary:  "check a spec without writing anything",
		Help: `Validate reads the spec and reports every problem it finds, one per line
as file:line:column: message, and exits with status 1 if there is any.
Warnings are printed too but do not fail.`,
		Setup: func(fs *flag.FlagSet) func(*cli.Env) int {
			var f specFlags
			f.define(fs, false)
			return func(e *cli.Env) int {
				if _, ok := load(e, &f); !ok {
					return cli.ExitFailure
				}
				return cli.ExitOK
			}
		},
	}
}
