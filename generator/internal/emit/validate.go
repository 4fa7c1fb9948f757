package emit

import (
	"strconv"
	"strings"

	"github.com/dave/jennifer/jen"

	"github.com/eventgen/eventgen/generator/internal/model"
)

// validateMethods declares Validate for an event or a shared struct. Shared
// structs also get validate(p), which returns their problems with field
// paths prefixed by p, for the structs that contain them. Problems are
// reported with the field's wire path, like lines[2].sku, and joined with
// errors.Join, in field order (map entries in key order).
func validateMethods(f *jen.File, goName, recv string, fields []*model.Field, validates, shared bool) {
	doc := comment("Validate reports missing required fields and unknown enum values.")
	if !validates {
		f.Add(doc).Func().Params(jen.Id(goName)).Id("Validate").Params().Error().Block(jen.Return(jen.Nil()))
		return
	}
	if !shared {
		f.Add(doc).Func().Params(jen.Id(recv).Id(goName)).Id("Validate").Params().Error().BlockFunc(func(g *jen.Group) {
			g.Var().Id("errs").Index().Error()
			checkFields(g, recv, fields, nil)
			g.Return(jen.Qual("errors", "Join").Call(jen.Id("errs").Op("...")))
		})
		return
	}
	f.Add(doc).Func().Params(jen.Id(recv).Id(goName)).Id("Validate").Params().Error().Block(
		jen.Return(jen.Qual("errors", "Join").Call(jen.Id(recv).Dot("validate").Call(jen.Lit("")).Op("..."))),
	)
	f.Line()
	doc = comment("validate returns the problems that Validate reports, with paths prefixed by p.")
	params := []jen.Code{jen.Id("p").String()}
	f.Add(doc).Func().Params(jen.Id(recv).Id(goName)).Id("validate").Params(params...).Index().Error().BlockFunc(func(g *jen.Group) {
		g.Var().Id("errs").Index().Error()
		checkFields(g, recv, fields, path{}.arg("%s", jen.Id("p")))
		g.Return(jen.Id("errs"))
	})
}

func checkFields(g *jen.Group, recv string, fields []*model.Field, base path) {
	for _, fd := range fields {
		v := jen.Id(recv).Dot(fd.GoName)
		p := base.lit(fd.JSON)
		switch {
		case fd.MustBeSet():
			g.If(isZero(v, fd.Type.Kind)).Block(appendErr(jen.Qual("errors", "New").Call(p.lit(" is required").expr())))
		case fd.Pointer() && fd.Type.Validates():
			// Only named types validate, and their methods work through
			// the pointer.
			if fd.Type.Named.IsEnum() {
				g.If(v.Clone().Op("!=").Nil().Op("&&").Op("!").Add(v.Clone()).Dot("Valid").Call()).Block(appendErr(
					p.errorf(": unknown value %q", jen.Op("*").Add(v.Clone())),
				))
			} else {
				g.If(v.Clone().Op("!=").Nil()).Block(
					jen.Id("errs").Op("=").Append(jen.Id("errs"), v.Clone().Dot("validate").Call(p.lit(".").expr()).Op("...")),
				)
			}
		case fd.Type.Validates():
			checkValue(g, v, fd.Type, p, 0)
		}
	}
}

// checkValue validates v, of type t, at path p: enum values must be known,
// structs validate themselves, and lists and maps check their elements.
func checkValue(g *jen.Group, v *jen.Statement, t *model.TypeRef, p path, depth int) {
	suffix := ""
	if depth > 0 {
		suffix = strconv.Itoa(depth)
	}
	switch t.Kind {
	case model.Named:
		if t.Named.IsEnum() {
			g.If(jen.Op("!").Add(v.Clone()).Dot("Valid").Call()).Block(appendErr(
				p.errorf(": unknown value %q", v.Clone()),
			))
			return
		}
		g.Id("errs").Op("=").Append(jen.Id("errs"), jen.Add(v.Clone()).Dot("validate").Call(p.lit(".").expr()).Op("..."))
	case model.Slice:
		i, x := jen.Id("i"+suffix), jen.Id("x"+suffix)
		g.For(jen.List(i.Clone(), x.Clone()).Op(":=").Range().Add(v.Clone())).BlockFunc(func(g *jen.Group) {
			elem := p.lit("[").arg("%d", i.Clone()).lit("]")
			checkValue(g, x.Clone(), t.Elem, elem, depth+1)
		})
	case model.Map:
		k := jen.Id("k" + suffix)
		keys := jen.Qual("slices", "Sorted").Call(jen.Qual("maps", "Keys").Call(v.Clone()))
		g.For(jen.List(jen.Id("_"), k.Clone()).Op(":=").Range().Add(keys)).BlockFunc(func(g *jen.Group) {
			elem := p.lit("[").arg("%q", k.Clone()).lit("]")
			checkValue(g, v.Clone().Index(k.Clone()), t.Elem, elem, depth+1)
		})
	}
}

// isZero tests a required field for its zero value.
func isZero(v *jen.Statement, k model.Kind) jen.Code {
	switch k {
	case model.String:
		return v.Clone().Op("==").Lit("")
	case model.UUID:
		return v.Clone().Op("==").Qual(uuidPath, "Nil")
	case model.Time:
		return v.Clone().Dot("IsZero").Call()
	case model.JSON:
		return jen.Len(v.Clone()).Op("==").Lit(0).Op("||").String().Call(v.Clone()).Op("==").Lit("null")
	}
	panic("emit: kind " + strconv.Itoa(int(k)) + " has no required check")
}

func appendErr(err jen.Code) jen.Code {
	return jen.Id("errs").Op("=").Append(jen.Id("errs"), err)
}

// path is a field path built at run time, such as p + "lines[" +
// strconv.Itoa(i) + "].sku". Adjacent literal parts are merged, so that the
// generated code reads naturally.
type path []pathPart

type pathPart struct {
	lit string
	// arg is a value known only at run time (nil for a literal part), and
	// verb how it is formatted: "%s" for a string, "%d" for an int, "%q"
	// for a string to quote.
	arg  jen.Code
	verb string
}

func (p path) lit(s string) path {
	if n := len(p); n > 0 && p[n-1].arg == nil {
		out := append(path(nil), p...)
		out[n-1].lit += s
		return out
	}
	return append(append(path(nil), p...), pathPart{lit: s})
}

func (p path) arg(verb string, c jen.Code) path {
	return append(append(path(nil), p...), pathPart{arg: c, verb: verb})
}

// expr returns the string expression that computes the path.
func (p path) expr() jen.Code {
	if len(p) == 0 {
		return jen.Lit("")
	}
	s := jen.Null()
	for i, part := range p {
		if i > 0 {
			s.Op("+")
		}
		switch part.verb {
		case "":
			s.Lit(part.lit)
		case "%d":
			s.Qual("strconv", "Itoa").Call(part.arg)
		case "%q":
			s.Qual("strconv", "Quote").Call(part.arg)
		default:
			s.Add(part.arg)
		}
	}
	return s
}

// errorf returns a fmt.Errorf call whose format is the path followed by
// format, with the path's literal parts written into the format and its
// run-time parts passed as arguments before args.
func (p path) errorf(format string, args ...jen.Code) jen.Code {
	var lits strings.Builder
	var pathArgs []jen.Code
	for _, part := range p {
		if part.arg == nil {
			lits.WriteString(escapeVerbs(part.lit))
		} else {
			lits.WriteString(part.verb)
			pathArgs = append(pathArgs, part.arg)
		}
	}
	return errorf(lits.String()+format, append(pathArgs, args...)...)
}

// errorf returns a fmt.Errorf call with the given format. Text known when
// generating is written into the format, never passed to a verb; text from
// the spec must go through escapeVerbs first.
func errorf(format string, args ...jen.Code) jen.Code {
	return jen.Qual("fmt", "Errorf").Call(append([]jen.Code{jen.Op(strconv.Quote(format))}, args...)...)
}

// escapeVerbs escapes s for a format string, so that fmt prints it as it is.
func escapeVerbs(s string) string {
	return strings.ReplaceAll(s, "%", "%%")
}
