#include "textflag.h"

// func prefetchLines(addrs *uintptr, n int)
//
// PREFETCHT0 of each of the n addresses: a hint, never a fault, and unlike
// a load it retires at once, so the misses of a whole burst overlap. Four
// addresses per round, then the rest one by one.
TEXT ·prefetchLines(SB), NOSPLIT, $0-16
	MOVQ addrs+0(FP), SI
	MOVQ n+8(FP), CX
	CMPQ CX, $4
	JLT tail
four:
	MOVQ (SI), AX
	MOVQ 8(SI), BX
	MOVQ 16(SI), DX
	MOVQ 24(SI), DI
	PREFETCHT0 (AX)
	PREFETCHT0 (BX)
	PREFETCHT0 (DX)
	PREFETCHT0 (DI)
	ADDQ $32, SI
	SUBQ $4, CX
	CMPQ CX, $4
	JGE four
tail:
	TESTQ CX, CX
	JLE done
one:
	MOVQ (SI), AX
	PREFETCHT0 (AX)
	ADDQ $8, SI
	DECQ CX
	JNZ one
done:
	RET
