package control

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// FieldError is a config error naming the object and field at fault.
type FieldError struct {
	// Field is the path of the field as an operator names it: list items
	// by their name or IP, e.g. services[web].backends[192.0.2.21].weight.
	Field   string
	Message string
	// Line is the line of the field (or, when the field is absent, of its
	// closest enclosing object) in the YAML file it came from; 0 when the
	// config came from JSON (the REST API) or the line is unknown.
	Line int

	// at is the same path with list items by index
	// (services[0].backends[1].weight): unambiguous even with duplicate
	// names, it finds the field's line in the YAML document.
	at string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

// In renders e as an editor's error line of file: FILE:LINE: field:
// message (FILE: field: message without a line).
func (e *FieldError) In(file string) string {
	if e.Line > 0 {
		return file + ":" + strconv.Itoa(e.Line) + ": " + e.Error()
	}
	return file + ": " + e.Error()
}

// FieldErrors is every error found in one config, in the order of the
// config. errors.As finds its first FieldError, so code that handles one
// error keeps working.
type FieldErrors []*FieldError

func (es FieldErrors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Unwrap returns the errors for errors.Is and errors.As.
func (es FieldErrors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// byLine sorts es by line, stably; errors without a line (about the file
// as a whole) come first.
func (es FieldErrors) byLine() {
	sort.SliceStable(es, func(i, j int) bool { return es[i].Line < es[j].Line })
}

// FileError is every error of a config file.
type FileError struct {
	Path string
	Errs FieldErrors
}

// Error renders one line per error: FILE:LINE: field: message.
func (e *FileError) Error() string {
	msgs := make([]string, len(e.Errs))
	for i, fe := range e.Errs {
		msgs[i] = fe.In(e.Path)
	}
	return strings.Join(msgs, "\n")
}

// Unwrap returns the field errors.
func (e *FileError) Unwrap() error { return e.Errs }

// AsFieldError returns the (first) FieldError in err's chain, if any.
func AsFieldError(err error) (*FieldError, bool) {
	var fe *FieldError
	ok := errors.As(err, &fe)
	return fe, ok
}

// AllFieldErrors returns every FieldError of err: the list of a
// FieldErrors, or the one FieldError in err's chain; nil when there is none.
func AllFieldErrors(err error) []*FieldError {
	var es FieldErrors
	if errors.As(err, &es) {
		return es
	}
	if fe, ok := AsFieldError(err); ok {
		return []*FieldError{fe}
	}
	return nil
}

// fieldPath names a config field twice: as operators read it (list items
// by name or IP) and with list items by index (to find its YAML line).
type fieldPath struct{ name, at string }

func rootField(key string) fieldPath { return fieldPath{key, key} }

// key is the field key of the object at p.
func (p fieldPath) key(k string) fieldPath { return fieldPath{p.name + "." + k, p.at + "." + k} }

// item is item i of the list at p, named by label when it has one.
func (p fieldPath) item(i int, label string) fieldPath {
	idx := "[" + strconv.Itoa(i) + "]"
	if label == "" {
		return fieldPath{p.name + idx, p.at + idx}
	}
	return fieldPath{p.name + "[" + label + "]", p.at + idx}
}

// labeled is a list item that operators name by one of its fields: the
// label names it in error paths (services[web], backends[192.0.2.21]);
// "" names it by its index.
type labeled interface{ label() string }

func (s Service) label() string { return s.Name }

func (p Port) label() string { return p.Name }

func (b Backend) label() string {
	if a, ok := parseAddr4(b.IP); ok {
		return a.String()
	}
	return ""
}

func (p BGPPeer) label() string {
	if a, ok := parseAddr4(p.Address); ok {
		return a.String()
	}
	return ""
}

// errList collects the errors of one validation pass.
type errList struct{ errs FieldErrors }

func (l *errList) add(p fieldPath, format string, a ...any) {
	l.errs = append(l.errs, &FieldError{Field: p.name, Message: fmt.Sprintf(format, a...), at: p.at})
}

// count is the number of errors so far, to tell whether a step added any.
func (l *errList) count() int { return len(l.errs) }

// err returns the errors, or nil when there are none.
func (l *errList) err() error {
	if len(l.errs) == 0 {
		return nil
	}
	return l.errs
}
