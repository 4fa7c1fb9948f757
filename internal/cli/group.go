package cli

import (
	"fmt"
	"io"
)

// runGroup runs the subcommand of group c that args[0] names.
func (e *env) runGroup(c *command, args []string) int {
	if len(args) == 0 {
		fmt.Fprintf(e.stderr, "eventgen %s: name a command\n\n", c.name)
		e.groupUsage(e.stderr, c)
		return ExitUsage
	}
	if isHelpFlag(args[0]) || args[0] == "help" {
		return e.groupHelp(c, args[1:])
	}
	if sub := c.subcommand(args[0]); sub != nil {
		return e.run(sub, args[1:])
	}
	fmt.Fprintf(e.stderr, "eventgen %s: unknown command %q\n\n", c.name, args[0])
	e.groupUsage(e.stderr, c)
	return ExitUsage
}

// groupHelp prints the usage of group c, or of the subcommand args names.
func (e *env) groupHelp(c *command, args []string) int {
	switch len(args) {
	case 0:
		e.groupUsage(e.stdout, c)
		return ExitOK
	case 1:
		if sub := c.subcommand(args[0]); sub != nil {
			e.showUsage(e.stdout, sub)
			return ExitOK
		}
		fmt.Fprintf(e.stderr, "eventgen help %s: unknown command %q\n", c.name, args[0])
	default:
		fmt.Fprintf(e.stderr, "eventgen help %s: give at most one command\n", c.name)
	}
	return ExitUsage
}

// subcommand returns c's subcommand called name, named in full ("outbox
// failed") for its usage and messages, or nil.
func (c *command) subcommand(name string) *command {
	for _, sub := range c.subcommands {
		if sub.name == name {
			full := *sub
			full.name = c.name + " " + sub.name
			return &full
		}
	}
	return nil
}

func (e *env) groupUsage(w io.Writer, c *command) {
	fmt.Fprintf(w, "Usage: eventgen %s <command> [flags]\n\n%s\n\nCommands:\n\n", c.name, c.help)
	for _, sub := range c.subcommands {
		fmt.Fprintf(w, "\t%-10s %s\n", sub.name, sub.summary)
	}
	fmt.Fprintf(w, "\nRun \"eventgen help %s <command>\" for its flags.\n", c.name)
}
