package authn

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// fileRecheck is how often a watched file is looked at again: rotated keys
// take effect within it, and a busy server stats the file at most this often.
const fileRecheck = time.Second

// watchedFile holds the parsed content of a file of credentials and re-reads
// it when its size or modification time changes (a mounted Secret is swapped
// through a symlink, which changes both). A file that is deleted or turns
// unreadable or invalid holds nothing from then on: removing or breaking a
// key file revokes its keys, it never leaves the last ones in force.
type watchedFile[T any] struct {
	path   string
	what   string
	parse  func([]byte) (T, error)
	logger *slog.Logger

	mu      sync.Mutex
	stamp   string
	checked time.Time
	val     T
}

// newWatchedFile reads and parses path once; failing that is an error.
func newWatchedFile[T any](path, what string, parse func([]byte) (T, error), logger *slog.Logger) (*watchedFile[T], error) {
	f := &watchedFile[T]{path: path, what: what, parse: parse, logger: logger}
	stamp := fileStamp(path)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if f.val, err = parse(b); err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	f.stamp, f.checked = stamp, time.Now()
	return f, nil
}

// get returns the current content, re-reading the file if it changed.
func (f *watchedFile[T]) get() T {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	if now.Sub(f.checked) < fileRecheck {
		return f.val
	}
	f.checked = now
	stamp := fileStamp(f.path)
	if stamp == f.stamp {
		return f.val
	}
	// Remember the stamp even when the content is bad, so a broken file is
	// reported once, not every second.
	f.stamp = stamp
	b, err := os.ReadFile(f.path)
	if err == nil {
		var v T
		if v, err = f.parse(b); err == nil {
			f.val = v
			f.logger.Info("reloaded "+f.what, "file", f.path)
			return f.val
		}
	}
	var zero T
	f.val = zero
	f.logger.Error("cannot reload "+f.what+"; every credential it held is refused until it is readable and valid again", "file", f.path, "err", err)
	return f.val
}

// fileStamp changes whenever the file's size or modification time does; it
// is empty for a file that cannot be read.
func fileStamp(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%d:%d", fi.Size(), fi.ModTime().UnixNano())
}
