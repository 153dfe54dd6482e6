package pcap

import (
	"encoding/binary"
	"io"
	"time"
)

// pcapng block types and options (draft-ietf-opsawg-pcapng).
const (
	ngSectionHeader  = 0x0a0d0d0a
	ngInterface      = 0x00000001
	ngEnhancedPacket = 0x00000006
	ngByteOrderMagic = 0x1a2b3c4d
	ngOptEnd         = 0
	ngOptComment     = 1
	ngOptIfName      = 2
	ngOptIfTSResol   = 9
	ngOptEPBFlags    = 2
)

// Direction is the epb_flags direction of a pcapng packet.
type Direction uint32

// Directions (epb_flags bits 0-1).
const (
	Inbound  Direction = 1
	Outbound Direction = 2
)

// NGWriter writes a pcapng stream of Ethernet packets with nanosecond
// timestamps: interfaces named at creation, a direction and a comment per
// packet, which a classic pcap cannot carry (tshark shows them as
// frame.interface_id, frame.packet_flags_direction and frame.comment).
type NGWriter struct {
	w   io.Writer
	buf []byte
}

// NewNGWriter writes the section header and one interface description per
// name (interface i is names[i]) to w.
func NewNGWriter(w io.Writer, snapLen int, names ...string) (*NGWriter, error) {
	n := &NGWriter{w: w}
	b := n.buf[:0]
	b = le32(b, ngSectionHeader, 28, ngByteOrderMagic)
	b = binary.LittleEndian.AppendUint16(b, 1) // version 1.0
	b = binary.LittleEndian.AppendUint16(b, 0)
	b = binary.LittleEndian.AppendUint64(b, ^uint64(0)) // section length unknown
	b = le32(b, 28)
	for _, name := range names {
		start := len(b)
		b = le32(b, ngInterface, 0)
		b = binary.LittleEndian.AppendUint16(b, linkEthernet)
		b = binary.LittleEndian.AppendUint16(b, 0)
		b = le32(b, uint32(snapLen))
		b = ngOption(b, ngOptIfName, []byte(name))
		b = ngOption(b, ngOptIfTSResol, []byte{9}) // nanoseconds
		b = le32(b, ngOptEnd)
		b = n.closeBlock(b, start)
	}
	n.buf = b[:0]
	_, err := w.Write(b)
	return n, err
}

// Write appends one packet seen on interface iface at ts: data (as
// captured), origLen (its length on the wire), its direction and a comment
// ("" for none).
func (n *NGWriter) Write(iface int, ts time.Time, data []byte, origLen int, dir Direction, comment string) error {
	b := le32(n.buf[:0], ngEnhancedPacket, 0, uint32(iface))
	t := uint64(ts.UnixNano())
	b = le32(b, uint32(t>>32), uint32(t), uint32(len(data)), uint32(origLen))
	b = append(b, data...)
	b = pad4(b)
	if comment != "" {
		b = ngOption(b, ngOptComment, []byte(comment))
	}
	b = ngOption(b, ngOptEPBFlags, binary.LittleEndian.AppendUint32(nil, uint32(dir)))
	b = le32(b, ngOptEnd)
	b = n.closeBlock(b, 0)
	n.buf = b[:0]
	_, err := n.w.Write(b)
	return err
}

// closeBlock writes the total length of the block starting at start into
// its header and trailer.
func (n *NGWriter) closeBlock(b []byte, start int) []byte {
	total := uint32(len(b) - start + 4)
	binary.LittleEndian.PutUint32(b[start+4:], total)
	return le32(b, total)
}

func le32(b []byte, vs ...uint32) []byte {
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	return b
}

func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// ngOption appends an option (code, length, value padded to 4 bytes).
func ngOption(b []byte, code uint16, v []byte) []byte {
	b = binary.LittleEndian.AppendUint16(b, code)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(v)))
	return pad4(append(b, v...))
}
