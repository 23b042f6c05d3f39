package bolt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/pkmanager/pkmanager/internal/store"
)

func TestRecordRoundTrip(t *testing.T) {
	for _, r := range []record{
		{state: store.StateAvailable, origin: store.OriginRandom, since: 1, coolingUntil: noTime, releasedAt: noTime, createdAt: 0},
		{
			state: store.StateAssigned, origin: store.OriginDerived, derivIndex: math.MaxUint32, hasDerivIndex: true,
			since: -5, coolingUntil: noTime, releasedAt: math.MaxInt64, createdAt: math.MinInt64 + 1,
			pod: "pod-a", podUID: "uid", lastPod: "pod-a", retiredReason: string(bytes.Repeat([]byte("r"), 300)),
		},
	} {
		got, err := decodeRecord(r.encode())
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Errorf("round trip: got %+v, want %+v", got, r)
		}
	}
}

func TestDecodeRecordRejectsCorruption(t *testing.T) {
	good := (&record{state: store.StateAssigned, origin: store.OriginRandom, pod: "p", lastPod: "p"}).encode()
	corrupt := map[string][]byte{
		"empty":          nil,
		"short":          good[:recordFixedLen-1],
		"version":        append([]byte{9}, good[1:]...),
		"state 0":        append(append([]byte{}, good[:1]...), append([]byte{0}, good[2:]...)...),
		"state 200":      append(append([]byte{}, good[:1]...), append([]byte{200}, good[2:]...)...),
		"cut string":     good[:len(good)-1],
		"trailing bytes": append(append([]byte{}, good...), 0),
	}
	for name, b := range corrupt {
		if _, err := decodeRecord(b); !errors.Is(err, errCorrupt) {
			t.Errorf("%s: decodeRecord error = %v, want errCorrupt", name, err)
		}
	}
}

func TestTimeEncoding(t *testing.T) {
	for _, tm := range []time.Time{
		{},
		time.Unix(0, 0),
		time.Date(1, 1, 1, 0, 0, 0, 1000, time.UTC),
		time.Date(1969, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
	} {
		got := fromMicros(micros(tm))
		if !got.Equal(tm.Truncate(time.Microsecond)) || got.IsZero() != tm.IsZero() {
			t.Errorf("%v came back as %v", tm, got)
		}
	}
	// Index order is time order, across the epoch.
	a, b := make([]byte, 8), make([]byte, 8)
	putSortable(a, -1)
	putSortable(b, 1)
	if bytes.Compare(a, b) >= 0 || getSortable(a) != -1 {
		t.Error("sortable encoding does not order -1 before 1")
	}
}

func TestAvailKeyOrder(t *testing.T) {
	pk := func(b byte) store.Pubkey { var p store.Pubkey; p[0] = b; return p }
	keys := [][]byte{
		availKey(pk(9), &record{releasedAt: -10, createdAt: 50}), // released before the epoch
		availKey(pk(1), &record{releasedAt: 5, createdAt: 1}),
		availKey(pk(2), &record{releasedAt: 5, createdAt: 1}),
		availKey(pk(0), &record{releasedAt: 5, createdAt: 2}),
		availKey(pk(0), &record{releasedAt: 6, createdAt: 0}),
		availKey(pk(5), &record{releasedAt: noTime, createdAt: -3}), // never released
		availKey(pk(4), &record{releasedAt: noTime, createdAt: 7}),
	}
	for i := 1; i < len(keys); i++ {
		if bytes.Compare(keys[i-1], keys[i]) >= 0 {
			t.Errorf("avail key %d does not sort before key %d", i-1, i)
		}
	}
}

func TestDepositRoundTrip(t *testing.T) {
	d := &store.DepositData{AmountGwei: 32e9, NetworkName: "hoodi", ForkVersion: [4]byte{1, 2, 3, 4}}
	d.Signature[95], d.WithdrawalCredentials[0], d.DepositMessageRoot[31], d.DepositDataRoot[7] = 1, 2, 3, 4
	var name string
	for _, network := range []string{"hoodi", "hoodi", "mainnet", ""} {
		d.NetworkName = network
		got, err := decodeDeposit(encodeDeposit(d), &name)
		if err != nil || *got != *d {
			t.Errorf("round trip of %+v: %+v, %v", d, got, err)
		}
	}
	if _, err := decodeDeposit(encodeDeposit(d)[:depositFixedLen-1], nil); !errors.Is(err, errCorrupt) {
		t.Errorf("short deposit: %v, want errCorrupt", err)
	}
}

// A damaged record is reported as corruption by every reader, never a panic.
func TestCorruptRecordIsReported(t *testing.T) {
	s := openTemp(t)
	pk := testPK(1)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := s.AddKeys(t.Context(), []store.NewKey{{Pubkey: pk, SealedSecret: []byte{1}, Origin: store.OriginRandom}}, store.StateAvailable, now); err != nil {
		t.Fatal(err)
	}
	err := s.db.Update(func(tx *bbolt.Tx) error {
		v := bytes.Clone(tx.Bucket(bucketKeys).Get(pk[:]))
		v[offState] = 0xee
		return tx.Bucket(bucketKeys).Put(pk[:], v)
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.GetKey(t.Context(), pk)
	if !errors.Is(err, errCorrupt) || !strings.Contains(err.Error(), s.Path()) {
		t.Errorf("GetKey = %v, want a corruption error naming the file", err)
	}
	for _, opts := range []store.ListOptions{{}, {States: []store.State{store.StateAssigned}}} {
		if err := s.ListKeys(t.Context(), opts, func(store.Key) error { return nil }); !errors.Is(err, errCorrupt) {
			t.Errorf("ListKeys(%+v) = %v, want a corruption error", opts, err)
		}
	}
	if _, err := s.Claim(t.Context(), store.ClaimParams{Pod: "p", Want: 1, Now: now}); !errors.Is(err, errCorrupt) {
		t.Errorf("Claim = %v, want a corruption error", err)
	}
}

func TestPodEntryRoundTrip(t *testing.T) {
	pk := func(b byte) store.Pubkey { var p store.Pubkey; p[0], p[47] = b, ^b; return p }
	for _, e := range []podEntry{
		{uid: "", keys: []store.Pubkey{pk(1)}, pending: []store.Pubkey{}},
		{uid: "0f1e2d3c-uid", keys: []store.Pubkey{}, pending: []store.Pubkey{pk(2), pk(3)}},
		{uid: "u", keys: []store.Pubkey{pk(1), pk(4)}, pending: []store.Pubkey{pk(2)}},
	} {
		got, err := decodePodEntry(e.encode())
		if err != nil || got.uid != e.uid || !slices.Equal(got.keys, e.keys) || !slices.Equal(got.pending, e.pending) {
			t.Errorf("round trip of %+v: %+v, %v", e, got, err)
		}
	}
	// Schema 1 entries: UID and assigned keys only.
	v1 := binary.AppendUvarint(nil, 3)
	v1 = append(v1, "uid"...)
	p1, p2 := pk(1), pk(2)
	v1 = append(append(v1, p1[:]...), p2[:]...)
	got, err := decodePodEntryV1(v1)
	if err != nil || got.uid != "uid" || !slices.Equal(got.keys, []store.Pubkey{p1, p2}) || len(got.pending) != 0 {
		t.Errorf("schema 1 entry: %+v, %v", got, err)
	}
	good := (&podEntry{uid: "u", keys: []store.Pubkey{p1}, pending: []store.Pubkey{p2}}).encode()
	for name, b := range map[string][]byte{
		"empty":              nil,
		"cut pubkey":         good[:len(good)-1],
		"too many assigned":  append(append([]byte{1, 'u', 3}, p1[:]...), p2[:]...),
		"uid past the end":   {9, 'u'},
		"no assigned length": {1, 'u'},
	} {
		if _, err := decodePodEntry(b); !errors.Is(err, errCorrupt) {
			t.Errorf("%s: decodePodEntry = %v, want errCorrupt", name, err)
		}
	}
}

func TestReservationRoundTrip(t *testing.T) {
	for _, r := range []reservation{
		{token: "t", count: 1, until: 0},
		{token: strings.Repeat("x", store.MaxTokenLength), count: math.MaxInt32, until: math.MinInt64 + 1},
		{token: "9f8e-\x00-tok", count: 300, until: micros(time.Date(2031, 5, 6, 7, 8, 9, 123456000, time.UTC))},
	} {
		got, err := decodeReservation(r.encode())
		if err != nil || *got != r {
			t.Errorf("round trip of %+v: %+v, %v", r, got, err)
		}
	}
	good := (&reservation{token: "tok", count: 2, until: 5}).encode()
	for name, b := range map[string][]byte{
		"empty":       nil,
		"version":     append([]byte{9}, good[1:]...),
		"no count":    good[:9],
		"no token":    good[:10],
		"count 0":     append(append(bytes.Clone(good[:9]), 0), "tok"...),
		"bad varint":  append(append(bytes.Clone(good[:9]), bytes.Repeat([]byte{0xff}, 11)...), "tok"...),
		"count > max": append(binary.AppendUvarint(bytes.Clone(good[:9]), math.MaxInt32+1), "tok"...),
	} {
		if _, err := decodeReservation(b); !errors.Is(err, errCorrupt) {
			t.Errorf("%s: decodeReservation = %v, want errCorrupt", name, err)
		}
	}
}

func TestTxRoundTrip(t *testing.T) {
	for _, tx := range []store.DepositTx{
		{Nonce: 0, Block: 0, RecordedAt: time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC)},
		{Nonce: math.MaxUint64, Hash: [32]byte{1, 31: 2}, Raw: bytes.Repeat([]byte{0xf8, 0}, 200), Block: math.MaxUint64,
			RecordedAt: time.Date(1, 1, 1, 0, 0, 0, 1000, time.UTC)},
	} {
		got, err := decodeTx(encodeTx(&tx))
		if err != nil || got.Nonce != tx.Nonce || got.Hash != tx.Hash || got.Block != tx.Block ||
			!got.RecordedAt.Equal(tx.RecordedAt) || !bytes.Equal(got.Raw, tx.Raw) {
			t.Errorf("round trip of %+v: %+v, %v", tx, got, err)
		}
	}
	for _, b := range [][]byte{nil, {txV1}, append([]byte{9}, make([]byte, txFixedLen)...)} {
		if _, err := decodeTx(b); !errors.Is(err, errCorrupt) {
			t.Errorf("decodeTx(%x) = %v, want errCorrupt", b, err)
		}
	}
}

func TestAuditRoundTrip(t *testing.T) {
	var pk store.Pubkey
	pk[0] = 0x99
	for _, e := range []store.AuditEvent{
		{Seq: 1, Time: time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC), Action: "x"},
		{Seq: math.MaxUint64, Time: time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC), Action: "release", Pod: "pod-a",
			PodUID: "uid", Pubkeys: []store.Pubkey{pk, {}}, Reason: "ünïcödé", Actor: "user:alice"},
	} {
		got, err := decodeAudit(seqKey(e.Seq), encodeAudit(&e))
		if err != nil || !got.Time.Equal(e.Time) {
			t.Errorf("round trip of %+v: %+v, %v", e, got, err)
			continue
		}
		got.Time = e.Time
		if !reflect.DeepEqual(got, e) {
			t.Errorf("round trip of %+v: %+v", e, got)
		}
	}
	good := encodeAudit(&store.AuditEvent{Time: time.Unix(0, 0), Action: "x", Pubkeys: []store.Pubkey{pk}})
	for name, b := range map[string][]byte{
		"empty":          nil,
		"version":        append([]byte{9}, good[1:]...),
		"cut":            good[:len(good)-1],
		"trailing bytes": append(bytes.Clone(good), 0),
		"many pubkeys":   append(bytes.Clone(good[:9]), 0xff, 0xff, 0x03),
	} {
		if _, err := decodeAudit(seqKey(1), b); !errors.Is(err, errCorrupt) {
			t.Errorf("%s: decodeAudit = %v, want errCorrupt", name, err)
		}
	}
	if _, err := decodeAudit([]byte{1}, good); !errors.Is(err, errCorrupt) {
		t.Errorf("short Seq key: %v, want errCorrupt", err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add((&record{state: store.StateRetired, origin: store.OriginImported, retiredReason: "x"}).encode())
	f.Add((&record{state: store.StateDepositFailed, origin: store.OriginRandom, retiredReason: "r"}).encode())
	f.Add(encodeDeposit(&store.DepositData{NetworkName: "hoodi"}))
	f.Add((&podEntry{uid: "u", keys: make([]store.Pubkey, 2), pending: make([]store.Pubkey, 1)}).encode())
	f.Add(encodeTx(&store.DepositTx{Nonce: 1, Raw: []byte{1, 2}}))
	f.Add((&reservation{token: "tok", count: 3, until: 17}).encode())
	f.Add(encodeAudit(&store.AuditEvent{Action: "release", Pubkeys: make([]store.Pubkey, 1), Reason: "r"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := decodeRecord(b); err == nil {
			if again, err := decodeRecord(r.encode()); err != nil || !reflect.DeepEqual(again, r) {
				t.Errorf("record does not survive re-encoding: %+v, %v", again, err)
			}
		}
		_, _ = decodeDeposit(b, nil)
		if e, err := decodePodEntry(b); err == nil {
			if again, err := decodePodEntry(e.encode()); err != nil || again.uid != e.uid ||
				!slices.Equal(again.keys, e.keys) || !slices.Equal(again.pending, e.pending) {
				t.Errorf("pod entry does not survive re-encoding: %+v, %v", again, err)
			}
		}
		_, _ = decodePodEntryV1(b)
		if r, err := decodeReservation(b); err == nil {
			if again, err := decodeReservation(r.encode()); err != nil || *again != *r {
				t.Errorf("reservation does not survive re-encoding: %+v, %v", again, err)
			}
		}
		if tx, err := decodeTx(b); err == nil {
			if again, err := decodeTx(encodeTx(tx)); err != nil || !reflect.DeepEqual(again, tx) {
				t.Errorf("deposit transaction does not survive re-encoding: %+v, %v", again, err)
			}
		}
		if e, err := decodeAudit(seqKey(7), b); err == nil {
			if again, err := decodeAudit(seqKey(7), encodeAudit(&e)); err != nil || !reflect.DeepEqual(again, e) {
				t.Errorf("audit event does not survive re-encoding: %+v, %v", again, err)
			}
		}
	})
}
