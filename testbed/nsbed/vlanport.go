package nsbed

import (
	"encoding/binary"
	"fmt"
	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// 802.1Q on switch ports. The kernel of these machines has neither 802.1Q
// interfaces (CONFIG_VLAN_8021Q is off) nor bridge VLAN filtering, so a
// host cannot tag its frames and a bridge cannot keep VLANs apart. A
// switch port tags and untags instead, with two TCX programs of three
// instructions (bpf_skb_vlan_push, bpf_skb_vlan_pop). The bridge forwards
// by MAC and passes tags through: a Raw link (the appliance's DPDK port)
// is thereby a trunk, receiving each frame with the tag it carries and
// sending tagged frames on as they are.

// Access makes a switch port an 802.1Q access port (Link.Access).
type Access struct {
	VLAN int // VLAN ID, 1 to 4094
	PCP  int // priority code point of the tags it adds, 0 to 7
}

// tci is a's tag control information (DEI 0).
func (a Access) tci() uint16 { return uint16(a.PCP)<<13 | uint16(a.VLAN) }

// tcxNext is the TCX verdict that hands the packet on (to the stack when
// no other program follows).
const tcxNext = -1

// vlanProgram returns a TCX program that tags every frame with TPID 0x8100
// and tci, or, with tci 0, removes the outer tag of every tagged frame.
func vlanProgram(tci uint16) (*ebpf.Program, error) {
	// R1 holds the context (the skb) at entry and is the helpers' first
	// argument; the helpers' vlan_proto is big-endian.
	insns := asm.Instructions{
		asm.Mov.Imm(asm.R2, int32(binary.NativeEndian.Uint16([]byte{0x81, 0x00}))),
		asm.Mov.Imm(asm.R3, int32(tci)),
		asm.FnSkbVlanPush.Call(),
		asm.Mov.Imm(asm.R0, tcxNext),
		asm.Return(),
	}
	name := "nsbed_vlan_push"
	if tci == 0 {
		insns = asm.Instructions{asm.FnSkbVlanPop.Call(), asm.Mov.Imm(asm.R0, tcxNext), asm.Return()}
		name = "nsbed_vlan_pop"
	}
	return ebpf.NewProgram(&ebpf.ProgramSpec{Name: name, Type: ebpf.SchedCLS, Instructions: insns, License: "GPL"})
}

// portVLAN gives switch port port the 802.1Q behaviour l asks for: with
// l.Access it tags every frame from the host (TCX ingress); with l.Access
// or l.Untag it removes the tag of every frame to the host (TCX egress).
// The programs stay attached until the Bed closes.
func (n *Net) portVLAN(port string, l Link) error {
	if l.Access == nil && !l.Untag {
		return nil
	}
	if l.Access != nil && (l.Access.VLAN < 1 || l.Access.VLAN > 4094 || l.Access.PCP < 0 || l.Access.PCP > 7) {
		return fmt.Errorf("nsbed: switch port %s: access VLAN %d PCP %d: want 1-4094 and 0-7", port, l.Access.VLAN, l.Access.PCP)
	}
	return n.Switch.do(func() error {
		ifc, err := net.InterfaceByName(port)
		if err != nil {
			return err
		}
		attach := func(tci uint16, at ebpf.AttachType) error {
			prog, err := vlanProgram(tci)
			if err != nil {
				return fmt.Errorf("nsbed: VLAN program for %s: %w", port, err)
			}
			defer prog.Close() // the link holds it
			lk, err := link.AttachTCX(link.TCXOptions{Interface: ifc.Index, Program: prog, Attach: at})
			if err != nil {
				return fmt.Errorf("nsbed: attach VLAN program to %s: %w", port, err)
			}
			n.Bed.OnClose(func() { lk.Close() })
			return nil
		}
		if l.Access != nil {
			if err := attach(l.Access.tci(), ebpf.AttachTCXIngress); err != nil {
				return err
			}
		}
		return attach(0, ebpf.AttachTCXEgress)
	})
}
