package control

import (
	"fmt"
	"strconv"

	v1 "github.com/dsrlb/dsrlb/api/v1"
)

// The errors of a config are those of the wire schema, so that a client
// (dsrctl) reports them as the appliance does.
type (
	FieldError  = v1.FieldError
	FieldErrors = v1.FieldErrors
	FileError   = v1.FileError
)

// AsFieldError returns the (first) FieldError in err's chain, if any.
func AsFieldError(err error) (*FieldError, bool) { return v1.AsFieldError(err) }

// AllFieldErrors returns every FieldError of err: the list of a
// FieldErrors, or the one FieldError in err's chain; nil when there is none.
func AllFieldErrors(err error) []*FieldError { return v1.AllFieldErrors(err) }

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

// errList collects the errors of one validation pass.
type errList struct{ errs FieldErrors }

func (l *errList) add(p fieldPath, format string, a ...any) {
	l.errs = append(l.errs, &FieldError{Field: p.name, Message: fmt.Sprintf(format, a...), At: p.at})
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
