package tenancy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"go.yaml.in/yaml/v3"
)

var (
	// ErrInvalidFile: a file could not be read or is not YAML. Its last good
	// content stays in force.
	ErrInvalidFile = errors.New("unusable MetricAccess file")
	// ErrInvalidDocument: one YAML document is not a well-formed MetricAccess;
	// it is ignored, the file's other documents apply.
	ErrInvalidDocument = errors.New("not a MetricAccess")
)

// debounce folds the burst of events an editor or a ConfigMap update makes
// into one re-read.
const debounce = 100 * time.Millisecond

// FileSource reads MetricAccess objects from YAML files (several documents per
// file allowed) and reads them again when they change.
type FileSource struct {
	globs    []string
	interval time.Duration
	logger   *slog.Logger

	// Owned by Run.
	files map[string]*fileState

	mu       sync.Mutex
	problems []Problem
}

type fileState struct {
	seen     [sha256.Size]byte // content last read, good or not
	current  bool              // objs and problems reflect seen
	good     [sha256.Size]byte // content objs come from
	objs     []*MetricAccess
	problems []Problem
	readErr  string
}

// NewFileSource returns a source reading the files matching globs, re-read on
// file system events and every interval (2s if interval is not positive).
// Bad globs are logged and skipped.
func NewFileSource(globs []string, interval time.Duration, logger *slog.Logger) *FileSource {
	if logger == nil {
		logger = slog.Default()
	}
	if interval <= 0 {
		interval = time.Duration(DefaultFileRefreshInterval)
	}
	s := &FileSource{interval: interval, logger: logger, files: map[string]*fileState{}}
	for _, g := range globs {
		if _, err := filepath.Match(g, ""); err != nil {
			logger.Error("ignoring bad MetricAccess file glob", "glob", g, "err", err)
			continue
		}
		s.globs = append(s.globs, g)
	}
	return s
}

// Problems returns the current problems of the files (not of the objects in
// them: the Registry reports those).
func (s *FileSource) Problems() []Problem {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.problems)
}

// Run reads the files, calls update with all their objects, and calls it again
// whenever the objects change, until ctx ends. Run a FileSource only once.
func (s *FileSource) Run(ctx context.Context, update func([]*MetricAccess)) {
	w, err := fsnotify.NewWatcher()
	var events <-chan fsnotify.Event
	var werrs <-chan error
	if err != nil {
		s.logger.Warn("file events unavailable, polling MetricAccess files only", "interval", s.interval, "err", err)
	} else {
		defer func() { _ = w.Close() }()
		events, werrs = w.Events, w.Errors
	}
	watched := map[string]bool{}

	var last [sha256.Size]byte
	first := true
	reload := func() {
		objs, digest, dirs := s.scan()
		if w != nil {
			for _, d := range dirs {
				if !watched[d] && w.Add(d) == nil {
					watched[d] = true
				}
			}
		}
		if first || digest != last {
			first, last = false, digest
			update(objs)
		}
	}
	reload()

	ticker := time.NewTicker(s.interval)
	defer ticker.Stop()
	timer := time.NewTimer(debounce)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			reload()
		case <-timer.C:
			reload()
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
				// fsnotify forgets a removed directory: add it again once it is back.
				delete(watched, filepath.Clean(ev.Name))
			}
			timer.Reset(debounce)
		case err, ok := <-werrs:
			if !ok {
				werrs = nil
				continue
			}
			s.logger.Warn("MetricAccess file events", "err", err)
		}
	}
}

// scan reads every matching file whose content changed and returns all
// objects, a digest of the contents they come from, and the directories to
// watch.
func (s *FileSource) scan() (objs []*MetricAccess, digest [sha256.Size]byte, dirs []string) {
	present := map[string]bool{}
	var paths []string
	for _, g := range s.globs {
		if d := filepath.Dir(g); !hasMeta(d) {
			dirs = append(dirs, filepath.Clean(d))
		}
		matches, _ := filepath.Glob(g) // the pattern was checked in NewFileSource
		for _, p := range matches {
			p = filepath.Clean(p)
			if present[p] {
				continue
			}
			if fi, err := os.Stat(p); err == nil && fi.IsDir() {
				continue
			}
			present[p] = true
			paths = append(paths, p)
			dirs = append(dirs, filepath.Dir(p))
		}
	}
	slices.Sort(paths)
	slices.Sort(dirs)
	dirs = slices.Compact(dirs)

	for p := range s.files {
		if !present[p] {
			delete(s.files, p)
			s.logger.Info("MetricAccess file gone, its objects removed", "file", p)
		}
	}

	h := sha256.New()
	var problems []Problem
	for _, p := range paths {
		st := s.read(p)
		if st == nil {
			continue
		}
		objs = append(objs, st.objs...)
		problems = append(problems, st.problems...)
		h.Write([]byte(p))
		h.Write([]byte{0})
		h.Write(st.good[:])
	}
	copy(digest[:], h.Sum(nil))

	s.mu.Lock()
	s.problems = problems
	s.mu.Unlock()
	return objs, digest, dirs
}

// read brings the state of one file up to date, logging what goes wrong once
// per change of the file. nil means the file has just disappeared.
func (s *FileSource) read(path string) *fileState {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if _, ok := s.files[path]; ok {
			delete(s.files, path)
			s.logger.Info("MetricAccess file gone, its objects removed", "file", path)
		}
		return nil
	}
	st := s.files[path]
	if st == nil {
		st = &fileState{}
		s.files[path] = st
	}
	if err != nil {
		if msg := err.Error(); msg != st.readErr {
			st.readErr = msg
			s.logger.Warn("cannot read MetricAccess file, keeping its last good content", "file", path, "err", err)
		}
		st.problems = []Problem{newProblem(path, "", ErrInvalidFile, err.Error())}
		st.current = false
		return st
	}
	st.readErr = ""
	sum := sha256.Sum256(data)
	if st.current && sum == st.seen {
		return st
	}
	st.seen, st.current = sum, true

	objs, problems, err := parseFile(path, data)
	if err != nil {
		s.logger.Warn("invalid MetricAccess file, keeping its last good content", "file", path, "err", err)
		st.problems = []Problem{newProblem(path, "", ErrInvalidFile, err.Error())}
		return st
	}
	for _, p := range problems {
		s.logger.Warn("ignoring YAML document", "file", path, "document", p.Object, "reason", p.Reason)
	}
	st.good, st.objs, st.problems = sum, objs, problems
	return st
}

// parseFile decodes every YAML document of a file. A document that is not a
// MetricAccess is a problem and is skipped; YAML that cannot be decoded at all
// makes the whole file an error.
func parseFile(path string, data []byte) ([]*MetricAccess, []Problem, error) {
	var objs []*MetricAccess
	var problems []Problem
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for i := 1; ; i++ {
		var doc any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return objs, problems, nil
		}
		if err != nil {
			return nil, nil, fmt.Errorf("document %d: %w", i, err)
		}
		if doc == nil {
			continue // empty document, e.g. after a trailing ---
		}
		obj, err := decodeDocument(doc)
		if err != nil {
			problems = append(problems, newProblem(fmt.Sprintf("%s#%d", path, i), "", ErrInvalidDocument, err.Error()))
			continue
		}
		objs = append(objs, obj)
	}
}

// decodeDocument goes through JSON so that the json tags of the type (the
// ones the Kubernetes API uses) apply. Unknown fields are refused: a
// misspelt labelSelectors would otherwise silently widen access.
func decodeDocument(doc any) (*MetricAccess, error) {
	doc, err := jsonCompatible(doc)
	if err != nil {
		return nil, err
	}
	js, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	var tm metav1.TypeMeta
	if err := json.Unmarshal(js, &tm); err != nil {
		return nil, err
	}
	if tm.APIVersion != APIVersion() || tm.Kind != Kind {
		return nil, fmt.Errorf("apiVersion %q, kind %q (want %q, %q)", tm.APIVersion, tm.Kind, APIVersion(), Kind)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	obj := &MetricAccess{}
	if err := dec.Decode(obj); err != nil {
		return nil, err
	}
	return obj, nil
}

// jsonCompatible turns the maps YAML may produce with non-string keys into
// maps encoding/json accepts.
func jsonCompatible(v any) (any, error) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			c, err := jsonCompatible(e)
			if err != nil {
				return nil, err
			}
			v[k] = c
		}
		return v, nil
	case map[any]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			ks, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("non-string key %v", k)
			}
			c, err := jsonCompatible(e)
			if err != nil {
				return nil, err
			}
			out[ks] = c
		}
		return out, nil
	case []any:
		for i, e := range v {
			c, err := jsonCompatible(e)
			if err != nil {
				return nil, err
			}
			v[i] = c
		}
		return v, nil
	default:
		return v, nil
	}
}

func hasMeta(path string) bool { return strings.ContainsAny(path, `*?[\`) }
