// Package pcap reads and writes classic libpcap capture files (Ethernet
// link type, microsecond timestamps): enough for golden tests, the replay
// checker and the benchmark capture generator. It is not used on the fast
// path.
package pcap

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

const (
	magicMicro    = 0xa1b2c3d4
	magicNano     = 0xa1b23c4d
	linkEthernet  = 1
	globalHdrSize = 24
	recordHdrSize = 16
	// SnapLen is the snapshot length written into new files.
	SnapLen = 65535
)

// Writer writes packets to a pcap file.
type Writer struct {
	w   *bufio.Writer
	f   *os.File
	buf [recordHdrSize]byte
}

// Create creates path and writes the global header.
func Create(path string) (*Writer, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	w := &Writer{w: bufio.NewWriterSize(f, 1<<20), f: f}
	var h [globalHdrSize]byte
	binary.LittleEndian.PutUint32(h[0:], magicMicro)
	binary.LittleEndian.PutUint16(h[4:], 2)
	binary.LittleEndian.PutUint16(h[6:], 4)
	binary.LittleEndian.PutUint32(h[16:], SnapLen)
	binary.LittleEndian.PutUint32(h[20:], linkEthernet)
	if _, err := w.w.Write(h[:]); err != nil {
		f.Close()
		return nil, err
	}
	return w, nil
}

// Write appends one packet with timestamp ts.
func (w *Writer) Write(ts time.Time, data []byte) error {
	binary.LittleEndian.PutUint32(w.buf[0:], uint32(ts.Unix()))
	binary.LittleEndian.PutUint32(w.buf[4:], uint32(ts.Nanosecond()/1000))
	binary.LittleEndian.PutUint32(w.buf[8:], uint32(len(data)))
	binary.LittleEndian.PutUint32(w.buf[12:], uint32(len(data)))
	if _, err := w.w.Write(w.buf[:]); err != nil {
		return err
	}
	_, err := w.w.Write(data)
	return err
}

// Close flushes and closes the file.
func (w *Writer) Close() error {
	if err := w.w.Flush(); err != nil {
		w.f.Close()
		return err
	}
	return w.f.Close()
}

// WriteFile writes pkts to path with timestamps one microsecond apart.
func WriteFile(path string, pkts [][]byte) error {
	w, err := Create(path)
	if err != nil {
		return err
	}
	t0 := time.Unix(1700000000, 0)
	for i, p := range pkts {
		if err := w.Write(t0.Add(time.Duration(i)*time.Microsecond), p); err != nil {
			w.Close()
			return err
		}
	}
	return w.Close()
}

// ReadFile returns every packet of the pcap file at path.
func ReadFile(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := bufio.NewReader(f)
	var h [globalHdrSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, fmt.Errorf("pcap %s: header: %w", path, err)
	}
	var bo binary.ByteOrder = binary.LittleEndian
	switch binary.LittleEndian.Uint32(h[0:]) {
	case magicMicro, magicNano:
	default:
		bo = binary.BigEndian
		if m := bo.Uint32(h[0:]); m != magicMicro && m != magicNano {
			return nil, fmt.Errorf("pcap %s: bad magic %#x", path, m)
		}
	}
	if lt := bo.Uint32(h[20:]); lt != linkEthernet {
		return nil, fmt.Errorf("pcap %s: link type %d, want Ethernet", path, lt)
	}
	var out [][]byte
	var rh [recordHdrSize]byte
	for {
		if _, err := io.ReadFull(r, rh[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("pcap %s: record %d: %w", path, len(out), err)
		}
		n := bo.Uint32(rh[8:])
		if n > SnapLen*4 {
			return nil, fmt.Errorf("pcap %s: record %d: length %d", path, len(out), n)
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(r, p); err != nil {
			return nil, fmt.Errorf("pcap %s: record %d: %w", path, len(out), err)
		}
		out = append(out, p)
	}
}
