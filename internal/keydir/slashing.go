package keydir

import (
	"path/filepath"
)

// SlashingProtectionFile is the name of the slashing-protection
// interchange (EIP-3076) in an output directory, beside the layout's
// keystores, for the validator client to import before it starts.
const SlashingProtectionFile = "slashing_protection.json"

// WriteSlashingProtection makes outDir/slashing_protection.json hold data,
// written like keystores (mode 0600, a temporary file renamed over it,
// fsync of file and directory; outDir is created 0700 when missing), or,
// when data is empty, removes the file: an older history would name keys
// the pod may no longer hold, or miss what the server knows now. It
// returns the file's path and whether an existing file was removed.
func WriteSlashingProtection(outDir string, data []byte) (path string, removed bool, err error) {
	path = filepath.Join(outDir, SlashingProtectionFile)
	if len(data) == 0 {
		removed, err = removeFile(path)
		return path, removed, err
	}
	if err := ensureDir(outDir); err != nil {
		return path, false, err
	}
	return path, false, writeFileAtomic(path, data)
}
