package cli

import (
	"flag"
	"fmt"
	"runtime/debug"
)

// modulePath is the module that holds eventgen and its runtime.
const modulePath = "github.com/eventgen/eventgen"

// VersionCommand returns the version command: it prints the program's name,
// the module version in this binary and then more (such as " (runtime API
// version 1)"). help is the command's help.
func VersionCommand(help, more string) *Command {
	return &Command{
		Name:    "version",
		Summary: "print the version",
		Help:    help,
		Setup: func(fs *flag.FlagSet) func(*Env) int {
			return func(e *Env) int {
				fmt.Fprintf(e.Stdout, "%s %s%s\n", e.Program, moduleVersion(), more)
				return ExitOK
			}
		},
	}
}

// moduleVersion returns the version of the eventgen module in this binary:
// the main module when the command is built in its own repository, a
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
