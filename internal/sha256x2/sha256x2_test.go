package sha256x2

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// pad returns msg padded to whole blocks (FIPS 180-4 §5.1.1).
func pad(msg []byte) []byte {
	p := append(bytes.Clone(msg), 0x80)
	for len(p)%64 != 56 {
		p = append(p, 0)
	}
	return binary.BigEndian.AppendUint64(p, uint64(len(msg))*8)
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func digest(h *[8]uint32) (d [32]byte) {
	for i, v := range h {
		binary.BigEndian.PutUint32(d[4*i:], v)
	}
	return d
}

func needAvailable(t testing.TB) {
	t.Helper()
	if !Available() {
		t.Skip("no SHA extensions on this machine")
	}
}

// Blocks over padded messages of every length up to several blocks gives
// crypto/sha256's digest.
func TestBlocksMatchesSHA256(t *testing.T) {
	needAvailable(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for n := range 300 {
		msg := randBytes(rng, n)
		h := IV
		Blocks(&h, pad(msg))
		if got, want := digest(&h), sha256.Sum256(msg); got != want {
			t.Fatalf("length %d: %x, want %x", n, got, want)
		}
	}
}

// Block2's two lanes are independent: each gives the digest of its own
// message, whatever the other lane holds, also when both are the same.
func TestBlock2MatchesSHA256(t *testing.T) {
	needAvailable(t)
	rng := rand.New(rand.NewPCG(3, 4))
	for n := range 500 {
		a, b := randBytes(rng, rng.IntN(56)), randBytes(rng, rng.IntN(56))
		if n%50 == 0 {
			b = bytes.Clone(a)
		}
		var pa, pb [64]byte
		copy(pa[:], pad(a))
		copy(pb[:], pad(b))
		ha, hb := IV, IV
		Block2(&ha, &hb, &pa, &pb)
		if digest(&ha) != sha256.Sum256(a) || digest(&hb) != sha256.Sum256(b) {
			t.Fatalf("case %d: lanes differ from crypto/sha256", n)
		}
	}
	// Chained: a two-block message per lane, the second block from the
	// first's state.
	a, b := bytes.Repeat([]byte{0xa5}, 100), bytes.Repeat([]byte{0x5a}, 70)
	pa, pb := pad(a), pad(b)
	ha, hb := IV, IV
	for i := 0; i < 128; i += 64 {
		Block2(&ha, &hb, (*[64]byte)(pa[i:i+64]), (*[64]byte)(pb[i:i+64]))
	}
	if digest(&ha) != sha256.Sum256(a) || digest(&hb) != sha256.Sum256(b) {
		t.Fatal("chained lanes differ from crypto/sha256")
	}
}

// Sum2 writes each lane's digest as bytes, leaves the states as they were,
// and may write into its own blocks.
func TestSum2(t *testing.T) {
	needAvailable(t)
	rng := rand.New(rand.NewPCG(7, 8))
	for n := range 200 {
		a, b := randBytes(rng, rng.IntN(56)), randBytes(rng, rng.IntN(56))
		var pa, pb [64]byte
		copy(pa[:], pad(a))
		copy(pb[:], pad(b))
		ha, hb := IV, IV
		var sa, sb [32]byte
		if n%2 == 0 {
			Sum2(&ha, &hb, &pa, &pb, &sa, &sb)
		} else { // into the blocks themselves
			Sum2(&ha, &hb, &pa, &pb, (*[32]byte)(pa[:32]), (*[32]byte)(pb[32:]))
			sa, sb = [32]byte(pa[:32]), [32]byte(pb[32:])
		}
		if sa != sha256.Sum256(a) || sb != sha256.Sum256(b) {
			t.Fatalf("case %d: lanes differ from crypto/sha256", n)
		}
		if ha != IV || hb != IV {
			t.Fatalf("case %d: Sum2 changed its states", n)
		}
	}
}

func TestBlocksRejectsPartialBlock(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic for 63 bytes")
		}
	}()
	h := IV
	Blocks(&h, make([]byte, 63))
}

// block_amd64.s is what gen.go writes.
func TestGeneratedAssemblyCurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the generator")
	}
	out := filepath.Join(t.TempDir(), "block_amd64.s")
	cmd := exec.Command("go", "run", "gen.go", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go run gen.go: %v\n%s", err, b)
	}
	want, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("block_amd64.s")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("block_amd64.s is not gen.go's output: run go generate ./internal/sha256x2")
	}
}

// BenchmarkBlock is one block on one digest: the latency of a compression.
func BenchmarkBlock(b *testing.B) {
	needAvailable(b)
	var blk [64]byte
	h := IV
	for b.Loop() {
		Blocks(&h, blk[:])
	}
}

// BenchmarkSum2 is Sum2: Block2 with the digests' bytes written out.
func BenchmarkSum2(b *testing.B) {
	needAvailable(b)
	var pa, pb [64]byte
	var sa, sb [32]byte
	ha, hb := IV, IV
	for b.Loop() {
		Sum2(&ha, &hb, &pa, &pb, &sa, &sb)
	}
}

// BenchmarkBlock2 is one block on each of two digests, interleaved.
func BenchmarkBlock2(b *testing.B) {
	needAvailable(b)
	var pa, pb [64]byte
	ha, hb := IV, IV
	for b.Loop() {
		Block2(&ha, &hb, &pa, &pb)
	}
}
