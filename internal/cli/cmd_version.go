package cli

import (
	"flag"
	"fmt"
	"runtime/debug"

	"github.com/eventgen/eventgen/generator"
)

// modulePath is the module that holds eventgen and its runtime.
const modulePath = "github.com/eventgen/eventgen"

func versionCommand() *command {
	return &command{
		name:     "version",
		synopsis: "",
		summary:  "print eventgen's version",
		help: `Version prints the module version of eventgen and the version of the
runtime API that generated code requires. Generated code compiles only
against a runtime of the same API version.`,
		setup: func(fs *flag.FlagSet) func(*env) int {
			return func(e *env) int {
				fmt.Fprintf(e.stdout, "eventgen %s (runtime API version %d)\n", moduleVersion(), generator.RuntimeAPIVersion)
				return ExitOK
			}
		},
	}
}

// moduleVersion returns the version of the eventgen module in this binary:
// the main module when eventgen is built in its own repository, a
// dependency under go run or go tool.
func moduleVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	if info.Main.Path == modulePath {
		return info.Main.Version
	}
	for _, d := range info.Deps {
		if d.Path == modulePath {
			if d.Replace != nil {
				return d.Version + " => " + d.Replace.Path + " " + d.Replace.Version
			}
			return d.Version
		}
	}
	return "(unknown)"
}
