// Package enum checks configuration values that name one of a few modes.
package enum

import (
	"fmt"
	"slices"
	"strings"
)

// OneOf returns nil when v is one of allowed, else an error naming them:
// `"x" is neither "a" nor "b"` for two, `"x" is not one of "a", "b", "c"`
// for more.
func OneOf[T ~string](v T, allowed ...T) error {
	if slices.Contains(allowed, v) {
		return nil
	}
	if len(allowed) == 2 {
		return fmt.Errorf("%q is neither %q nor %q", string(v), string(allowed[0]), string(allowed[1]))
	}
	quoted := make([]string, len(allowed))
	for i, a := range allowed {
		quoted[i] = fmt.Sprintf("%q", string(a))
	}
	return fmt.Errorf("%q is not one of %s", string(v), strings.Join(quoted, ", "))
}
