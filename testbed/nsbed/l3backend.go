package nsbed

import (
	"context"
	"encoding/json"
	"fmt"
)

// DecapStatus is one eBPF decapsulator as `dsrctl backend status -o json`
// shows it.
type DecapStatus struct {
	Interface    string            `json:"interface"`
	Stale        bool              `json:"stale"`
	VIPs         map[string]string `json:"vips"` // VIP -> mode(s)
	IPIPPackets  uint64            `json:"ipip_packets"`
	GREPackets   uint64            `json:"gre_packets"`
	AdjustErrors uint64            `json:"adjust_errors"`
}

// DecapStatus runs `dsrctl backend status -o json` in ns: the
// decapsulators that `backend setup` attached to its interfaces and their
// packet counters.
func (n *NS) DecapStatus(dsrctl string) ([]DecapStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := n.Output(ctx, dsrctl, "backend", "status", "-o", "json")
	if err != nil {
		return nil, err
	}
	var st struct {
		Decapsulators []DecapStatus `json:"decapsulators"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("[%s] dsrctl backend status: %w: %q", n.Short, err, out)
	}
	return st.Decapsulators, nil
}
