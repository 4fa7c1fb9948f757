package emit

import (
	"cmp"
	"slices"
	"strconv"

	"github.com/dave/jennifer/jen"

	"github.com/eventgen/eventgen/generator/internal/model"
)

// eventsFile declares the handshake, the constants, the Event interface and
// the event structs with their methods.
func eventsFile(f *jen.File, p *model.Package) {
	version := strconv.Itoa(RuntimeAPIVersion)
	f.Add(comment(
		"This package was generated for version "+version+" of the eventgen runtime's API. If",
		"this line fails to compile, the runtime is newer or older than the",
		"generator: regenerate the package with the eventgen command of the same",
		"module version as github.com/eventgen/eventgen/runtime/eventgen.",
	)).Const().Id("_").Op("=").Qual(runtimePath, "SupportPackageIsVersion"+version)
	f.Line()

	f.Add(comment(
		model.IdentSource+" is the producer name written into the metadata of every event",
		"this package publishes.",
	)).Const().Id(model.IdentSource).Op("=").Lit(p.Source)
	f.Line()

	f.Comment("// Broker topics.")
	var topics []jen.Code
	var documented []bool
	for _, t := range p.Topics {
		topics = append(topics, comment(t.Description.Lines()...).Id(t.Const).Op("=").Lit(t.Name))
		documented = append(documented, len(t.Description.Lines()) > 0)
	}
	f.Const().Defs(spaced(topics, documented)...)
	f.Line()

	f.Add(comment(
		model.IdentEvent+" is implemented by every event of this package and by no other type.",
		"Use it with "+model.IdentPublisher+"."+model.MethodBatch+".",
	)).Type().Id(model.IdentEvent).Interface(
		jen.Qual(runtimePath, "Event"),
		jen.Id("isEvent").Params(),
	)

	for _, e := range p.Events {
		f.Line()
		eventDecl(f, e)
	}
}

func eventDecl(f *jen.File, e *model.Event) {
	summary := e.GoName + " is the event " + strconv.Quote(e.Name) + ", version " + strconv.Itoa(e.Version) +
		", published to " + e.Topic.Const + "."
	var deprecated []string
	if e.Deprecated {
		deprecated = deprecation(e)
	}
	doc := comment(paragraphs([]string{summary}, e.Description.Lines(), deprecated)...)
	f.Add(doc).Type().Id(e.GoName).Struct(structFields(e.Fields)...)
	f.Line()

	// The methods of eventgen.Event that return constants.
	for _, m := range []struct {
		doc, name     string
		result, value jen.Code
	}{
		{"EventName returns " + strconv.Quote(e.Name) + ", the event's wire name.", "EventName", jen.String(), jen.Lit(e.Name)},
		{"EventVersion returns the event's schema version, " + strconv.Itoa(e.Version) + ".", "EventVersion", jen.Int(), jen.Lit(e.Version)},
		{"Topic returns " + e.Topic.Const + ", the topic the event is published to.", "Topic", jen.String(), jen.Id(e.Topic.Const)},
	} {
		f.Add(comment(m.doc)).Func().Params(jen.Id(e.GoName)).Id(m.name).Params().Add(m.result).Block(jen.Return(m.value))
		f.Line()
	}
	if e.Key != nil {
		f.Add(comment(
			"Key returns the "+e.Key.JSON+" field as a string: the ordering key. Every",
			"consumer group applies the events of one key in commit order.",
		)).Func().Params(jen.Id("e").Id(e.GoName)).Id("Key").Params().String().Block(
			jen.Return(keyString(jen.Id("e").Dot(e.Key.GoName), e.Key.Type)),
		)
		f.Line()
	}
	validateMethods(f, e.GoName, "e", e.Fields, e.Validates, false)
	f.Line()
	f.Func().Params(jen.Id(e.GoName)).Id("isEvent").Params().Block()
}

func deprecation(e *model.Event) []string {
	lines := e.DeprecatedText.Lines()
	if len(lines) == 0 {
		return []string{"Deprecated: do not publish new " + e.GoName + " events."}
	}
	lines = slices.Clone(lines)
	lines[0] = "Deprecated: " + lines[0]
	return lines
}

// structFields declares fields with their doc comments and json tags.
func structFields(fields []*model.Field) []jen.Code {
	var out []jen.Code
	var documented []bool
	for _, fd := range fields {
		tag := fd.JSON
		if fd.Optional {
			tag += ",omitempty"
		}
		typ := goType(fd.Type)
		if fd.Pointer() {
			typ = jen.Op("*").Add(typ)
		}
		out = append(out, comment(fd.Description.Lines()...).Id(fd.GoName).Add(typ).Tag(map[string]string{"json": tag}))
		documented = append(documented, len(fd.Description.Lines()) > 0)
	}
	return spaced(out, documented)
}

// spaced returns the declarations of a struct or a const block with a
// blank line between each documented one and its neighbours, so that a
// comment is not read as covering the declarations after it. Undocumented
// declarations stay together.
func spaced(decls []jen.Code, documented []bool) []jen.Code {
	var out []jen.Code
	for i, d := range decls {
		if i > 0 && (documented[i] || documented[i-1]) {
			out = append(out, jen.Line())
		}
		out = append(out, d)
	}
	return out
}

// goType returns the Go type of a field type.
func goType(t *model.TypeRef) *jen.Statement {
	switch t.Kind {
	case model.String:
		return jen.String()
	case model.Bool:
		return jen.Bool()
	case model.Int:
		return jen.Int()
	case model.Int32:
		return jen.Int32()
	case model.Int64:
		return jen.Int64()
	case model.Uint32:
		return jen.Uint32()
	case model.Uint64:
		return jen.Uint64()
	case model.Float32:
		return jen.Float32()
	case model.Float64:
		return jen.Float64()
	case model.Bytes:
		return jen.Index().Byte()
	case model.Time:
		return jen.Qual("time", "Time")
	case model.Duration:
		return jen.Qual("time", "Duration")
	case model.UUID:
		return jen.Qual(uuidPath, "UUID")
	case model.JSON:
		return jen.Qual("encoding/json", "RawMessage")
	case model.Named:
		return jen.Id(t.Named.GoName)
	case model.Slice:
		return jen.Index().Add(goType(t.Elem))
	case model.Map:
		return jen.Map(jen.String()).Add(goType(t.Elem))
	}
	panic("emit: unknown kind " + strconv.Itoa(int(t.Kind)))
}

// keyString converts a key field's value to its string form.
func keyString(v *jen.Statement, t *model.TypeRef) jen.Code {
	switch t.Kind {
	case model.String:
		return v
	case model.Int:
		return jen.Qual("strconv", "Itoa").Call(v)
	case model.Int32:
		return jen.Qual("strconv", "FormatInt").Call(jen.Int64().Call(v), jen.Lit(10))
	case model.Int64:
		return jen.Qual("strconv", "FormatInt").Call(v, jen.Lit(10))
	case model.Uint32:
		return jen.Qual("strconv", "FormatUint").Call(jen.Uint64().Call(v), jen.Lit(10))
	case model.Uint64:
		return jen.Qual("strconv", "FormatUint").Call(v, jen.Lit(10))
	case model.UUID:
		return v.Dot("String").Call()
	case model.Named:
		return jen.String().Call(v)
	}
	panic("emit: kind " + strconv.Itoa(int(t.Kind)) + " cannot be a key")
}

// typesFile declares the shared structs and enums.
func typesFile(f *jen.File, p *model.Package) {
	for i, t := range p.Types {
		if i > 0 {
			f.Line()
		}
		if t.IsEnum() {
			enumDecl(f, t)
		} else {
			structDecl(f, t)
		}
	}
}

// structDecl declares a shared struct. Its doc comment is the spec's
// description, or none: the declaration says all there is to say.
func structDecl(f *jen.File, t *model.Type) {
	f.Add(comment(t.Description.Lines()...)).Type().Id(t.GoName).Struct(structFields(t.Fields)...)
	f.Line()
	validateMethods(f, t.GoName, "t", t.Fields, t.Validates, true)
}

// enumDecl declares an enum, its values, Valid and UnmarshalJSON. Its doc
// comment says what the declaration does not show: decoding rejects
// unknown values.
func enumDecl(f *jen.File, t *model.Type) {
	f.Add(comment(paragraphs(
		[]string{t.GoName + " holds one of the values below. Decoding JSON rejects any other."},
		t.Description.Lines(),
	)...)).Type().Id(t.GoName).String()
	f.Line()
	f.Add(comment("Values of " + t.GoName + ".")).Const().DefsFunc(func(g *jen.Group) {
		for _, v := range t.Enum {
			g.Id(v.Const).Id(t.GoName).Op("=").Lit(v.Value)
		}
	})
	f.Line()
	doc := comment("Valid reports whether v is one of the values of " + t.GoName + ".")
	f.Add(doc).Func().Params(jen.Id("v").Id(t.GoName)).Id("Valid").Params().Bool().Block(
		jen.Switch(jen.Id("v")).Block(
			jen.CaseFunc(func(g *jen.Group) {
				for _, v := range t.Enum {
					g.Id(v.Const)
				}
			}).Block(jen.Return(jen.True())),
		),
		jen.Return(jen.False()),
	)
	f.Line()
	doc = comment("UnmarshalJSON decodes a JSON string and rejects values that are not one of", "the values of "+t.GoName+".")
	f.Add(doc).Func().Params(jen.Id("v").Op("*").Id(t.GoName)).Id("UnmarshalJSON").Params(jen.Id("data").Index().Byte()).Error().Block(
		jen.Var().Id("s").String(),
		jen.If(jen.Err().Op(":=").Qual("encoding/json", "Unmarshal").Call(jen.Id("data"), jen.Op("&").Id("s")), jen.Err().Op("!=").Nil()).Block(
			jen.Return(errorf("decode "+escapeVerbs(t.Name)+": %w", jen.Err())),
		),
		jen.If(jen.Op("!").Id(t.GoName).Call(jen.Id("s")).Dot("Valid").Call()).Block(
			jen.Return(errorf("unknown "+escapeVerbs(t.Name)+" value %q", jen.Id("s"))),
		),
		jen.Op("*").Id("v").Op("=").Id(t.GoName).Call(jen.Id("s")),
		jen.Return(jen.Nil()),
	)
}

// publisherFile declares Publisher and its methods.
func publisherFile(f *jen.File, p *model.Package) {
	ctxDB := func() []jen.Code {
		return []jen.Code{jen.Id("ctx").Qual("context", "Context"), jen.Id("db").Qual(bunPath, "IDB")}
	}
	opts := func() jen.Code { return jen.Id("opts").Op("...").Qual(runtimePath, "PublishOption") }
	publish := func(events jen.Code) jen.Code {
		return jen.Return(jen.Id("p").Dot("outbox").Dot("Publish").Call(
			jen.Id("ctx"), jen.Id("db"), jen.Id(model.IdentSource), events, jen.Id("opts").Op("...")))
	}
	recv := func() jen.Code { return jen.Id("p").Op("*").Id(model.IdentPublisher) }

	f.Add(comment(
		model.IdentPublisher+" writes this package's events to an eventgen outbox. Every method",
		"validates its events and writes them in db: pass the business",
		"transaction, and the events are published if and only if it commits.",
		"Options such as eventgen.WithDelay apply to every event of the call.",
	)).Type().Id(model.IdentPublisher).Struct(jen.Id("outbox").Op("*").Qual(runtimePath, "Outbox"))
	f.Line()
	doc := comment(model.IdentNewPublisher + " returns a " + model.IdentPublisher + " that writes to o, which must not be nil.")
	f.Add(doc).Func().Id(model.IdentNewPublisher).Params(jen.Id("o").Op("*").Qual(runtimePath, "Outbox")).Op("*").Id(model.IdentPublisher).Block(
		jen.Return(jen.Op("&").Id(model.IdentPublisher).Values(jen.Dict{jen.Id("outbox"): jen.Id("o")})),
	)
	for _, e := range p.Events {
		f.Line()
		doc := []string{e.PublishMethod + " validates e and writes it to the outbox in db."}
		if e.Deprecated {
			doc = paragraphs(doc, deprecation(e))
		}
		params := append(ctxDB(), jen.Id("e").Id(e.GoName), opts())
		f.Add(comment(doc...)).Func().Params(recv()).Id(e.PublishMethod).Params(params...).Error().Block(
			publish(jen.Index().Qual(runtimePath, "Event").Values(jen.Id("e"))),
		)
	}
	f.Line()
	f.Add(comment(
		model.MethodBatch+" validates events and writes them all to the outbox in db in",
		"one statement. If any event is invalid, none is written.",
	)).Func().Params(recv()).Id(model.MethodBatch).Params(append(ctxDB(), jen.Id("events").Index().Id(model.IdentEvent), opts())...).Error().Block(
		jen.Id("batch").Op(":=").Make(jen.Index().Qual(runtimePath, "Event"), jen.Len(jen.Id("events"))),
		jen.For(jen.List(jen.Id("i"), jen.Id("e")).Op(":=").Range().Id("events")).Block(
			jen.Id("batch").Index(jen.Id("i")).Op("=").Id("e"),
		),
		publish(jen.Id("batch")),
	)
}

// handlersFile declares the handler interfaces of every event and consumer.
func handlersFile(f *jen.File, p *model.Package) {
	handlerParams := func(e *model.Event) []jen.Code {
		return []jen.Code{jen.Id("ctx").Qual("context", "Context"), jen.Id("e").Id(e.GoName), jen.Id("m").Qual(runtimePath, "Metadata")}
	}
	pkg := p.Name
	nilHandler := func(fn string) jen.Code {
		return jen.If(jen.Id("h").Op("==").Nil()).Block(
			jen.Return(jen.Qual("errors", "New").Call(jen.Lit(pkg + ": " + fn + ": nil handler"))),
		)
	}
	for i, e := range p.Events {
		if i > 0 {
			f.Line()
		}
		f.Add(comment(e.Handler + " handles " + e.GoName + " events. Register it with " + e.RegisterHandler + ".")).Type().Id(e.Handler).Interface(
			comment(
				e.HandleMethod+" handles one event. It runs inside the consumer's inbox",
				"transaction (see eventgen.Tx), so its writes through that transaction",
				"are applied once. An error makes the consumer retry the event.",
			).Id(e.HandleMethod).Params(handlerParams(e)...).Error(),
		)
		f.Line()
		doc := comment(e.RegisterHandler + " registers h as c's handler of " + e.GoName + " events.")
		params := []jen.Code{jen.Id("c").Op("*").Qual(runtimePath, "Consumer"), jen.Id("h").Id(e.Handler)}
		f.Add(doc).Func().Id(e.RegisterHandler).Params(params...).Error().Block(
			nilHandler(e.RegisterHandler),
			jen.Return(jen.Qual(runtimePath, "Handle").Call(jen.Id("c"), jen.Id("h").Dot(e.HandleMethod))),
		)
	}
	if len(p.Consumers) == 0 {
		return
	}
	f.Line()
	f.Comment("// Consumer groups.")
	var groups []jen.Code
	for _, c := range p.Consumers {
		groups = append(groups, jen.Id(c.GroupConst).Op("=").Lit(c.Name))
	}
	f.Const().Defs(groups...)
	for _, c := range p.Consumers {
		f.Line()
		f.Add(comment(paragraphs(
			[]string{c.Interface + " handles every event that the consumer " + strconv.Quote(c.Name) + " handles."},
			c.Description.Lines(),
		)...)).Type().Id(c.Interface).InterfaceFunc(func(g *jen.Group) {
			for _, e := range c.Handles {
				g.Id(e.Handler)
			}
		})
		f.Line()
		doc := comment(
			c.Register+" registers h as c's handler of every event that the consumer",
			strconv.Quote(c.Name)+" handles. It refuses a Consumer of a group other than "+c.GroupConst+".",
		)
		params := []jen.Code{jen.Id("c").Op("*").Qual(runtimePath, "Consumer"), jen.Id("h").Id(c.Interface)}
		f.Add(doc).Func().Id(c.Register).Params(params...).Error().BlockFunc(func(g *jen.Group) {
			g.Add(nilHandler(c.Register))
			g.If(jen.Id("c").Op("==").Nil()).Block(
				jen.Return(jen.Qual("errors", "New").Call(jen.Lit(pkg + ": " + c.Register + ": nil consumer"))),
			)
			g.If(jen.Id("g").Op(":=").Id("c").Dot("Group").Call(), jen.Id("g").Op("!=").Id(c.GroupConst)).Block(
				jen.Return(jen.Qual("fmt", "Errorf").Call(jen.Lit(pkg+": "+c.Register+": consumer is for group %q, not %q"), jen.Id("g"), jen.Id(c.GroupConst))),
			)
			for _, e := range c.Handles {
				g.If(jen.Err().Op(":=").Id(e.RegisterHandler).Call(jen.Id("c"), jen.Id("h")), jen.Err().Op("!=").Nil()).Block(
					jen.Return(jen.Err()),
				)
			}
			g.Return(jen.Nil())
		})
	}
}

// catalogFile declares Catalog.
func catalogFile(f *jen.File, p *model.Package) {
	events := slices.Clone(p.Events)
	slices.SortFunc(events, func(a, b *model.Event) int { return cmp.Compare(a.Name, b.Name) })
	var infos []jen.Code
	for _, e := range events {
		infos = append(infos, composite(eventInfo(e)...))
	}
	f.Add(comment(
		model.IdentCatalog+" describes every event of this package, sorted by wire name. It",
		"returns a new slice on every call.",
	)).Func().Id(model.IdentCatalog).Params().Index().Qual(runtimePath, "EventInfo").Block(
		jen.Return(jen.Index().Qual(runtimePath, "EventInfo").Add(composite(infos...))),
	)
}

// eventInfo returns the fields of an eventgen.EventInfo literal, in the
// struct's order, leaving out zero values.
func eventInfo(e *model.Event) []jen.Code {
	kv := []jen.Code{
		field("Name", jen.Lit(e.Name)),
		field("GoName", jen.Lit(e.GoName)),
		field("Version", jen.Lit(e.Version)),
		field("Topic", jen.Id(e.Topic.Const)),
	}
	if e.Key != nil {
		kv = append(kv, field("Key", jen.Lit(e.Key.JSON)))
	}
	if e.Description != "" {
		kv = append(kv, field("Description", jen.Lit(string(e.Description))))
	}
	if len(e.Fields) > 0 {
		var fields []jen.Code
		for _, fd := range e.Fields {
			fi := []jen.Code{field("Name", jen.Lit(fd.JSON)), field("Type", jen.Lit(fd.Type.Spec()))}
			if fd.Optional {
				fi = append(fi, field("Optional", jen.True()))
			}
			if fd.Description != "" {
				fi = append(fi, field("Description", jen.Lit(string(fd.Description))))
			}
			fields = append(fields, composite(fi...))
		}
		kv = append(kv, field("Fields", jen.Index().Qual(runtimePath, "FieldInfo").Add(composite(fields...))))
	}
	return kv
}

// composite renders the braces of a composite literal with one element per
// line, in the order given (jen.Dict would sort them).
func composite(elems ...jen.Code) *jen.Statement {
	return jen.Custom(jen.Options{Open: "{", Close: "}", Separator: ",", Multi: true}, elems...)
}

// field renders one key: value element of a composite literal.
func field(name string, v jen.Code) jen.Code {
	return jen.Id(name).Op(":").Add(v)
}
