package cli

import "flag"

func validateCommand() *command {
	return &command{
		name:     "validate",
		synopsis: "[-f events.yaml]",
		summary:  "check a spec without writing anything",
		help: `Validate reads the spec and reports every problem it finds, one per line
as file:line:column: message, and exits with status 1 if there is any.
Warnings are printed too but do not fail.`,
		setup: func(fs *flag.FlagSet) func(*env) int {
			var f specFlags
			f.define(fs, false)
			return func(e *env) int {
				if _, ok := e.load(&f); !ok {
					return ExitFailure
				}
				return ExitOK
			}
		},
	}
}
