package gencli

import (
	"flag"
	"fmt"

	"github.com/eventgen/eventgen/generator"
	"github.com/eventgen/eventgen/internal/cli"
)

func exportCommand() *cli.Command {
	return &cli.Command{
		Name:    "export",
		Summary: "describe the spec as AsyncAPI 3.0 or JSON Schema, for other languages and tools",
		Help: `Export writes the spec in formats that tools and other languages read
(docs/export.md). The output depends only on the spec and the flags.`,
		Subcommands: []*cli.Command{exportAsyncAPICommand(), exportJSONSchemaCommand()},
	}
}

func exportAsyncAPICommand() *cli.Command {
	return &cli.Command{
		Name:     "asyncapi",
		Synopsis: "[-f events.yaml] [-o FILE] [-json] [-api-version V]",
		Summary:  "write the AsyncAPI 3.0.0 document of the spec",
		Help: `Asyncapi writes the AsyncAPI 3.0.0 document of the spec, in YAML or with
-json in JSON, to standard output or to FILE: a channel per topic, a
message per event with its CloudEvents headers and its payload's JSON
Schema, a send operation per topic for the producer and a receive
operation per consumer group and topic. FILE is written atomically, and
only over a document that eventgen exported.

	eventgen export asyncapi -f events.yaml -o asyncapi.yaml`,
		Setup: func(fs *flag.FlagSet) func(*cli.Env) int {
			var f specFlags
			f.define(fs, false)
			out := fs.String("o", "", "write the document to `FILE` instead of standard output")
			asJSON := fs.Bool("json", false, "write JSON instead of YAML")
			version := fs.String("api-version", "0.0.0", "the document's info.version, the `version` of your API")
			return func(e *cli.Env) int {
				s, ok := load(e, &f)
				if !ok {
					return cli.ExitFailure
				}
				doc, err := generator.AsyncAPI(s, generator.AsyncAPIOptions{JSON: *asJSON, Version: *version})
				if err == nil {
					if *out == "" {
						_, err = e.Stdout.Write(doc)
					} else {
						err = generator.WriteAsyncAPI(*out, doc)
					}
				}
				if err != nil {
					printError(e, err)
					return cli.ExitFailure
				}
				return cli.ExitOK
			}
		},
	}
}

func exportJSONSchemaCommand() *cli.Command {
	return &cli.Command{
		Name:     "jsonschema",
		Synopsis: "[-f events.yaml] -o DIR",
		Summary:  "write a JSON Schema (2020-12) of every event's payload",
		Help: `Jsonschema writes a JSON Schema (draft 2020-12) of every event's payload
into DIR, one file per event named after its wire name, such as
OrderPlaced.schema.json. Each file stands alone: the shared types the
event uses are in its $defs. A schema accepts what the generated Go
consumer accepts. Schema files of events that the spec no longer has are
removed; other files in DIR are never touched.

	eventgen export jsonschema -f events.yaml -o schemas`,
		Setup: func(fs *flag.FlagSet) func(*cli.Env) int {
			var f specFlags
			f.define(fs, false)
			out := fs.String("o", "", "the output `directory` (required)")
			return func(e *cli.Env) int {
				if *out == "" {
					fmt.Fprintf(e.Stderr, "%s export jsonschema: -o DIR is required\n", e.Program)
					return cli.ExitUsage
				}
				s, ok := load(e, &f)
				if !ok {
					return cli.ExitFailure
				}
				files, err := generator.JSONSchemas(s)
				if err == nil {
					err = generator.WriteJSONSchemas(*out, files)
				}
				if err != nil {
					printError(e, err)
					return cli.ExitFailure
				}
				return cli.ExitOK
			}
		},
	}
}
