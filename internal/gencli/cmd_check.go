package gencli

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/eventgen/eventgen/generator"
	"github.com/eventgen/eventgen/internal/cli"
)

func checkCommand() *cli.Command {
	return &cli.Command{
		Name:     "check",
		Synopsis: "[-f events.yaml] [-o DIR] [--against OLD [-v] [-json] [--allow RULE:SUBJECT]...]",
		Summary:  "fail with a diff when DIR is not what generate would write, or on breaking changes",
		Help: `Check generates the package in memory and compares it with DIR. When they
differ it prints a unified diff to standard output and exits with status 1.
Run it in CI to catch a spec changed without regenerating.

With --against OLD, check compares the spec with an older one and exits with
status 1 if a change breaks consumers or producers generated from either
(docs/compatibility.md lists the rules). Each breaking change is printed as
file:line:column in the new spec, with where it was in the old one. A
breaking change to an event whose version was bumped is a warning. OLD is a
file, or a git revision and path such as main:events.yaml, read with
git show in the spec's directory; a file that exists wins. Then -o is
optional: without it only compatibility is checked.

Each breaking change ends with its id in brackets, RULE:SUBJECT. To accept
one deliberately, pass --allow with that id (repeat it for several): the
change is then a warning, and any other breaking change still fails.

With -json, the changes are written to standard output as one JSON
object (docs/compatibility.md describes it), and a stale DIR's diff goes
to standard error.

	eventgen check -f events.yaml --against origin/main:events.yaml
	eventgen check --against main:events.yaml --allow FIELD_REMOVED:OrderPlaced.note`,
		Setup: func(fs *flag.FlagSet) func(*cli.Env) int {
			var f specFlags
			f.define(fs, true)
			against := fs.String("against", "", "the old spec: a `file` or git REV:path")
			verbose := fs.Bool("v", false, "with --against, list compatible changes too")
			asJSON := fs.Bool("json", false, "with --against, write the changes to standard output as JSON")
			var allow []string
			fs.Func("allow", "with --against, accept the breaking change `RULE:SUBJECT` (repeatable)", func(id string) error {
				if err := generator.ParseChangeID(id); err != nil {
					return err
				}
				allow = append(allow, id)
				return nil
			})
			return func(e *cli.Env) int {
				if *against == "" && (*asJSON || len(allow) > 0) {
					fmt.Fprintf(e.Stderr, "%s check: -json and --allow need --against\n", e.Program)
					return cli.ExitUsage
				}
				withDir := f.dir != "" || *against == ""
				s, ok := load(e, &f)
				if !ok {
					return cli.ExitFailure
				}
				code := cli.ExitOK
				if *against != "" {
					code = checkAgainst(e, s, f.file, *against, againstOptions{verbose: *verbose, json: *asJSON, allow: allow})
				}
				if withDir {
					diffTo := e.Stdout
					if *asJSON {
						diffTo = e.Stderr // standard output holds the JSON only
					}
					if c := checkOutput(e, &f, s, diffTo); c != cli.ExitOK {
						code = c
					}
				}
				return code
			}
		},
	}
}

// checkOutput compares the files generated from s with f.dir, and writes
// the diff to diffTo.
func checkOutput(e *cli.Env, f *specFlags, s *generator.Spec, diffTo io.Writer) int {
	files, err := generator.Generate(s)
	if err != nil {
		printError(e, err)
		return cli.ExitFailure
	}
	diff, err := generator.Check(f.dir, files)
	if err != nil {
		printError(e, err)
		return cli.ExitFailure
	}
	if len(diff) > 0 {
		diffTo.Write(diff)
		fmt.Fprintf(e.Stderr, "eventgen: %s is not up to date with %s; run eventgen generate\n", f.dir, f.file)
		return cli.ExitFailure
	}
	return cli.ExitOK
}

type againstOptions struct {
	verbose bool     // print compatible changes too
	json    bool     // write the changes as JSON to standard output
	allow   []string // ids of the breaking changes to accept
}

// checkAgainst prints the changes from the old spec to s, breaking ones and
// warnings to standard error and compatible ones too when verbose, or all
// of them as JSON to standard output.
func checkAgainst(e *cli.Env, s *generator.Spec, file, against string, opts againstOptions) int {
	old, err := loadOld(file, against)
	if err != nil {
		printError(e, err)
		if errors.As(err, new(generator.ErrorList)) {
			fmt.Fprintf(e.Stderr, "eventgen: the old spec %s is not valid\n", against)
		}
		return cli.ExitFailure
	}
	changes, unused := generator.Allow(generator.Compare(old, s), opts.allow)
	breaking := 0
	for _, c := range changes {
		if c.Level == generator.Breaking {
			breaking++
		}
	}
	for _, id := range unused {
		fmt.Fprintf(e.Stderr, "%s: warning: --allow %s matches no breaking change against %s; remove it\n", file, id, against)
	}
	if opts.json {
		if err := writeChangesJSON(e.Stdout, file, against, breaking, changes, unused); err != nil {
			printError(e, err)
			return cli.ExitFailure
		}
	} else {
		for _, c := range changes {
			if c.Level == generator.Compatible && !opts.verbose {
				continue
			}
			fmt.Fprintln(e.Stderr, c.String())
		}
	}
	if breaking > 0 {
		fmt.Fprintf(e.Stderr, "eventgen: %s has %d breaking %s against %s\n", file, breaking, plural(breaking, "change", "changes"), against)
		return cli.ExitFailure
	}
	return cli.ExitOK
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// loadOld loads the old spec: the file against when it exists, or else a
// git REV:path read with git show in the directory of the new spec, named
// against in messages.
func loadOld(specFile, against string) (*generator.Spec, error) {
	if _, err := os.Stat(against); err == nil || !strings.Contains(against, ":") {
		s, err := generator.Load(against)
		if err != nil && !errors.As(err, new(generator.ErrorList)) {
			return nil, fmt.Errorf("old spec: %w", err)
		}
		return s, err
	}
	rev, path, _ := strings.Cut(against, ":")
	switch {
	case rev == "":
		return nil, fmt.Errorf("read old spec %s: no such file, and no git revision before the colon", against)
	case strings.HasPrefix(rev, "-"):
		return nil, fmt.Errorf("read old spec %s: git revision %q must not start with -", against, rev)
	case path == "":
		return nil, fmt.Errorf("read old spec %s: no path after the git revision %q", against, rev)
	}
	cmd := exec.Command("git", "show", rev+":"+path)
	cmd.Dir = filepath.Dir(specFile)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return nil, fmt.Errorf("read old spec: git show revision %q path %q: %s", rev, path, msg)
	}
	return generator.Parse(against, out)
}
