package v1

import (
	"errors"
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

	// At is the same path with list items by index
	// (services[0].backends[1].weight): unambiguous even with duplicate
	// names, it finds the field's line in the YAML document (Lines.At).
	At string
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

// SortByLine sorts es by line, stably; errors without a line (about the
// file as a whole) come first.
func (es FieldErrors) SortByLine() {
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

// labeled is a list item that operators name by one of its fields: the
// label names it in error paths (services[web], backends[192.0.2.21]);
// "" names it by its index.
type labeled interface{ Label() string }
