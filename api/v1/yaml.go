package v1

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Strict YAML decoding that reports every error with its line. yaml.v3's
// own strict mode (KnownFields) stops at the first unknown key and names
// neither the object nor the field, so the document is first walked as a
// yaml.Node tree alongside the Config type: each key is checked against
// the struct's yaml tags, each scalar decoded on its own, and the line of
// every field recorded for the errors validation (the appliance's
// control.Config.Validate) finds later. The walk removes what it reported
// (unknown and repeated keys; values that do not decode become null), so
// that decoding the rest fills every other field and validation can report
// on those too.

// Lines tells the line of each field of a decoded YAML config.
type Lines struct {
	at   map[string]int // by index path: services[0].backends[1].weight
	name map[string]int // by FieldError.Field; the first line of duplicates
}

// Of returns the line of field, named as in FieldError.Field, or of its
// closest enclosing object in the document; 0 when there is none.
func (ls *Lines) Of(field string) int { return lineOf(ls.name, field) }

// At is Of for a path with list items by index: services[1].name is the
// name of the second service even when two share a name.
func (ls *Lines) At(path string) int { return lineOf(ls.at, path) }

func lineOf(m map[string]int, p string) int {
	for ; p != ""; p = parentField(p) {
		if n, ok := m[p]; ok {
			return n
		}
	}
	return 0
}

// parentField drops the last key or list item of a field path:
// services[web].backends[10.0.0.1] of services[web].backends[10.0.0.1].ip,
// services[web].backends of that. Labels may hold dots (IPs), so a path
// that ends with an item drops the whole item.
func parentField(p string) string {
	if strings.HasSuffix(p, "]") {
		if i := strings.LastIndexByte(p, '['); i >= 0 {
			return p[:i]
		}
	}
	if i := strings.LastIndexAny(p, ".["); i >= 0 {
		return p[:i]
	}
	return ""
}

// Cover tells whether the field at (an index path, as FieldError.At) is,
// or is inside, a field of es: a value that did not decode is not
// validated again.
func (es FieldErrors) Cover(at string) bool {
	for _, e := range es {
		if at == e.At || strings.HasPrefix(at, e.At) && (at[len(e.At)] == '.' || at[len(e.At)] == '[') {
			return true
		}
	}
	return false
}

// DecodeYAML decodes a YAML config strictly, without validating it, and
// returns the line of each of its fields. Every key that is not a config
// field and every value of the wrong type is a FieldError with its line:
// the error is a FieldErrors with all of them.
func DecodeYAML(b []byte) (*Config, *Lines, error) {
	c, lines, errs := DecodeYAMLPartial(b)
	if len(errs) > 0 {
		return nil, lines, errs
	}
	return c, lines, nil
}

var yamlSyntaxRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// DecodeYAMLPartial decodes b as far as it can: the config is nil only
// when b is not YAML at all; otherwise it holds every value that decoded,
// and errs the ones that did not, so that a validator can report on the
// rest (skipping the fields errs Cover).
func DecodeYAMLPartial(b []byte) (*Config, *Lines, FieldErrors) {
	lines := &Lines{at: map[string]int{}, name: map[string]int{}}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		fe := &FieldError{Message: err.Error()}
		if m := yamlSyntaxRE.FindStringSubmatch(err.Error()); m != nil {
			fe.Line, _ = strconv.Atoi(m[1])
			fe.Message = m[2]
		}
		return nil, lines, FieldErrors{fe}
	}
	var c Config
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return &c, lines, nil // an empty file: an empty config
	}
	w := yamlWalker{lines: lines}
	w.walk(doc.Content[0], reflect.TypeFor[Config](), "")
	err := doc.Content[0].Decode(&c)
	var te *yaml.TypeError
	switch {
	case err == nil:
	case errors.As(err, &te):
		// The walk removed every value it refused; should yaml.v3 refuse
		// one more, report it in yaml.v3's own words.
		for _, msg := range te.Errors {
			fe := &FieldError{Message: msg}
			if l, m, ok := strings.Cut(msg, ": "); ok && strings.HasPrefix(l, "line ") {
				fe.Line, _ = strconv.Atoi(strings.TrimPrefix(l, "line "))
				fe.Message = m
			}
			w.errs = append(w.errs, fe)
		}
	default:
		w.errs = append(w.errs, &FieldError{Line: doc.Content[0].Line, Message: err.Error()})
	}
	for _, e := range w.errs {
		e.Field = fieldName(&c, e.At)
	}
	for at, line := range lines.at {
		name := fieldName(&c, at)
		if first, ok := lines.name[name]; !ok || line < first {
			lines.name[name] = line
		}
	}
	return &c, lines, w.errs
}

// yamlWalker walks a YAML node tree alongside the Go type it decodes into.
// Its paths name list items by index (services[0].port): names come from
// the decoded config afterwards (fieldName), as validation names them.
type yamlWalker struct {
	lines   *Lines
	errs    FieldErrors
	merging int // > 0 inside a merged mapping (<<: *anchor)
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

func (w *yamlWalker) fail(at string, line int, format string, a ...any) {
	w.errs = append(w.errs, &FieldError{Message: fmt.Sprintf(format, a...), Line: line, At: at})
}

// refuse reports value n at at and makes it null, so that decoding the
// document leaves the field zero instead of failing.
func (w *yamlWalker) refuse(n *yaml.Node, at string, format string, a ...any) {
	w.fail(at, n.Line, format, a...)
	*n = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Line: n.Line, Column: n.Column}
}

func (w *yamlWalker) mark(at string, line int) {
	if _, ok := w.lines.at[at]; ok && w.merging > 0 {
		return // the mapping's own key
	}
	w.lines.at[at] = line
}

// walk checks node n at path at against type t.
func (w *yamlWalker) walk(n *yaml.Node, t reflect.Type, at string) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // null leaves the zero value, as yaml.v3 does
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		w.leaf(n, t, at)
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		w.walk(n, t.Elem(), at)
	case reflect.Struct:
		w.mapping(n, t, at)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.refuse(n, at, "want a list, got %s", nodeKind(n))
			return
		}
		for i, it := range n.Content {
			ip := at + "[" + strconv.Itoa(i) + "]"
			w.mark(ip, it.Line)
			w.walk(it, t.Elem(), ip)
		}
	default:
		w.leaf(n, t, at)
	}
}

// mapping checks the keys of mapping n against the yaml tags of struct t
// and removes the unknown and repeated ones.
func (w *yamlWalker) mapping(n *yaml.Node, t reflect.Type, at string) {
	if n.Kind != yaml.MappingNode {
		w.refuse(n, at, "want a mapping, got %s", nodeKind(n))
		return
	}
	fields := yamlFields(t)
	seen := map[string]int{}
	var merges []*yaml.Node
	kept := n.Content[:0] // written behind the reads
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Tag == "!!merge" { // <<: *anchor merges a mapping (or a list of them)
			merges = append(merges, v)
			kept = append(kept, k, v)
			continue
		}
		kp := k.Value
		if at != "" {
			kp = at + "." + k.Value
		}
		if first, dup := seen[k.Value]; dup {
			w.fail(kp, k.Line, "duplicate key (first at line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		f, ok := fields[k.Value]
		if !ok {
			names := make([]string, 0, len(fields))
			for name := range fields {
				names = append(names, name)
			}
			sort.Strings(names)
			w.fail(kp, k.Line, "field %s not found; want one of %s", k.Value, strings.Join(names, ", "))
			continue
		}
		w.mark(kp, k.Line)
		w.walk(v, f.Type, kp)
		kept = append(kept, k, v)
	}
	n.Content = kept
	// Merged keys count where the mapping has no key of its own.
	w.merging++
	defer func() { w.merging-- }()
	for _, v := range merges {
		for v.Kind == yaml.AliasNode && v.Alias != nil {
			v = v.Alias
		}
		if v.Kind == yaml.SequenceNode {
			for _, m := range v.Content {
				w.walk(m, t, at)
			}
		} else {
			w.walk(v, t, at)
		}
	}
}

// leaf decodes scalar n into a new t on its own.
func (w *yamlWalker) leaf(n *yaml.Node, t reflect.Type, p string) {
	err := n.Decode(reflect.New(t).Interface())
	var te *yaml.TypeError
	switch {
	case err == nil:
	case n.Kind != yaml.ScalarNode:
		w.refuse(n, p, "want %s, got %s", typeKind(t), nodeKind(n))
	case errors.As(err, &te):
		w.refuse(n, p, "want %s, got %q", typeKind(t), n.Value)
	default: // an UnmarshalYAML's own words, e.g. invalid duration "1x"
		w.refuse(n, p, "%v", err)
	}
}

// yamlFields maps the yaml keys of struct t to its fields.
func yamlFields(t reflect.Type) map[string]reflect.StructField {
	m := map[string]reflect.StructField{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = f
	}
	return m
}

// fieldName turns a path of c with list items by index
// (services[0].backends[1].weight) into the name validation gives the field
// (services[web].backends[192.0.2.21].weight): items that are labeled by
// their label. What does not resolve in c stays as it is.
func fieldName(c *Config, at string) string {
	var b strings.Builder
	v := reflect.ValueOf(c).Elem()
	rest := at
	for rest != "" {
		for v.Kind() == reflect.Pointer && !v.IsNil() {
			v = v.Elem()
		}
		if rest[0] == '[' {
			end := strings.IndexByte(rest, ']')
			if end < 0 || v.Kind() != reflect.Slice {
				break
			}
			i, err := strconv.Atoi(rest[1:end])
			if err != nil || i < 0 || i >= v.Len() {
				break
			}
			v = v.Index(i)
			if l, ok := v.Interface().(labeled); ok && l.Label() != "" {
				b.WriteString("[" + l.Label() + "]")
			} else {
				b.WriteString(rest[:end+1])
			}
			rest = rest[end+1:]
			continue
		}
		sep, key := "", rest
		if rest[0] == '.' {
			sep, key = ".", rest[1:]
		}
		if end := strings.IndexAny(key, ".["); end >= 0 {
			key = key[:end]
		}
		f, ok := reflect.StructField{}, false
		if v.Kind() == reflect.Struct {
			f, ok = yamlFields(v.Type())[key]
		}
		if !ok {
			break
		}
		b.WriteString(sep + key)
		v = v.FieldByIndex(f.Index)
		rest = rest[len(sep)+len(key):]
	}
	return b.String() + rest
}

func nodeKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return fmt.Sprintf("%q", n.Value)
}

func typeKind(t reflect.Type) string {
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return "a value" // its UnmarshalYAML says more
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return fmt.Sprintf("an integer 0..%d", uint64(1)<<(t.Bits())-1)
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice:
		return "a list"
	case reflect.Struct, reflect.Map:
		return "a mapping"
	}
	return t.String()
}
