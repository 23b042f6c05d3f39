package store

import (
	"bytes"
	"context"
	"fmt"
	"sync"
)

// KeyLister is the part of a Store that ListPages reads.
type KeyLister interface {
	ListKeys(ctx context.Context, opts ListOptions, fn func(Key) error) error
}

// DefaultPage is the page size of ListPages for page <= 0: about 300 KB of
// keys.
const DefaultPage = 1000

// ListPages calls fn with the keys matching opts (After and Limit are
// ListPages' own), in pubkey order, page keys at a time. fn runs while the
// store holds nothing: no read transaction, no connection. So it may write
// to a slow network client without stopping anyone else, and memory stays
// bounded by one page. Each page is read consistently, the whole listing
// is not: a key that changes meanwhile is shown as its page saw it, never
// twice. fn must not keep the slice, which is reused for the next page.
func ListPages(ctx context.Context, s KeyLister, opts ListOptions, page int, fn func([]Key) error) error {
	if page <= 0 {
		page = DefaultPage
	}
	buf := getPage(page)
	defer putPage(buf)
	var after *Pubkey
	for {
		o := opts
		o.After, o.Limit = after, page
		buf = buf[:0]
		if err := s.ListKeys(ctx, o, func(k Key) error {
			buf = append(buf, k)
			return nil
		}); err != nil {
			return err
		}
		if len(buf) == 0 {
			return nil
		}
		// A store that ignored After or Limit would list forever.
		if len(buf) > page || (after != nil && bytes.Compare(buf[0].Pubkey[:], after[:]) <= 0) {
			return fmt.Errorf("list keys: the store ignored the page bounds (after %v, limit %d)", after, page)
		}
		if err := fn(buf); err != nil {
			return err
		}
		if len(buf) < page {
			return nil
		}
		last := buf[len(buf)-1].Pubkey
		after = &last
	}
}

// pagePool holds ListPages' page buffers for reuse: a listing read as
// many short ListPages (the JSON of /assignments, batch by batch) makes
// no new page of keys each time.
var pagePool sync.Pool

// getPage returns an empty page buffer of at least page keys.
func getPage(page int) []Key {
	if p, ok := pagePool.Get().(*[]Key); ok && cap(*p) >= page {
		return (*p)[:0]
	}
	return make([]Key, 0, page)
}

// putPage keeps buf for reuse, cleared so that it holds on to nothing.
func putPage(buf []Key) {
	buf = buf[:cap(buf)]
	clear(buf)
	pagePool.Put(&buf)
}
