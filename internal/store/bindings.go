package store

// Binding names (Bind, Bindings, Snapshot.Bindings): the values a store is
// tied to on first use and the marks tools leave in it. The server, backup,
// restore and the importer read and write them by these names only.
const (
	// BindKEK is the ID of the key-encryption key the store's secrets are
	// sealed with (bound by the server and by import on first use; backup
	// and restore check it).
	BindKEK = "kek-id"
	// BindMnemonic is the fingerprint (hex public key at index 0) of the
	// mnemonic the server derives new keys from; the importer decides about
	// derivation indices by it.
	BindMnemonic = "mnemonic-fingerprint"
	// BindRestoredAt is the time (RFC 3339) a store was filled from a
	// snapshot by restore or migrate-store.
	BindRestoredAt = "restored-at"
	// BindRestoreReconciled is the time the pod watcher first found every
	// pod that holds keys in the restored store running as recorded; until
	// then the server warns that it runs on a restored snapshot.
	BindRestoreReconciled = "restore-reconciled"
	// BindDevGenesis fixes the dev chain's slashing-protection genesis time
	// (Unix seconds) when a dev server first opens the store.
	BindDevGenesis = "dev-slashing-genesis-time"
)
