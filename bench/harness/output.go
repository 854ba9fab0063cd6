package harness

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Output file names under the results directory.
const (
	MarkdownFile = "latest.md"
	JSONFile     = "latest.json"
	SVGFile      = "latest.svg"
)

// WriteFiles writes the report as Markdown, JSON and SVG into dir. Each file
// is written beside its target and renamed, so readers never see half a file.
func WriteFiles(dir string, rep *Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("results: %w", err)
	}
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("results: %w", err)
	}
	for name, data := range map[string][]byte{
		MarkdownFile: []byte(rep.Markdown()),
		JSONFile:     append(js, '\n'),
		SVGFile:      []byte(rep.SVG()),
	} {
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			return fmt.Errorf("results: %w", err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("results: %w", err)
		}
	}
	return nil
}

// ReadReport reads a report written by WriteFiles, to render it again.
func ReadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read report: %w", err)
	}
	var rep Report
	if err := json.Unmarshal(b, &rep); err != nil {
		return nil, fmt.Errorf("read report %s: %w", path, err)
	}
	return &rep, nil
}
