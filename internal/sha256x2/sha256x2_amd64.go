//go:build amd64 && !purego

package sha256x2

//go:generate go run gen.go block_amd64.s

// available: the SHA extensions (CPUID.7.0:EBX bit 29), and SSSE3 and
// SSE4.1 (CPUID.1:ECX bits 9 and 19) for the byte shuffles and blends.
var available = func() bool {
	maxLeaf, _, _, _ := cpuid(0, 0)
	if maxLeaf < 7 {
		return false
	}
	_, _, ecx1, _ := cpuid(1, 0)
	_, ebx7, _, _ := cpuid(7, 0)
	return ecx1&(1<<9) != 0 && ecx1&(1<<19) != 0 && ebx7&(1<<29) != 0
}()

func cpuid(leaf, subleaf uint32) (eax, ebx, ecx, edx uint32)

//go:noescape
func blocks(h *[8]uint32, p *byte, n int)

//go:noescape
func block2(ha, hb *[8]uint32, pa, pb *byte)

//go:noescape
func sum2(ha, hb *[8]uint32, pa, pb, sa, sb *byte)
