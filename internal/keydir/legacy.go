package keydir

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
)

// legacyContainer and legacyKey are the unencrypted key file of the
// original Prysm pkmanager client (UnencryptedKeysContainer).
type (
	legacyContainer struct {
		Keys []legacyKey `json:"keys"`
	}
	legacyKey struct {
		ValidatorKey  []byte `json:"validator_key"`
		WithdrawalKey []byte `json:"withdrawal_key"`
	}
)

// WriteLegacyJSON writes keys UNENCRYPTED to path in the format of the
// original Prysm pkmanager client, for validator clients that still read
// it:
//
//	{"keys":[{"validator_key":"<base64>","withdrawal_key":"<base64>"}]}
//
// with each secret as standard base64 (Go's encoding of []byte), compact,
// without a trailing newline. As in the original client, withdrawal_key
// repeats the validator key: it is NOT the key behind the deposit's
// withdrawal credentials, and nothing should treat it as one.
//
// The file is written atomically with mode 0600; a missing parent
// directory is created with mode 0700. No stale-key handling applies: the
// file is replaced as a whole.
func WriteLegacyJSON(path string, keys []Key) error {
	if path == "" {
		return errors.New("keydir: legacy JSON path is empty")
	}
	if err := validateKeys(keys); err != nil {
		return err
	}
	c := legacyContainer{Keys: make([]legacyKey, len(keys))}
	for i, k := range keys {
		c.Keys[i] = legacyKey{ValidatorKey: k.Secret, WithdrawalKey: k.Secret}
	}
	data, err := json.Marshal(c)
	if err != nil {
		// Cannot happen for these types; the error would not quote values.
		return fmt.Errorf("keydir: encoding legacy JSON: %w", err)
	}
	defer clear(data)
	if err := ensureDir(filepath.Dir(path)); err != nil {
		return err
	}
	return writeFileAtomic(path, data)
}
