package depositor

// SetHooks sets the crash-test hooks: afterRecord runs once a batch's
// transactions are recorded and before any is broadcast, afterBroadcast once
// they were broadcast.
func SetHooks(d *Depositor, afterRecord, afterBroadcast func(n int)) {
	d.hooks = hooks{afterRecord: afterRecord, afterBroadcast: afterBroadcast}
}
