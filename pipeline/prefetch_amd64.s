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

// func prefetchBuckets(fp *[32]fastPkt, mask uint32, base unsafe.Pointer, bmask uint32, both bool)
//
// PREFETCHT0 of the flow table bucket of each packet i in mask: the line
// at base + (fp[i].hash & bmask) * 128, and with both the one 96 bytes
// further (ways 2-3). fastPkt is 24 bytes with hash at 16 and a bucket
// 128 bytes (prefetch_amd64.go checks both at compile time).
TEXT ·prefetchBuckets(SB), NOSPLIT, $0-29
	MOVQ fp+0(FP), SI
	MOVL mask+8(FP), CX
	MOVQ base+16(FP), DI
	MOVL bmask+24(FP), R8
	MOVBLZX both+28(FP), R9
	TESTL CX, CX
	JZ done
	TESTL R9, R9
	JNZ two
	// mask = 2^n - 1 (packets 0 to n-1, the common case): walk fp
	// without searching for the next bit.
	LEAL 1(CX), AX
	TESTL AX, CX
	JNZ one
	BSRL CX, CX
	INCL CX // n
	TESTL $1, CX
	JZ pairs
	MOVL 16(SI), DX
	ANDL R8, DX
	SHLQ $7, DX
	PREFETCHT0 (DI)(DX*1)
	ADDQ $24, SI
	DECL CX
	JZ done
pairs: // two packets per round
	MOVL 16(SI), DX
	MOVL 40(SI), AX
	ANDL R8, DX
	ANDL R8, AX
	SHLQ $7, DX
	SHLQ $7, AX
	PREFETCHT0 (DI)(DX*1)
	PREFETCHT0 (DI)(AX*1)
	ADDQ $48, SI
	SUBL $2, CX
	JNZ pairs
	RET
one:
	BSFL CX, AX
	LEAQ (AX)(AX*2), AX
	MOVL 16(SI)(AX*8), DX
	ANDL R8, DX
	SHLQ $7, DX
	PREFETCHT0 (DI)(DX*1)
	LEAL -1(CX), AX
	ANDL AX, CX
	JNZ one
	RET
two:
	BSFL CX, AX
	LEAQ (AX)(AX*2), AX
	MOVL 16(SI)(AX*8), DX
	ANDL R8, DX
	SHLQ $7, DX
	PREFETCHT0 (DI)(DX*1)
	PREFETCHT0 96(DI)(DX*1)
	LEAL -1(CX), AX
	ANDL AX, CX
	JNZ two
done:
	RET
