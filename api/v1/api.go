// Package v1 is dsrlb's wire schema, version 1: the config file (YAML),
// the documents of the REST API under /api/v1 (JSON) and the services of
// the state file, with the same field names in all three; the API's error
// documents; and the strict YAML decoding that reports every error of a
// file with its line. It is the one definition of these documents: the
// appliance (control, api), its CLI (dsrctl) and the testbed all use it.
// It imports nothing of dsrlb, so a client links none of the appliance's
// code.
package v1

import "time"

// ErrorResponse is the body of every 4xx and 5xx answer.
type ErrorResponse struct {
	// Error is the first error (of Errors).
	Error Error `json:"error"`
	// Errors is every error found, at least one: a change that does not
	// validate lists each offending field, in the order of the config.
	Errors []Error `json:"errors"`
}

// Error describes why a request failed.
type Error struct {
	// Code is a stable machine-readable name, e.g. "validation_failed".
	Code    string `json:"code"`
	Message string `json:"message"`
	// Field is the offending config field or request part, when known,
	// e.g. "services[web].backends[192.0.2.21].weight".
	Field string `json:"field,omitempty"`
}

// Error codes.
const (
	CodeInvalidJSON      = "invalid_json"
	CodeUnknownField     = "unknown_field"
	CodeInvalidPath      = "invalid_path"
	CodeValidation       = "validation_failed"
	CodeUnauthorized     = "unauthorized"
	CodeForbidden        = "changes_disabled"
	CodeNotFound         = "not_found"
	CodeMethodNotAllowed = "method_not_allowed"
	CodeConflict         = "conflict"
	CodeTooLarge         = "body_too_large"
	CodeMediaType        = "unsupported_media_type"
	CodeInternal         = "internal"
)

// ServiceList is the body of GET /api/v1/services; it has the shape of the
// config file's services section.
type ServiceList struct {
	Services []Service `json:"services" yaml:"services"`
}

// BackendPatch is the body of PATCH /api/v1/services/NAME/backends/IP: it
// changes some fields of a backend; nil fields stay.
type BackendPatch struct {
	Weight *int    `json:"weight,omitempty"`
	State  *string `json:"state,omitempty"`
}

// Status is the body of GET /api/v1/status.
type Status struct {
	// Generation is the published snapshot's generation.
	Generation uint64          `json:"generation"`
	Services   []ServiceStatus `json:"services"`
	// BGP lists the BGP sessions; empty without a speaker.
	BGP []BGPSession `json:"bgp"`
}

// BGPSession is the state of the session with one BGP peer.
type BGPSession struct {
	Address string `json:"address"`
	ASN     uint32 `json:"asn"`
	// State is the RFC 4271 FSM state in lower case, e.g. "established".
	State         string  `json:"state"`
	UptimeSeconds float64 `json:"uptime_seconds"`
	PrefixesSent  int     `json:"prefixes_sent"`
}

// ServiceStatus is one service's live state.
type ServiceStatus struct {
	Name     string `json:"name"`
	VIP      string `json:"vip"`
	Protocol string `json:"protocol"`
	Port     int    `json:"port"`
	Mode     string `json:"mode"`
	// MinHealthy is the number of usable backends BGP needs to announce.
	MinHealthy int `json:"min_healthy"`
	// Usable counts backends that take new flows.
	Usable int `json:"usable_backends"`
	// Announced tells whether the VIP is announced by BGP; Reason says why
	// (not).
	Announced bool            `json:"announced"`
	Reason    string          `json:"announce_reason,omitempty"`
	Backends  []BackendStatus `json:"backends"`
}

// BackendStatus is one backend's live state.
type BackendStatus struct {
	IP     string `json:"ip"`
	Weight uint32 `json:"weight"`
	// State is the configured state: enabled, drain or disabled.
	State string `json:"state"`
	// Forwarding is the state in the published snapshot: active (takes new
	// flows), drain (keeps old flows only) or down; pending before the
	// backend reaches a snapshot.
	Forwarding string `json:"forwarding"`
	// Health is healthy or unhealthy; unchecked when the service has no
	// monitor, unknown when the daemon runs no health checker.
	Health string `json:"health"`
	// NextHop is the address whose MAC frames are sent to (the backend or
	// the gateway); NextHopMAC is empty while unresolved.
	NextHop    string `json:"next_hop,omitempty"`
	NextHopMAC string `json:"next_hop_mac,omitempty"`
	// NewFlows counts flows Maglev assigned to the backend (all workers).
	NewFlows uint64 `json:"new_flows"`
	// Passive says, while passive failure detection holds the backend
	// down, until when and on what evidence ("held down by passive
	// detection until ...: 5 unanswered SYNs in 10s"); HeldUntil is that
	// time.
	Passive   string     `json:"passive,omitempty"`
	HeldUntil *time.Time `json:"held_until,omitempty"`
	// Probe says how the health monitor probes the backend; absent when
	// the service has none.
	Probe *BackendProbe `json:"probe,omitempty"`
	// HealthReason says, while the backend is unhealthy, why, in words an
	// operator can act on.
	HealthReason string `json:"health_reason,omitempty"`
}

// BackendProbe is how a backend's health monitor probes it.
type BackendProbe struct {
	Type string `json:"type"` // tcp, http, udp, icmp
	// Via is vip (through the DSR path) or backend (its own address).
	Via string `json:"via"`
	// Target is what a probe is addressed to and how it gets there:
	// "192.0.2.1:80 through ipip to 10.1.2.3", "10.1.2.3:80".
	Target string `json:"target"`
	// LastResult is "ok" or the last probe's failure, as an operator
	// reads it; empty before the first probe.
	LastResult string `json:"last_result,omitempty"`
}
