package store

// Protection is a key's slashing-protection watermarks in EIP-3076's
// minimal form: the highest block slot and the highest attestation source
// and target epochs any of its holders signed. A validator client that
// imports them refuses to sign a block at or below the slot, or an
// attestation whose source or target is not above them (EIP-3076's
// conditions for the minimal form).
type Protection struct {
	HasBlock  bool
	BlockSlot uint64
	// HasAttestation: SourceEpoch and TargetEpoch are set.
	HasAttestation bool
	SourceEpoch    uint64
	TargetEpoch    uint64
}

// Merge returns the watermarks that cover both p and q: the highest of
// each (EIP-3076 merges interchanges by keeping every record; for the
// minimal form that is the maximum).
func (p Protection) Merge(q Protection) Protection {
	out := p
	if q.HasBlock && (!out.HasBlock || q.BlockSlot > out.BlockSlot) {
		out.HasBlock, out.BlockSlot = true, q.BlockSlot
	}
	if q.HasAttestation {
		if !out.HasAttestation {
			out.HasAttestation, out.SourceEpoch, out.TargetEpoch = true, q.SourceEpoch, q.TargetEpoch
		} else {
			out.SourceEpoch = max(out.SourceEpoch, q.SourceEpoch)
			out.TargetEpoch = max(out.TargetEpoch, q.TargetEpoch)
		}
	}
	return out
}

// Empty reports whether p holds no watermark.
func (p Protection) Empty() bool { return !p.HasBlock && !p.HasAttestation }
