// Package control is the dsrlb control plane core: the config model, its
// validation, persistence, neighbour resolution and health state, and the
// compiler that turns them into an immutable pipeline.Snapshot published
// through an atomic.Pointer.
package control

import (
	"fmt"
	"net/netip"
	"os"
	"strings"

	v1 "github.com/dsrlb/dsrlb/api/v1"
)

// Config is the whole appliance configuration as written in YAML and in
// the REST API's JSON: the wire schema v1.Config, with the validation and
// the mutations of the control plane. It is the raw, unvalidated form;
// Validate checks it and fills defaults. A *v1.Config converts to a
// *Config and back at no cost.
type Config v1.Config

// The objects of a Config are those of the wire schema (package api/v1),
// the one definition of the config file, the API's documents and the
// state file's services; control names them for its own code.
type (
	Dataplane = v1.Dataplane
	Port      = v1.Port
	Neighbor  = v1.Neighbor
	Service   = v1.Service
	Backend   = v1.Backend
	Health    = v1.Health
	Passive   = v1.Passive
	Flows     = v1.Flows
	Maglev    = v1.Maglev
	API       = v1.API
	BGP       = v1.BGP
	BGPPeer   = v1.BGPPeer
	Duration  = v1.Duration
)

// LoadFile reads a YAML config file, decodes it strictly and validates
// it. A file that does not decode or validate gives a *FileError with
// every error of the file and its line.
func LoadFile(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := ParseYAML(b)
	if err != nil {
		if es := AllFieldErrors(err); es != nil {
			return nil, &FileError{Path: path, Errs: es}
		}
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// ParseYAML decodes a YAML config strictly and validates it. The error is
// a FieldErrors with every error of the document, each with its line, in
// the order of the lines: unknown keys, values of the wrong type, and what
// Validate finds in the rest (a field that did not decode is not also
// reported by Validate).
func ParseYAML(b []byte) (*Config, error) {
	doc, lines, errs := v1.DecodeYAMLPartial(b)
	if doc == nil {
		return nil, errs
	}
	c := (*Config)(doc)
	if _, err := c.Validate(); err != nil {
		for _, e := range AllFieldErrors(err) {
			if !errs.Cover(e.At) {
				e.Line = lines.At(e.At)
				errs = append(errs, e)
			}
		}
	}
	if len(errs) > 0 {
		errs.SortByLine()
		return nil, errs
	}
	return c, nil
}

// Clone returns a deep copy of c.
func (c *Config) Clone() *Config { return (*Config)((*v1.Config)(c).Clone()) }

// ServiceIndex returns the index of the service named name, or -1.
func (c *Config) ServiceIndex(name string) int {
	for i := range c.Services {
		if c.Services[i].Name == name {
			return i
		}
	}
	return -1
}

// parseAddr parses an IPv4 or an IPv6 address, the families a VIP, a
// backend or a neighbour may have. An IPv4-mapped IPv6 address
// (::ffff:192.0.2.1) and a zone (%eth0) are refused: the one address has
// one spelling. When s is not an address, msg says which family it looked
// like (a colon: IPv6), for "not an IPv4 address: ..." errors that stay as
// they were before IPv6.
func parseAddr(s string) (a netip.Addr, msg string) {
	a, err := netip.ParseAddr(s)
	switch {
	case err == nil && (a.Is4() || a.Is6() && !a.Is4In6() && a.Zone() == ""):
		return a, ""
	case strings.Contains(s, ":"):
		return netip.Addr{}, fmt.Sprintf("not an IPv6 address: %q", s)
	}
	return netip.Addr{}, fmt.Sprintf("not an IPv4 address: %q", s)
}

// parseAddr4 parses an IPv4 address.
func parseAddr4(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Addr{}, false
	}
	return a, true
}
