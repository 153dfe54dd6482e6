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
