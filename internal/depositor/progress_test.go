package depositor

import "testing"

// blocksToGo is the sender's confirmation rule: a deposit in block b is
// confirmed once the head is b+n-1.
func TestBlocksToGo(t *testing.T) {
	for _, tc := range []struct{ block, head, n, want uint64 }{
		{0, 10, 3, 3},  // in no block yet
		{10, 10, 1, 0}, // one confirmation: the block itself
		{10, 10, 3, 2},
		{10, 11, 3, 1},
		{10, 12, 3, 0},
		{10, 20, 3, 0},
		{10, 9, 2, 2}, // a node whose head is behind the receipt's block
	} {
		if got := blocksToGo(tc.block, tc.head, tc.n); got != tc.want {
			t.Errorf("blocksToGo(%d, %d, %d) = %d, want %d", tc.block, tc.head, tc.n, got, tc.want)
		}
	}
}
