package store

// Active keys (ClaimParams.RequireActive, serve --require-active): which
// keys a claim may hand out when only validators the beacon node reports
// active may go to pods. The rule is ReadyForDuties on the key's stored
// reading (RecordValidators); the bbolt backend calls it on each pool key,
// PostgreSQL's pkm_claim filters with the statuses listed here (passed to
// it as parameters, so the lists are written once), and the conformance
// suite (storetest) checks both agree.

// ActiveStatuses are the beacon API statuses of a validator that performs
// its duties and keeps doing so: active_ongoing. active_exiting is left
// out (its exit epoch is set: a pod would run it only until then), and so
// are slashed validators (active_slashed; Terminal retires them anyway).
var ActiveStatuses = []string{StatusActiveOngoing}

// ActivatingStatuses are the statuses of a deposited validator still
// waiting for its activation epoch.
var ActivatingStatuses = []string{StatusPendingInitialized, StatusPendingQueued}

// ReadyForDuties reports whether the reading v (nil: the key has none)
// says the validator is active: one of ActiveStatuses and not slashed. A
// key without a reading is not: the beacon node has not shown it yet.
func ReadyForDuties(v *ValidatorStatus) bool {
	if v == nil || v.Slashed {
		return false
	}
	for _, s := range ActiveStatuses {
		if v.Status == s {
			return true
		}
	}
	return false
}

// Activating reports whether a key whose reading is v (nil: none) may
// still become active: the beacon node does not know it yet (a confirmed
// deposit is invisible to it for hours: follow distance, deposit queue),
// or shows it pending activation. Keys that are neither ReadyForDuties nor
// Activating (active_exiting) will never be handed out under RequireActive.
func Activating(v *ValidatorStatus) bool {
	if v == nil {
		return true
	}
	if v.Slashed {
		return false
	}
	for _, s := range ActivatingStatuses {
		if v.Status == s {
			return true
		}
	}
	return false
}
