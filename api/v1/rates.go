package v1

// Rates is the body of GET /api/v1/rates: the rates of every service and
// backend over the last sampling interval, as the web console's tables
// show them. Before the second sample (one interval after start) the
// lists are empty.
type Rates struct {
	// Time is the end of the interval, Unix seconds.
	Time int64 `json:"time"`
	// IntervalSeconds is the sampling interval.
	IntervalSeconds float64        `json:"interval_seconds"`
	Services        []ServiceRates `json:"services"`
}

// ServiceRates are one service's rates, per second.
type ServiceRates struct {
	Name string `json:"name"`
	// Packets and Bits per second received for the service.
	Packets float64 `json:"packets_per_second"`
	Bits    float64 `json:"bits_per_second"`
	// NewFlows per second: flows Maglev assigned to its backends.
	NewFlows float64 `json:"new_flows_per_second"`
	// NoBackend per second: packets dropped as no_backend.
	NoBackend float64        `json:"no_backend_drops_per_second"`
	Backends  []BackendRates `json:"backends"`
}

// BackendRates are one backend's rates, per second.
type BackendRates struct {
	IP       string  `json:"ip"`
	Packets  float64 `json:"packets_per_second"`
	Bits     float64 `json:"bits_per_second"`
	NewFlows float64 `json:"new_flows_per_second"`
}

// History is the body of GET /api/v1/history: the rates of one object
// (the appliance, a service or a backend), one value per sampling
// interval over the window kept (15 minutes), oldest first.
type History struct {
	// Object is "appliance", "service NAME" or "service NAME/backend IP".
	Object          string  `json:"object"`
	IntervalSeconds float64 `json:"interval_seconds"`
	// Times are the ends of the intervals, Unix seconds; every series has
	// one value per time. A value from before the object existed is 0.
	Times  []int64  `json:"times"`
	Series []Series `json:"series"`
}

// Series is one named rate over time.
type Series struct {
	// Name is stable: packets_per_second, bits_per_second,
	// new_flows_per_second, no_backend_drops_per_second; for the
	// appliance rx_/tx_packets_per_second, rx_/tx_bits_per_second and
	// drops_per_second:REASON for every drop reason (the data plane's
	// names).
	Name   string    `json:"name"`
	Values []float64 `json:"values"`
}
