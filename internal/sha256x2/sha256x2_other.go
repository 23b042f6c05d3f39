//go:build !amd64 || purego

package sha256x2

const available = false

func blocks(*[8]uint32, *byte, int) { panic("unreachable") }

func block2(*[8]uint32, *[8]uint32, *byte, *byte) { panic("unreachable") }

func sum2(*[8]uint32, *[8]uint32, *byte, *byte, *byte, *byte) { panic("unreachable") }
