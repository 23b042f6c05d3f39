package keydir

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

const (
	// fileMode is the mode of every file Write creates: keystores are
	// encrypted secrets and password files are secrets.
	fileMode fs.FileMode = 0o600
	// dirMode is the mode of every directory Write creates.
	dirMode fs.FileMode = 0o700
	// tempPrefix starts the names of the temporary files of atomic writes.
	// It matches no layout pattern, and leftovers of a killed run are
	// removed by the next scan.
	tempPrefix = ".pkmanager-tmp-"
	// maxPasswordFile bounds the password files read back.
	maxPasswordFile = 4 << 10
)

// testFault, set only by tests, is called before each change to the
// output: op "rename" (a written temporary file about to replace path) or
// "remove". A non-nil error makes that change fail as an I/O error would.
var testFault func(op, path string) error

func fault(op, path string) error {
	if testFault == nil {
		return nil
	}
	return testFault(op, path)
}

// writeFileAtomic writes data to path with mode 0600: a temporary file in
// the same directory, fsync, rename over path, fsync of the directory. On
// error the temporary file is removed and path is unchanged. Errors name
// paths, never data.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, tempPrefix+"*")
	if err != nil {
		return fmt.Errorf("keydir: creating temporary file for %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err = f.Chmod(fileMode); err != nil {
		return fmt.Errorf("keydir: chmod %s: %w", tmp, err)
	}
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("keydir: writing %s: %w", tmp, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("keydir: fsync %s: %w", tmp, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("keydir: closing %s: %w", tmp, err)
	}
	if err = fault("rename", path); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("keydir: renaming into %s: %w", path, err)
	}
	return syncDir(dir)
}

// syncDir fsyncs a directory so that renames and removals in it are
// durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("keydir: opening directory %s: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	// Some file systems do not support fsync on directories.
	if err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOTSUP) {
		return fmt.Errorf("keydir: fsync directory %s: %w", dir, err)
	}
	return nil
}

// removeFile removes path and fsyncs its directory. It reports whether
// the file existed.
func removeFile(path string) (bool, error) {
	if err := fault("remove", path); err != nil {
		return false, err
	}
	if err := os.Remove(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return false, fmt.Errorf("keydir: removing %s: %w", path, err)
	}
	return true, syncDir(filepath.Dir(path))
}

// ensureDir creates dir and missing parents with mode 0700 and fsyncs the
// parent of dir when dir was created. Existing directories keep their mode.
func ensureDir(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case err == nil && fi.IsDir():
		return nil
	case err == nil:
		return fmt.Errorf("keydir: %s exists and is not a directory", dir)
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("keydir: %w", err)
	}
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("keydir: creating directory: %w", err)
	}
	return syncDir(filepath.Dir(dir))
}

// exists reports whether something (of any type) is at path.
func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("keydir: %w", err)
	}
}

// readRegular reads path if it is a regular file (not following a
// symbolic link) of at most limit bytes. ok is false, with a nil error,
// when path is missing, is not a regular file or is too large.
func readRegular(path string, limit int64) (data []byte, ok bool, err error) {
	fi, err := os.Lstat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("keydir: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Size() > limit {
		return nil, false, nil
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("keydir: %w", err)
	}
	defer f.Close()
	data, err = io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, false, fmt.Errorf("keydir: reading %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		clear(data)
		return nil, false, nil
	}
	return data, true, nil
}

// removeTemps removes leftover temporary files of atomic writes in dir and
// returns their paths.
func removeTemps(dir string, entries []os.DirEntry) ([]string, error) {
	var removed []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), tempPrefix) || !e.Type().IsRegular() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		ok, err := removeFile(p)
		if err != nil {
			return removed, err
		}
		if ok {
			removed = append(removed, p)
		}
	}
	return removed, nil
}

// readDir lists dir; a missing directory is empty.
func readDir(dir string) ([]os.DirEntry, error) {
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("keydir: %w", err)
	}
	return entries, nil
}
