package control

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
// every field recorded for the errors Validate finds later. The walk
// removes what it reported (unknown and repeated keys; values that do not
// decode become null), so that decoding the rest fills every other field
// and Validate can report on those too.

// Lines tells the line of each field of a decoded YAML config.
type Lines struct {
	at   map[string]int // by index path: services[0].backends[1].weight
	name map[string]int // by FieldError.Field; the first of duplicates
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

// cover tells whether the field at (an index path) is, or is inside, a
// field of es: a value that did not decode is not validated again.
func (es FieldErrors) cover(at string) bool {
	for _, e := range es {
		if at == e.at || strings.HasPrefix(at, e.at) && (at[len(e.at)] == '.' || at[len(e.at)] == '[') {
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
	c, lines, errs := decodeYAML(b)
	if len(errs) > 0 {
		return nil, lines, errs
	}
	return c, lines, nil
}

var yamlSyntaxRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// decodeYAML decodes b as far as it can: the config is nil only when b is
// not YAML at all; otherwise it holds every value that decoded, and errs
// the ones that did not.
func decodeYAML(b []byte) (*Config, *Lines, FieldErrors) {
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
	w.walk(doc.Content[0], reflect.TypeFor[Config](), fieldPath{})
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
	return &c, lines, w.errs
}

// yamlWalker walks a YAML node tree alongside the Go type it decodes into.
type yamlWalker struct {
	lines   *Lines
	errs    FieldErrors
	merging int // > 0 inside a merged mapping (<<: *anchor)
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

func (w *yamlWalker) fail(p fieldPath, line int, format string, a ...any) {
	w.errs = append(w.errs, &FieldError{Field: p.name, Message: fmt.Sprintf(format, a...), Line: line, at: p.at})
}

// refuse reports value n at p and makes it null, so that decoding the
// document leaves the field zero instead of failing.
func (w *yamlWalker) refuse(n *yaml.Node, p fieldPath, format string, a ...any) {
	w.fail(p, n.Line, format, a...)
	*n = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Line: n.Line, Column: n.Column}
}

func (w *yamlWalker) mark(p fieldPath, line int) {
	if _, ok := w.lines.at[p.at]; ok && w.merging > 0 {
		return // the mapping's own key
	}
	w.lines.at[p.at] = line
	if _, ok := w.lines.name[p.name]; !ok {
		w.lines.name[p.name] = line
	}
}

// walk checks node n at p against type t.
func (w *yamlWalker) walk(n *yaml.Node, t reflect.Type, p fieldPath) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // null leaves the zero value, as yaml.v3 does
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		w.leaf(n, t, p)
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		w.walk(n, t.Elem(), p)
	case reflect.Struct:
		w.mapping(n, t, p)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.refuse(n, p, "want a list, got %s", nodeKind(n))
			return
		}
		for i, it := range n.Content {
			ip := p.item(i, itemLabel(it, t.Elem()))
			w.mark(ip, it.Line)
			w.walk(it, t.Elem(), ip)
		}
	default:
		w.leaf(n, t, p)
	}
}

// mapping checks the keys of mapping n against the yaml tags of struct t
// and removes the unknown and repeated ones.
func (w *yamlWalker) mapping(n *yaml.Node, t reflect.Type, p fieldPath) {
	if n.Kind != yaml.MappingNode {
		w.refuse(n, p, "want a mapping, got %s", nodeKind(n))
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
		kp := p.key(k.Value)
		if p.at == "" {
			kp = rootField(k.Value)
		}
		if first, dup := seen[k.Value]; dup {
			w.fail(kp, k.Line, "duplicate key (first at line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		ft, ok := fields[k.Value]
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
		w.walk(v, ft, kp)
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
				w.walk(m, t, p)
			}
		} else {
			w.walk(v, t, p)
		}
	}
}

// leaf decodes scalar n into a new t on its own.
func (w *yamlWalker) leaf(n *yaml.Node, t reflect.Type, p fieldPath) {
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

// yamlFields maps the yaml keys of struct t to their field types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	m := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = f.Type
	}
	return m
}

// itemLabel is the label of list item n of type t (see labeled), "" when
// t has none or n does not decode.
func itemLabel(n *yaml.Node, t reflect.Type) string {
	v := reflect.New(t)
	if _, ok := v.Elem().Interface().(labeled); !ok || n.Kind != yaml.MappingNode {
		return ""
	}
	_ = n.Decode(v.Interface()) // partly is enough: errors are the walk's
	return v.Elem().Interface().(labeled).label()
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
