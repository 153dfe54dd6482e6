#include "textflag.h"

// func prefetchLines(addrs *uintptr, n int)
//
// PREFETCHT0 of each of the n addresses: a hint, never a fault, and unlike
// a load it retires at once, so the misses of a whole burst overlap.
TEXT ·prefetchLines(SB), NOSPLIT, $0-16
	MOVQ addrs+0(FP), SI
	MOVQ n+8(FP), CX
	TESTQ CX, CX
	JLE done
loop:
	MOVQ (SI), AX
	PREFETCHT0 (AX)
	ADDQ $8, SI
	DECQ CX
	JNZ loop
done:
	RET
