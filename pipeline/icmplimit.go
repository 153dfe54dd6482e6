package pipeline

// DefaultICMPErrorsPerSecond is the rate, per worker, of the ICMP errors
// the data plane generates when the config does not set one: Linux's own
// limit on the ICMP errors a host sends (net.ipv4.icmp_msgs_per_sec).
const DefaultICMPErrorsPerSecond = 1000

// errorLimit meters the ICMP errors a worker writes itself, fragmentation
// needed (fragNeeded) and ICMPv6 Packet Too Big (packetTooBig) alike,
// against Snapshot.ICMPErrorsPerSecond. Each answers one packet of the
// client's with a packet to its source address, which the client may have
// spoofed: without a limit a flood of large packets to a VIP would make
// the appliance reflect as many ICMP errors at a victim. It holds one
// second of the rate and starts full (tokenBucket), so the first oversized
// packets after a start are answered at once.
type errorLimit struct{ b tokenBucket }

// allow reports whether one more ICMP error fits rate errors per second
// (0: no limit) at now, the worker's clock in milliseconds, and if so
// counts it.
func (l *errorLimit) allow(rate, now uint32) bool {
	if rate == 0 {
		return true
	}
	return l.b.take(rate, now)
}

// icmpErrorAllowed reports whether the worker may answer one more
// oversized packet with an ICMP error under s's rate; the caller drops
// the packet as icmp_error_limit otherwise.
func (f *Forwarder) icmpErrorAllowed(s *Snapshot) bool {
	return f.icmpErrs.allow(s.ICMPErrorsPerSecond, f.Now)
}
