package control

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/pipeline"
)

// Mutations of a Config, for Store.Update callbacks (the REST API). They
// check only existence and clashes with other objects; Store.Update then
// validates the whole result.

// ErrConflict is returned (wrapped) when an object clashes with an existing
// one: same name, same backend IP, or the same VIP, protocol and port.
var ErrConflict = errors.New("conflict")

// conflictError is a FieldError that also matches ErrConflict.
type conflictError struct{ *FieldError }

func (e conflictError) Unwrap() []error { return []error{ErrConflict, e.FieldError} }

func conflict(field, format string, a ...any) error {
	return conflictError{&FieldError{Field: field, Message: fmt.Sprintf(format, a...)}}
}

func notFound(format string, a ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), ErrNotFound)
}

// Service returns a copy of the service named name.
func (c *Config) Service(name string) (Service, error) {
	i := c.ServiceIndex(name)
	if i < 0 {
		return Service{}, notFound("service %q", name)
	}
	return c.Services[i].Clone(), nil
}

// AddService appends s. It fails with ErrConflict when the name or the
// (VIP, protocol, port) is taken.
func (c *Config) AddService(s Service) error {
	if c.ServiceIndex(s.Name) >= 0 {
		return conflict("services["+s.Name+"].name", "service %q already exists", s.Name)
	}
	if err := c.checkVIP(s, -1); err != nil {
		return err
	}
	c.Services = append(c.Services, s.Clone())
	return nil
}

// ReplaceService replaces the service named s.Name, keeping its position.
func (c *Config) ReplaceService(s Service) error {
	i := c.ServiceIndex(s.Name)
	if i < 0 {
		return notFound("service %q", s.Name)
	}
	if err := c.checkVIP(s, i); err != nil {
		return err
	}
	c.Services[i] = s.Clone()
	return nil
}

// ReplaceServices replaces the whole list of services with svcs, in their
// order: one change, validated and published as a whole by Store.Update.
// A service keeps its counters and flows when its name stays.
func (c *Config) ReplaceServices(svcs []Service) error {
	c.Services = make([]Service, 0, len(svcs))
	for _, s := range svcs {
		c.Services = append(c.Services, s.Clone())
	}
	return nil
}

// RemoveService deletes the service named name.
func (c *Config) RemoveService(name string) error {
	i := c.ServiceIndex(name)
	if i < 0 {
		return notFound("service %q", name)
	}
	c.Services = append(c.Services[:i:i], c.Services[i+1:]...)
	return nil
}

// checkVIP reports a conflict when another service than index skip serves
// s's (VIP, protocol, port). Unparsable values are left to Validate.
func (c *Config) checkVIP(s Service, skip int) error {
	vip, err := netip.ParseAddr(s.VIP)
	if err != nil {
		return nil
	}
	for i, o := range c.Services {
		if i == skip || o.Protocol != s.Protocol || o.Port != s.Port {
			continue
		}
		if ov, err := netip.ParseAddr(o.VIP); err == nil && ov == vip {
			return conflict("services["+s.Name+"].vip", "%v %s port %d is already served by %q", vip, s.Protocol, s.Port, o.Name)
		}
	}
	return nil
}

// backendIndex returns the indexes of service name and of its backend ip.
func (c *Config) backendIndex(name string, ip netip.Addr) (int, int, error) {
	i := c.ServiceIndex(name)
	if i < 0 {
		return -1, -1, notFound("service %q", name)
	}
	for j, b := range c.Services[i].Backends {
		if a, err := netip.ParseAddr(b.IP); err == nil && a == ip {
			return i, j, nil
		}
	}
	return i, -1, notFound("backend %v of service %q", ip, name)
}

// AddBackend appends b to service name; ErrConflict when its IP is there.
func (c *Config) AddBackend(name string, b Backend) error {
	i := c.ServiceIndex(name)
	if i < 0 {
		return notFound("service %q", name)
	}
	if ip, err := netip.ParseAddr(b.IP); err == nil {
		if _, j, _ := c.backendIndex(name, ip); j >= 0 {
			return conflict("services["+name+"].backends["+ip.String()+"].ip", "backend %v already exists", ip)
		}
	}
	if b.Weight != nil {
		w := *b.Weight
		b.Weight = &w
	}
	c.Services[i].Backends = append(c.Services[i].Backends, b)
	return nil
}

// PatchBackend applies p to backend ip of service name and returns the
// result.
func (c *Config) PatchBackend(name string, ip netip.Addr, p v1.BackendPatch) (Backend, error) {
	i, j, err := c.backendIndex(name, ip)
	if err != nil {
		return Backend{}, err
	}
	b := &c.Services[i].Backends[j]
	if p.Weight != nil {
		w := *p.Weight
		b.Weight = &w
	}
	if p.State != nil {
		b.State = *p.State
	}
	return *b, nil
}

// RemoveBackend deletes backend ip of service name.
func (c *Config) RemoveBackend(name string, ip netip.Addr) error {
	i, j, err := c.backendIndex(name, ip)
	if err != nil {
		return err
	}
	bs := c.Services[i].Backends
	c.Services[i].Backends = append(bs[:j:j], bs[j+1:]...)
	return nil
}

// NextHopMAC returns where packets to backend b go, the way Compile
// resolves it: the next-hop address (b itself when on-link, else the
// gateway) and its MAC from b's static MAC, the static neighbors, then nb.
// The MAC is zero when unresolved.
func (t *Typed) NextHopMAC(b TypedBackend, nb Neighbors) (netip.Addr, pipeline.MAC) {
	hop, _ := t.NextHop(b.IP)
	if !hop.IsValid() {
		return hop, pipeline.MAC{}
	}
	return hop, t.resolve(b, hop, nb)
}

// ProtoName returns the config name of an IP protocol number.
func ProtoName(p uint8) string {
	switch p {
	case pipeline.ProtoTCP:
		return "tcp"
	case pipeline.ProtoUDP:
		return "udp"
	}
	return strconv.Itoa(int(p))
}
