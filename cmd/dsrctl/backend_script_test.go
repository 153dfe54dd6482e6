package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The -update flag rewrites the golden files. It is registered only if no
// other test file of the package registered one already.
func init() {
	if flag.Lookup("update") == nil {
		flag.Bool("update", false, "rewrite testdata/*.golden files")
	}
}

func backendUpdateGolden() bool {
	f := flag.Lookup("update")
	return f != nil && f.Value.String() == "true"
}

// backendRun runs `dsrctl backend args...` and returns its exit code and
// output.
func backendRun(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = runBackend(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestBackendScriptGolden(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string // key commands, in this order
	}{
		{
			name: "linux-l2",
			args: []string{"--vip", "10.251.0.10", "--mode", "l2"},
			want: []string{
				"ip addr replace 10.251.0.10/32 dev lo\n",
				"sysctl -qw net.ipv4.conf.all.arp_ignore=1\n",
				"sysctl -qw net.ipv4.conf.all.arp_announce=2\n",
				"sysctl -qw net.ipv4.conf.lo.arp_ignore=1\n",
				"sysctl -qw net.ipv4.conf.lo.arp_announce=2\n",
			},
		},
		{
			name: "linux-l2-dev",
			args: []string{"--vip", "192.0.2.80", "--mode", "l2", "--dev", "eth1.100"},
			want: []string{
				"ip addr replace 192.0.2.80/32 dev lo\n",
				"sysctl -qw net.ipv4.conf.eth1/100.arp_ignore=1\n",
				"sysctl -qw net.ipv4.conf.eth1/100.arp_announce=2\n",
			},
		},
		{
			name: "linux-ipip",
			args: []string{"--vip", "10.251.0.10", "--mode", "ipip"},
			want: []string{
				"modprobe ipip 2>/dev/null || true\n",
				"ip link show tunl0 >/dev/null 2>&1 || ip link add tunl0 type ipip\n",
				"ip link set tunl0 up\n",
				"ip addr replace 10.251.0.10/32 dev tunl0\n",
				"sysctl -qw net.ipv4.conf.all.arp_ignore=1\n",
				"sysctl -qw net.ipv4.conf.all.arp_announce=2\n",
				"sysctl -qw net.ipv4.conf.all.rp_filter=0\n",
				"sysctl -qw net.ipv4.conf.tunl0.rp_filter=0\n",
			},
		},
		{
			name: "linux-gre",
			args: []string{"--vip", "10.251.0.10", "--mode", "gre", "--dev", "ens3"},
			want: []string{
				"modprobe ip_gre 2>/dev/null || true\n",
				"ip link show gre0 >/dev/null 2>&1 || ip link add gre0 type gre\n",
				"ip link set gre0 up\n",
				"ip addr replace 10.251.0.10/32 dev gre0\n",
				"sysctl -qw net.ipv4.conf.ens3.arp_ignore=1\n",
				"sysctl -qw net.ipv4.conf.all.rp_filter=0\n",
				"sysctl -qw net.ipv4.conf.gre0.rp_filter=0\n",
			},
		},
		{
			name: "linux6-l2",
			args: []string{"--vip", "2001:db8:100::10", "--mode", "l2", "--dev", "eth1"},
			want: []string{
				"if [ \"$(cat /proc/sys/net/ipv6/conf/lo/disable_ipv6)\" != 0 ]; then\n",
				"if [ \"$(cat /proc/sys/net/ipv6/conf/eth1/disable_ipv6)\" != 0 ]; then\n",
				"if [ -n \"$(ip -6 neigh show proxy to 2001:db8:100::10)\" ]; then\n",
				"ip -6 addr replace 2001:db8:100::10/128 dev lo nodad\n",
			},
		},
		{
			name: "linux6-ipip",
			args: []string{"--vip", "2001:db8:100::10", "--mode", "ipip"},
			want: []string{
				"if command -v dsrctl >/dev/null 2>&1; then\n",
				"    exec dsrctl backend setup --vip 2001:db8:100::10 --mode ipip\n",
				"modprobe ip6_tunnel 2>/dev/null || true\n",
				"modprobe sit 2>/dev/null || true\n",
				"if ! ip link show ip6tnl0 >/dev/null 2>&1; then\n",
				"if ! ip link show sit0 >/dev/null 2>&1; then\n",
				"ip link set ip6tnl0 up\n",
				"ip link set sit0 up\n",
				"ip -6 addr replace 2001:db8:100::10/128 dev lo nodad\n",
			},
		},
		{
			name: "linux6-gre",
			args: []string{"--vip", "2001:db8:100::10", "--mode", "gre", "--dev", "eth1"},
			want: []string{
				"    exec dsrctl backend setup --vip 2001:db8:100::10 --mode gre --dev eth1\n",
				"modprobe ip6_gre 2>/dev/null || true\n",
				"modprobe ip_gre 2>/dev/null || true\n",
				"ip link set ip6gre0 up\n",
				"ip link set gre0 up\n",
				"ip -6 addr replace 2001:db8:100::10/128 dev lo nodad\n",
			},
		},
		{
			name: "windows-l2",
			args: []string{"--vip", "10.251.0.10", "--mode", "l2", "--os", "windows"},
			want: []string{
				"netsh interface ipv4 add address \"Loopback\" 10.251.0.10 255.255.255.255\r\n",
				"netsh interface ipv4 set interface \"Loopback\" metric=254\r\n",
				"netsh interface ipv4 set interface \"Ethernet\" weakhostreceive=enabled\r\n",
				"netsh interface ipv4 set interface \"Loopback\" weakhostreceive=enabled\r\n",
				"netsh interface ipv4 set interface \"Loopback\" weakhostsend=enabled\r\n",
			},
		},
		{
			name: "windows-l2-dev",
			args: []string{"--vip", "10.251.0.10", "--mode", "l2", "--os", "windows", "--dev", "Ethernet 2"},
			want: []string{
				"netsh interface ipv4 set interface \"Ethernet 2\" weakhostreceive=enabled\r\n",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, got, stderr := backendRun(append([]string{"script"}, tc.args...)...)
			if code != 0 {
				t.Fatalf("got exit %d, want 0; stderr: %s", code, stderr)
			}
			// Key commands, in order.
			rest := got
			for _, cmd := range tc.want {
				i := strings.Index(rest, cmd)
				if i < 0 {
					t.Errorf("script lacks (or misorders) %q", cmd)
					continue
				}
				rest = rest[i+len(cmd):]
			}
			golden := filepath.Join("testdata", "backend_script_"+tc.name+".golden")
			if backendUpdateGolden() {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run TestBackendScriptGolden -update)", err)
			}
			if got != string(want) {
				t.Errorf("script differs from %s (rerun with -update if intended):\ngot:\n%s\nwant:\n%s", golden, got, want)
			}
		})
	}
}

func TestBackendScriptLinuxNoEBPFOrWindowsLeftovers(t *testing.T) {
	for _, mode := range []string{"l2", "ipip", "gre"} {
		_, got6, _ := backendRun("script", "--vip", "2001:db8:100::10", "--mode", mode)
		if strings.Contains(got6, "arp_") || strings.Contains(got6, "rp_filter") || strings.Contains(got6, "net.ipv4") {
			t.Errorf("mode %s: IPv6 script touches IPv4 settings:\n%s", mode, got6)
		}
		_, got, _ := backendRun("script", "--vip", "10.251.0.10", "--mode", mode)
		if strings.Contains(got, "netsh") || strings.Contains(got, "\r") {
			t.Errorf("mode %s: Linux script contains Windows content", mode)
		}
		if mode == "l2" && (strings.Contains(got, "rp_filter") || strings.Contains(got, "tunl0")) {
			t.Errorf("mode l2: script touches tunnels or rp_filter:\n%s", got)
		}
	}
}

func TestBackendUsageAndErrors(t *testing.T) {
	tests := []struct {
		desc     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"no subcommand", nil, 2, "usage: dsrctl backend"},
		{"unknown subcommand", []string{"frobnicate"}, 2, `unknown subcommand "frobnicate"`},
		{"help", []string{"--help"}, 0, ""},
		{"missing vip", []string{"script", "--mode", "l2"}, 2, "--vip is required"},
		{"bad vip", []string{"script", "--vip", "10.251.0", "--mode", "l2"}, 2, "not an IP address"},
		{"ipv4-mapped vip", []string{"script", "--vip", "::ffff:10.251.0.10", "--mode", "l2"}, 2, "not an IPv4-mapped one"},
		{"vip with zone", []string{"script", "--vip", "fe80::1%eth0", "--mode", "l2"}, 2, "without zone"},
		{"link-local vip", []string{"script", "--vip", "fe80::10", "--mode", "l2"}, 2, "cannot be a VIP"},
		{"ipv6 loopback vip", []string{"setup", "--vip", "::1", "--mode", "ipip"}, 2, "cannot be a VIP"},
		{"ipv6 multicast vip", []string{"setup", "--vip", "ff02::1", "--mode", "l2"}, 2, "cannot be a VIP"},
		{"loopback vip", []string{"script", "--vip", "127.0.0.5", "--mode", "l2"}, 2, "cannot be a VIP"},
		{"missing mode", []string{"script", "--vip", "10.251.0.10"}, 2, "--mode is required"},
		{"bad mode", []string{"setup", "--vip", "10.251.0.10", "--mode", "dsr"}, 2, "--mode must be l2, ipip or gre"},
		{"bad os", []string{"script", "--vip", "10.251.0.10", "--mode", "l2", "--os", "bsd"}, 2, "--os must be linux or windows"},
		{"os on setup", []string{"setup", "--vip", "10.251.0.10", "--mode", "l2", "--os", "linux"}, 2, "--os does not apply to setup"},
		{"bad hook", []string{"setup", "--vip", "10.251.0.10", "--mode", "ipip", "--hook", "xdp"}, 2, "--hook must be auto, tcx or tc"},
		{"hook on teardown", []string{"teardown", "--vip", "10.251.0.10", "--mode", "ipip", "--hook", "tc"}, 2, "--hook does not apply to teardown"},
		{"bad dev", []string{"script", "--vip", "10.251.0.10", "--mode", "l2", "--dev", "eth0; reboot"}, 2, "not a valid interface name"},
		{"extra argument", []string{"teardown", "--vip", "10.251.0.10", "--mode", "l2", "now"}, 2, `unexpected argument "now"`},
		{"unknown flag", []string{"status", "--vip", "10.251.0.10"}, 2, "--vip does not apply to status"},
		{"bad output", []string{"status", "-o", "yaml"}, 2, "-o must be table or json"},
		{"windows ipip", []string{"script", "--vip", "10.251.0.10", "--mode", "ipip", "--os", "windows"}, 1, "mode ipip is not supported on Windows"},
		{"windows ipv6", []string{"script", "--vip", "2001:db8:100::10", "--mode", "l2", "--os", "windows"}, 1, "IPv6 VIPs are not supported on Windows"},
		{"windows gre", []string{"script", "--vip", "10.251.0.10", "--mode", "gre", "--os", "Windows"}, 1, "mode gre is not supported on Windows"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			code, _, stderr := backendRun(tc.args...)
			if code != tc.wantCode {
				t.Errorf("got exit %d, want %d; stderr: %s", code, tc.wantCode, stderr)
			}
			if !strings.Contains(stderr, tc.wantErr) {
				t.Errorf("got stderr %q, want it to contain %q", stderr, tc.wantErr)
			}
		})
	}
}
