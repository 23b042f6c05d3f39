package postgres

// StoreLockKey is the key of the store lock of schema.
func StoreLockKey(schema string) int64 { return storeLockKey(schema) }
