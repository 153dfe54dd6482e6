// Package pcap reads and writes classic libpcap capture files (Ethernet
// link type; microsecond timestamps written, nanosecond ones read too):
// enough for golden tests, the replay checker and the benchmark capture
// generator. Reader streams a capture of any size. It is not used on the
// fast path.
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

// Reader reads a pcap file one packet at a time, in memory bounded by the
// largest packet: for captures of any size.
type Reader struct {
	f    *os.File
	r    *bufio.Reader
	path string
	bo   binary.ByteOrder
	n    int // records read so far
	rh   [recordHdrSize]byte
	buf  []byte
}

// Open opens the pcap file at path and checks its global header (either
// byte order, microsecond or nanosecond timestamps, Ethernet link type).
func Open(path string) (*Reader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	r := &Reader{f: f, r: bufio.NewReaderSize(f, 1<<20), path: path, bo: binary.LittleEndian}
	var h [globalHdrSize]byte
	if _, err := io.ReadFull(r.r, h[:]); err != nil {
		f.Close()
		return nil, fmt.Errorf("pcap %s: header: %w", path, err)
	}
	switch binary.LittleEndian.Uint32(h[0:]) {
	case magicMicro, magicNano:
	default:
		r.bo = binary.BigEndian
		if m := r.bo.Uint32(h[0:]); m != magicMicro && m != magicNano {
			f.Close()
			return nil, fmt.Errorf("pcap %s: bad magic %#x", path, m)
		}
	}
	if lt := r.bo.Uint32(h[20:]); lt != linkEthernet {
		f.Close()
		return nil, fmt.Errorf("pcap %s: link type %d, want Ethernet", path, lt)
	}
	return r, nil
}

// Next returns the next packet. Its bytes are valid until the following
// call. After the last packet it returns io.EOF; a record cut short is an
// error.
func (r *Reader) Next() ([]byte, error) {
	if _, err := io.ReadFull(r.r, r.rh[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("pcap %s: record %d: %w", r.path, r.n, err)
	}
	n := r.bo.Uint32(r.rh[8:])
	if n > SnapLen*4 {
		return nil, fmt.Errorf("pcap %s: record %d: length %d", r.path, r.n, n)
	}
	if uint32(cap(r.buf)) < n {
		r.buf = make([]byte, n)
	}
	p := r.buf[:n]
	if _, err := io.ReadFull(r.r, p); err != nil {
		return nil, fmt.Errorf("pcap %s: record %d: %w", r.path, r.n, err)
	}
	r.n++
	return p, nil
}

// Close closes the file.
func (r *Reader) Close() error { return r.f.Close() }

// Count returns how many packets the pcap file at path holds, reading it
// once in bounded memory.
func Count(path string) (int, error) {
	r, err := Open(path)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	for {
		if _, err := r.Next(); err != nil {
			if err == io.EOF {
				return r.n, nil
			}
			return 0, err
		}
	}
}

// ReadFile returns every packet of the pcap file at path, all in memory
// (Reader streams instead).
func ReadFile(path string) ([][]byte, error) {
	r, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var out [][]byte
	for {
		p, err := r.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, append([]byte(nil), p...))
	}
}
