package nsbed

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// bpffsDir is the name of the bed's BPF filesystem in its work directory.
const bpffsDir = "bpffs"

// BPFFS returns the bed's private BPF filesystem, mounted under its work
// directory on first use. L3 DSR backends here decapsulate with dsrctl's
// eBPF program (the kernel has no ipip or ip_gre module), which lives on in
// pins after dsrctl exits. Commands run under `ip netns exec`, whose
// private /sys has no BPF filesystem (one mounted there dies with the
// command), and the host's /sys/fs/bpf is not the bed's to fill; a mount
// made here, before the commands start, is seen by all of them. Close
// unmounts it, which releases every program, map and TCX link pinned in
// it; Sweep does the same for a bed whose process died.
func (b *Bed) BPFFS() (string, error) {
	b.bpffsOnce.Do(func() {
		dir := b.Path(bpffsDir)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			b.bpffsErr = err
			return
		}
		if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
			b.bpffsErr = fmt.Errorf("nsbed: mount a BPF filesystem on %s: %w", dir, err)
			return
		}
		b.bpffs = dir
		b.OnClose(func() { unmountBPFFS(b.dir) })
	})
	return b.bpffs, b.bpffsErr
}

// unmountBPFFS unmounts the BPF filesystem of the bed whose work directory
// is dir, if one is mounted (lazily: nothing holds it open for long).
func unmountBPFFS(dir string) {
	p := filepath.Join(dir, bpffsDir)
	var st unix.Statfs_t
	if unix.Statfs(p, &st) == nil && st.Type == unix.BPF_FS_MAGIC {
		_ = unix.Unmount(p, unix.MNT_DETACH)
	}
}

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

// DecapStatus runs `dsrctl backend status -o json` in ns against the bed's
// BPF filesystem: the decapsulators that `backend setup` attached there and
// their packet counters.
func (n *NS) DecapStatus(dsrctl string) ([]DecapStatus, error) {
	fs, err := n.bed.BPFFS()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := n.Output(ctx, dsrctl, "backend", "status", "--bpffs", fs, "-o", "json")
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
