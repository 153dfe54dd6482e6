package dockerlab

// How the appliance's container runs; docker/README.md shows the same
// command lines and says why each part is there.

// ApplianceCaps are the only capabilities dsrlb needs on af_packet and tap
// ports without hugepages (everything else is dropped):
//   - NET_ADMIN: create the tap (TUNSETIFF on /dev/net/tun), set its
//     address, the VIPs and routes, put the port in promiscuous mode;
//   - NET_RAW: the AF_PACKET socket of net_af_packet, ICMP health checks;
//   - IPC_LOCK: net_af_packet maps its rings locked (MAP_LOCKED), and the
//     64 KB ring frames dsrlb asks for take 64 MB per queue, far above the
//     RLIMIT_MEMLOCK containers inherit from dockerd (8 MB here): without
//     it the port's probe fails (mmap: EAGAIN);
//   - SYS_ADMIN: the private network namespace of the health checks
//     through the VIP (health.via: vip, the default for tcp, http and udp
//     monitors): unshare and setns need it.
var ApplianceCaps = []string{"NET_ADMIN", "NET_RAW", "IPC_LOCK", "SYS_ADMIN"}

// NetSysctls are set when the appliance's network namespace is made
// (`docker run --sysctl`): /proc/sys is read-only inside a container, so
// dsrlb must find the settings it wants on its tap already in place. The
// tap inherits the "default" values when DPDK creates it: arp_announce=2,
// arp_notify=1, no ICMP redirects sent or accepted, IPv6 off (an IPv4
// port). dsrlb checks each value and writes only those that differ.
var NetSysctls = []string{
	"net.ipv4.conf.default.arp_announce=2",
	"net.ipv4.conf.default.arp_notify=1",
	"net.ipv4.conf.default.send_redirects=0",
	"net.ipv4.conf.all.send_redirects=0",
	"net.ipv4.conf.default.accept_redirects=0",
	"net.ipv6.conf.all.disable_ipv6=1",
	"net.ipv6.conf.default.disable_ipv6=1",
}

// Paths inside the image (see docker/Dockerfile).
const (
	ConfigPath = "/etc/dsrlb/dsrlb.yaml"
	StateDir   = "/var/lib/dsrlb"
)

// NetnsArgs are the `docker` arguments that start container name of image
// to own the appliance's network namespace: no network but loopback, the
// NetSysctls, and a process that only waits (under --init, so that docker
// stop's SIGTERM ends it). The ports' interfaces are then moved or created
// in its namespace, and the appliance joins it (Appliance.Network
// "container:"+name).
func NetnsArgs(name, image string) []string {
	args := []string{"run", "--detach", "--name", name, "--network", "none", "--init"}
	for _, s := range NetSysctls {
		args = append(args, "--sysctl", s)
	}
	return append(args, "--entrypoint", "sleep", image, "infinity")
}

// Appliance describes one `docker run` of the appliance.
type Appliance struct {
	Name, Image string
	// Network is the --network value: "container:NAME" (see NetnsArgs),
	// "none" or "host".
	Network string
	// Config is the host's config file, mounted read-only at ConfigPath;
	// StateDir is the host's state directory, mounted at StateDir.
	Config, StateDir string
	// Args are extra arguments of `dsrlb run`.
	Args []string
}

// RunArgs are the `docker` arguments that run a: dsrlb as the container's
// process in the foreground, with ApplianceCaps only, /dev/net/tun for the
// taps, a read-only root with a tmpfs /run (EAL's runtime directory), no
// privilege gain, the config and state mounted, and time to drain on
// `docker stop` (bgp.drain is at most 30 s).
func (a Appliance) RunArgs() []string {
	args := []string{"run", "--name", a.Name, "--network", a.Network, "--cap-drop", "ALL"}
	for _, c := range ApplianceCaps {
		args = append(args, "--cap-add", c)
	}
	args = append(args,
		"--device", "/dev/net/tun",
		"--read-only", "--tmpfs", "/run",
		"--security-opt", "no-new-privileges",
		"--volume", a.Config+":"+ConfigPath+":ro",
		"--volume", a.StateDir+":"+StateDir,
		"--stop-timeout", "40",
		a.Image, "run", "--config", ConfigPath, "--state", StateDir+"/state.json")
	return append(args, a.Args...)
}
