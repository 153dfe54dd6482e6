package kernel

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/rs/zerolog"
)

// sysctl is one setting under /proc/sys/net; optional ones only log a
// warning when they cannot be set (IPv6 compiled out, read-only /proc/sys).
type sysctl struct {
	path, value string
	optional    bool
}

// setSysctls writes settings under /proc/sys/net in n's namespace, each
// only if its value differs.
func setSysctls(n *nlHandle, log zerolog.Logger, ifname string, list []sysctl) error {
	return n.inNetNS(func() error {
		for _, s := range list {
			p := filepath.Join("/proc/sys/net", s.path)
			if cur, err := os.ReadFile(p); err == nil && string(bytes.TrimSpace(cur)) == s.value {
				continue
			}
			err := os.WriteFile(p, []byte(s.value), 0o644)
			if err == nil {
				continue
			}
			if !s.optional {
				return fmt.Errorf("tap %s: sysctl %s=%s: %w", ifname, s.path, s.value, err)
			}
			// A read-only /proc/sys is what a container without
			// privileges has: expected there, not worth a warning on
			// every start.
			ev := log.Warn()
			if errors.Is(err, syscall.EROFS) {
				ev = log.Info()
			}
			ev.Err(err).Str("event", "sysctl_failed").Str("tap", ifname).Str("sysctl", s.path).Str("value", s.value).Msg("optional sysctl not set")
		}
		return nil
	})
}
