package cli

import (
	"fmt"
	"io"
)

// runGroup runs the subcommand of group c that args[0] names.
func (r *runner) runGroup(c *Command, args []string) int {
	if len(args) == 0 {
		fmt.Fprintf(r.e.Stderr, "%s %s: name a command\n\n", r.p.Name, c.Name)
		r.groupUsage(r.e.Stderr, c)
		return ExitUsage
	}
	if isHelpFlag(args[0]) || args[0] == "help" {
		return r.groupHelp(c, args[1:])
	}
	if sub := c.subcommand(args[0]); sub != nil {
		return r.run(sub, args[1:])
	}
	fmt.Fprintf(r.e.Stderr, "%s %s: unknown command %q\n\n", r.p.Name, c.Name, args[0])
	r.groupUsage(r.e.Stderr, c)
	return ExitUsage
}

// groupHelp prints the usage of group c, or of the subcommand args names.
func (r *runner) groupHelp(c *Command, args []string) int {
	switch len(args) {
	case 0:
		r.groupUsage(r.e.Stdout, c)
		return ExitOK
	case 1:
		if sub := c.subcommand(args[0]); sub != nil {
			r.showUsage(r.e.Stdout, sub)
			return ExitOK
		}
		fmt.Fprintf(r.e.Stderr, "%s help %s: unknown command %q\n", r.p.Name, c.Name, args[0])
	default:
		fmt.Fprintf(r.e.Stderr, "%s help %s: give at most one command\n", r.p.Name, c.Name)
	}
	return ExitUsage
}

// subcommand returns c's subcommand called name, named in full ("outbox
// failed") for its usage and messages, or nil.
func (c *Command) subcommand(name string) *Command {
	for _, sub := range c.Subcommands {
		if sub.Name == name {
			full := *sub
			full.Name = c.Name + " " + sub.Name
			return &full
		}
	}
	return nil
}

func (r *runner) groupUsage(w io.Writer, c *Command) {
	fmt.Fprintf(w, "Usage: %s %s <command> [flags]\n\n%s\n\nCommands:\n\n", r.p.Name, c.Name, c.Help)
	for _, sub := range c.Subcommands {
		fmt.Fprintf(w, "\t%-10s %s\n", sub.Name, sub.Summary)
	}
	fmt.Fprintf(w, "\nRun \"%s help %s <command>\" for its flags.\n", r.p.Name, c.Name)
}
