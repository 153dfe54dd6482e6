package pipeline

import (
	"math/rand"
	"testing"

	"github.com/spaolacci/murmur3"
)

func TestFlowKeyHashIsMurmur3(t *testing.T) {
	if raceEnabled() {
		t.Skip("the murmur3 package trips the race detector (spaolacci/murmur3#34)")
	}
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 5000; i++ {
		k := FlowKey{Src: r.Uint32(), Dst: r.Uint32(), SrcPort: uint16(r.Uint32()), DstPort: uint16(r.Uint32()), Proto: uint8(r.Uint32())}
		seed := r.Uint32()
		b := k.Bytes()
		if got, want := k.Hash(seed), murmur3.Sum32WithSeed(b[:], seed); got != want {
			t.Fatalf("Hash(%+v, %#x) = %#x, want murmur3 %#x", k, seed, got, want)
		}
	}
}

func TestFlowKeyHashPinned(t *testing.T) {
	k := FlowKey{Src: 0xc6336407, Dst: 0xcb00710a, SrcPort: 40000, DstPort: 80, Proto: ProtoTCP}
	if got := k.Hash(0); got != 0xd764d357 {
		t.Errorf("Hash = %#x, want %#x: the flow hash MUST NOT change", got, uint32(0xd764d357))
	}
}

func TestFlowKey6HashIsMurmur3(t *testing.T) {
	if raceEnabled() {
		t.Skip("the murmur3 package trips the race detector (spaolacci/murmur3#34)")
	}
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 5000; i++ {
		var k FlowKey6
		r.Read(k.Src[:])
		r.Read(k.Dst[:])
		k.SrcPort, k.DstPort, k.Proto = uint16(r.Uint32()), uint16(r.Uint32()), uint8(r.Uint32())
		seed := r.Uint32()
		b := k.Bytes()
		if got, want := k.Hash(seed), murmur3.Sum32WithSeed(b[:], seed); got != want {
			t.Fatalf("Hash(%+v, %#x) = %#x, want murmur3 %#x", k, seed, got, want)
		}
	}
}

// TestFlowKey6HashPinned pins one IPv6 flow hash: appliances of an ECMP
// group place IPv6 flows by it.
func TestFlowKey6HashPinned(t *testing.T) {
	k := FlowKey6{
		Src:     [16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7},
		Dst:     [16]byte{0x20, 0x01, 0x0d, 0xb8, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10},
		SrcPort: 40000, DstPort: 443, Proto: ProtoTCP,
	}
	if got := k.Hash(0); got != 0x695b9d50 {
		t.Errorf("Hash = %#x, want %#x: the flow hash MUST NOT change", got, uint32(0x695b9d50))
	}
}
